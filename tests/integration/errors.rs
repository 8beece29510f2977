//! Raw-HTTP negative paths: every error answers Matrix JSON with the right status, and a failed
//! request changes nothing.

use reqwest::Method;
use serde_json::json;

use crate::common::{PASSWORD, TestServer, errcode};

#[tokio::test]
async fn unknown_endpoint_wrong_method_and_discovery() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/_matrix/client/v3/nope", None).await;
    assert_eq!((status, errcode(&body)), (404, "M_UNRECOGNIZED"));
    let (status, body) = server.get("/_matrix/client/v3/register", None).await;
    assert_eq!((status, errcode(&body)), (405, "M_UNRECOGNIZED"));
    // Outside the Matrix prefixes, the Chat API's error shape.
    let (status, body) = server.get("/nope", None).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (status, body) = server.get("/signup", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (405, &json!("method_not_allowed"))
    );

    let (status, body) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    assert!(
        body["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "v1.11")
    );
    let (status, body) = server.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["m.homeserver"]["base_url"], server.base.as_str());
    let (status, body) = server.get("/.well-known/matrix/server", None).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = server.get("/health", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    let alice = server.register("alice").await;
    let (status, body) = server
        .get(
            "/_matrix/client/v3/capabilities",
            alice["access_token"].as_str(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["capabilities"]["m.change_password"]["enabled"], true);

    // CORS preflight as browsers send it.
    let resp = server
        .http
        .request(Method::OPTIONS, server.url("/_matrix/client/v3/login"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn bad_bodies() {
    let server = TestServer::start_with(|c| c.max_request_body_bytes = 4096).await;
    let resp = server
        .http
        .post(server.url("/_matrix/client/v3/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(errcode(&body), "M_NOT_JSON");

    let (status, body) = server
        .post("/_matrix/client/v3/login", None, json!({ "type": 42 }))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = server
        .post("/_matrix/client/v3/login", None, json!(["an", "array"]))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));

    let big = "x".repeat(10_000);
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": big }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (413, "M_TOO_LARGE"));
}

#[tokio::test]
async fn tokens_required_and_checked() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/_matrix/client/v3/account/whoami", None).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"));
    let (status, body) = server
        .get("/_matrix/client/v3/account/whoami", Some("not-a-token"))
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
    assert_eq!(body["soft_logout"], false);
    let (status, body) = server
        .get(
            "/_matrix/client/v3/devices",
            Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
        )
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
}

#[tokio::test]
async fn registration_validation() {
    let server = TestServer::start().await;
    let register = |username: &str, password: &str| {
        json!({
            "username": username,
            "password": password,
            "auth": { "type": "m.login.dummy" },
        })
    };
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            register("not valid!", PASSWORD),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_USERNAME"));
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            register("_reserved", PASSWORD),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_USERNAME"));
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            register("dave", "short"),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_WEAK_PASSWORD"));
    // The failed attempts created nothing.
    let (status, body) = server
        .get("/_matrix/client/v3/register/available?username=dave", None)
        .await;
    assert_eq!((status, body["available"].as_bool()), (200, Some(true)));

    // Without auth: the UIA challenge; then the dummy stage in that session.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "dave", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["flows"][0]["stages"][0], "m.login.dummy");
    let session = body["session"].as_str().unwrap().to_owned();
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({
                "username": "Dave",
                "password": PASSWORD,
                "auth": { "type": "m.login.dummy", "session": session },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@dave:localhost");

    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            register("dave", PASSWORD),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_USER_IN_USE"));
    let (status, body) = server
        .get("/_matrix/client/v3/register/available?username=dave", None)
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_USER_IN_USE"));
    let (status, body) = server
        .get("/_matrix/client/v3/register/available?username=a%20b", None)
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_USERNAME"));

    // inhibit_login: an account, no device.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({
                "username": "erin", "password": PASSWORD, "inhibit_login": true,
                "auth": { "type": "m.login.dummy" },
            }),
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.get("access_token").is_none());

    let (status, body) = server
        .post("/_matrix/client/v3/register?kind=guest", None, json!({}))
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_GUEST_ACCESS_FORBIDDEN"));
}

