//! Two-factor login with TOTP: enrolment, the second step, replay, recovery codes, brute force.

use serde_json::{Value, json};
use totp_rs::{Algorithm, Builder, Secret};

use crate::common::{PASSWORD, TestServer, errcode, token};

const TOTP: &str = "/_matrix/client/unstable/org.roost.mfa/totp";

/// The TOTP code of `secret` at now + `offset_secs`.
pub(crate) fn code_at(secret: &str, offset_secs: i64) -> String {
    let totp = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    totp.generate((now + offset_secs) as u64).to_string()
}

/// Enrols `user`; returns (secret, recovery codes).
async fn enrol(server: &TestServer, access: &str) -> (String, Vec<String>) {
    let (status, body) = server.post(TOTP, Some(access), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    let uri = body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Roost:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")));
    // Not enabled until confirmed with a valid code.
    let (status, _) = server
        .post(
            &format!("{TOTP}/confirm"),
            Some(access),
            json!({ "code": "000000" }),
        )
        .await;
    assert_eq!(status, 403);
    let (_, state) = server.get(TOTP, Some(access)).await;
    assert_eq!(state["enabled"], false);
    let (status, body) = server
        .post(
            &format!("{TOTP}/confirm"),
            Some(access),
            json!({ "code": code_at(&secret, 0) }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

async fn second_step(server: &TestServer, session: &Value, code: &str) -> (u16, Value) {
    server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "org.roost.login.totp", "session": session, "code": code }),
        )
        .await
}

#[tokio::test]
async fn totp_login_flow() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (secret, recovery) = enrol(&server, &token(&alice)).await;

    // The password alone no longer logs in.
    let (status, challenge) = server.login("alice", PASSWORD).await;
    assert_eq!(
        (status, errcode(&challenge)),
        (401, "ORG.ROOST.TOTP_REQUIRED")
    );
    assert!(challenge.get("access_token").is_none());
    let session = challenge["session"].clone();
    // A wrong password never reaches the second factor.
    assert_eq!(server.login("alice", "wrong password").await.0, 403);

    let (status, body) = second_step(&server, &session, "123456").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    // The code of the next step (within the allowed skew) logs in.
    let next = code_at(&secret, 30);
    let (status, body) = second_step(&server, &session, &next).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(&token(&body)))
            .await
            .0,
        200
    );

    // The same code cannot be used again, not even in a new challenge.
    let (_, challenge) = server.login("alice", PASSWORD).await;
    let (status, _) = second_step(&server, &challenge["session"], &next).await;
    assert_eq!(status, 403);
    // The spent session is gone.
    let (status, _) = second_step(&server, &session, &code_at(&secret, 0)).await;
    assert_eq!(status, 403);

    // A recovery code works once.
    let (status, body) = second_step(&server, &challenge["session"], &recovery[0]).await;
    assert_eq!(status, 200, "{body}");
    let (_, challenge) = server.login("alice", PASSWORD).await;
    let (status, _) = second_step(&server, &challenge["session"], &recovery[0]).await;
    assert_eq!(status, 403);

    // One-step form: the code along with the password.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({
                "type": "m.login.password", "user": "alice", "password": PASSWORD,
                "org.roost.totp_code": recovery[1],
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let access = token(&body);

    // Disabling needs the password and a code.
    let (status, _) = server
        .call(
            reqwest::Method::DELETE,
            TOTP,
            Some(&access),
            Some(json!({ "password": "wrong", "code": recovery[2] })),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .call(
            reqwest::Method::DELETE,
            TOTP,
            Some(&access),
            Some(json!({ "password": PASSWORD, "code": recovery[2] })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.login("alice", PASSWORD).await.0, 200);
}

#[tokio::test]
async fn brute_force_hits_the_limit() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.totp_per_account = roost::config::Bucket {
            per_second: 0.01,
            burst: 4,
        };
    })
    .await;
    let bob = server.register("bob").await;
    let (secret, _) = enrol(&server, &token(&bob)).await;
    let (_, challenge) = server.login("bob", PASSWORD).await;
    let session = challenge["session"].clone();
    // Enrolment took two attempts from the bucket (a wrong and a right code); two wrong
    // guesses empty it, and then even the right code is refused.
    for guess in ["000001", "000002"] {
        let (status, _) = second_step(&server, &session, guess).await;
        assert_eq!(status, 403);
    }
    let (status, body) = second_step(&server, &session, &code_at(&secret, 30)).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"));
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn sensitive_operations_ask_for_a_code_too() {
    let server = TestServer::start().await;
    let carol = server.register("carol").await;
    let access = token(&carol);
    let (_, recovery) = enrol(&server, &access).await;
    let (_, other) = {
        let (_, challenge) = server.login("carol", PASSWORD).await;
        second_step(&server, &challenge["session"], &recovery[0]).await
    };
    let path = format!(
        "/_matrix/client/v3/devices/{}",
        other["device_id"].as_str().unwrap()
    );
    let (status, body) = server
        .call(reqwest::Method::DELETE, &path, Some(&access), None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        body["flows"][0]["stages"],
        json!(["m.login.password", "org.roost.login.totp"])
    );
    let session = body["session"].clone();
    let password = json!({ "auth": {
        "type": "m.login.password", "session": session, "user": "carol", "password": PASSWORD,
    }});
    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            &path,
            Some(&access),
            Some(password),
        )
        .await;
    assert_eq!(status, 401, "the password alone is not enough: {body}");
    assert_eq!(body["completed"], json!(["m.login.password"]));
    let wrong =
        json!({ "auth": { "type": "org.roost.login.totp", "session": session, "code": "000000" } });
    let (status, body) = server
        .call(reqwest::Method::DELETE, &path, Some(&access), Some(wrong))
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_FORBIDDEN"));
    let code = json!({ "auth": { "type": "org.roost.login.totp", "session": session, "code": recovery[1] } });
    let (status, body) = server
        .call(reqwest::Method::DELETE, &path, Some(&access), Some(code))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get(&path, Some(&access)).await.0, 404);
}