#[tokio::test]
async fn registration_modes() {
    let closed =
        TestServer::start_with(|c| c.registration = Some(roost::config::RegistrationMode::Closed))
            .await;
    let (status, body) = closed
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "x", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));

    let server =
        TestServer::start_with(|c| c.registration = Some(roost::config::RegistrationMode::Token))
            .await;
    let token = server
        .server
        .as_ref()
        .unwrap()
        .services()
        .regtokens
        .create(Some("invite-1".into()), Some(1), None)
        .unwrap();
    assert_eq!(token.token, "invite-1");
    let (status, body) = server
        .get(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=invite-1",
            None,
        )
        .await;
    assert_eq!((status, body["valid"].as_bool()), (200, Some(true)));
    let attempt = |name: &str, token: &str| {
        json!({
            "username": name, "password": PASSWORD,
            "auth": { "type": "m.login.registration_token", "token": token },
        })
    };
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "x", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, 401, "dummy is not offered: {body}");
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            attempt("frank", "wrong"),
        )
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNAUTHORIZED"));
    let (status, _) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            attempt("frank", "invite-1"),
        )
        .await;
    assert_eq!(status, 200);
    // One use only.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            attempt("gina", "invite-1"),
        )
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNAUTHORIZED"));
    let (_, body) = server
        .get(
            "/_matrix/client/v1/register/m.login.registration_token/validity?token=invite-1",
            None,
        )
        .await;
    assert_eq!(body["valid"], false);
}

#[tokio::test]
async fn profile_validation() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = alice["access_token"].as_str();
    server.register("bob").await;
    let put = |path: &'static str, body| server.call(Method::PUT, path, token, Some(body));

    let (status, body) = server
        .get("/_matrix/client/v3/profile/not-a-user-id", token)
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = server
        .get("/_matrix/client/v3/profile/@nobody:localhost", token)
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = put(
        "/_matrix/client/v3/profile/@bob:localhost/displayname",
        json!({ "displayname": "evil" }),
    )
    .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = put(
        "/_matrix/client/v3/profile/@alice:localhost/displayname",
        json!({ "displayname": "x".repeat(300) }),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = put(
        "/_matrix/client/v3/profile/@alice:localhost/avatar_url",
        json!({ "avatar_url": "https://not-mxc" }),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    // Nothing changed; profiles are readable without a token.
    let (_, body) = server
        .get("/_matrix/client/v3/profile/@alice:localhost", None)
        .await;
    assert_eq!(body, json!({ "displayname": "alice" }));
    let (status, body) = server
        .get(
            "/_matrix/client/v3/profile/@alice:localhost/avatar_url",
            None,
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.login_per_ip = roost::config::Bucket {
            per_second: 0.01,
            burst: 3,
        };
    })
    .await;
    server.register("alice").await;
    for _ in 0..3 {
        let (status, _) = server.login("alice", "wrong password").await;
        assert_eq!(status, 403);
    }
    let (status, body) = server.login("alice", PASSWORD).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"));
    assert!(body["retry_after_ms"].as_u64().unwrap() > 1000);
}

#[tokio::test]
async fn trusted_proxy_forwards_the_client_address() {
    let server = TestServer::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.rate_limits.enabled = true;
        c.rate_limits.login_per_ip = roost::config::Bucket {
            per_second: 0.01,
            burst: 2,
        };
    })
    .await;
    let alice = server.register("alice").await;
    let attempt = |client: &'static str| {
        server
            .http
            .post(server.url("/_matrix/client/v3/login"))
            .header("X-Forwarded-For", format!("{client}, 127.0.0.1"))
            .json(&json!({ "type": "m.login.password", "user": "alice", "password": "wrong" }))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(attempt("192.0.2.1").await.unwrap().status(), 403);
    }
    assert_eq!(attempt("192.0.2.1").await.unwrap().status(), 429);
    // Another client behind the same proxy has its own bucket.
    assert_eq!(attempt("192.0.2.2").await.unwrap().status(), 403);
    // The forwarded address is what devices record as last seen.
    let (_, devices) = server
        .get("/_matrix/client/v3/devices", alice["access_token"].as_str())
        .await;
    assert_eq!(devices["devices"][0]["last_seen_ip"], "127.0.0.1");
    let resp = server
        .http
        .get(server.url("/_matrix/client/v3/devices"))
        .bearer_auth(alice["access_token"].as_str().unwrap())
        .header("X-Forwarded-For", "198.51.100.7")
        .send()
        .await
        .unwrap();
    let devices: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(devices["devices"][0]["last_seen_ip"], "198.51.100.7");
}
