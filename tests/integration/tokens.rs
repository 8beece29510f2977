//! JWT access tokens: forged and expired tokens, refresh rotation, immediate revocation.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestServer, errcode, token};

const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";

fn claims_of(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn forged_and_expired_tokens_are_refused() {
    let server = TestServer::start_with(|c| c.auth.jwt_secret = Some(SECRET.into())).await;
    let alice = server.register("alice").await;
    let real = token(&alice);
    let claims = claims_of(&real);
    assert_eq!(claims["sub"], "@alice:localhost");
    let whoami = "/_matrix/client/v3/account/whoami";

    // Same claims, another key.
    let forged = sign(&claims, "some-other-secret-of-enough-length-000000000");
    let (status, body) = server.get(whoami, Some(&forged)).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));

    // Right key, but someone else's identity on this session.
    let mut other = claims.clone();
    other["sub"] = json!("@bob:localhost");
    let (status, body) = server.get(whoami, Some(&sign(&other, SECRET))).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));

    // Right key, expired: soft logout, since the session lives on.
    let mut expired = claims.clone();
    expired["exp"] = json!(1_000_000);
    let (status, body) = server.get(whoami, Some(&sign(&expired, SECRET))).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
    assert_eq!(body["soft_logout"], true);

    // Tampered payload with the original signature.
    let mut parts: Vec<&str> = real.split('.').collect();
    use base64::Engine;
    let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&other).unwrap());
    parts[1] = &evil;
    let (status, _) = server.get(whoami, Some(&parts.join("."))).await;
    assert_eq!(status, 401);

    assert_eq!(server.get(whoami, Some(&real)).await.0, 200);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_are_single_use() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let (status, login) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({
                "type": "m.login.password", "password": PASSWORD, "refresh_token": true,
                "identifier": { "type": "m.id.user", "user": "alice" },
            }),
        )
        .await;
    assert_eq!(status, 200);
    assert!(login["expires_in_ms"].as_u64().unwrap() > 0);
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    assert!(claims_of(&token(&login))["exp"].is_u64());

    let (status, refreshed) = server
        .post(
            "/_matrix/client/v3/refresh",
            None,
            json!({ "refresh_token": refresh }),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let new_access = token(&refreshed);
    assert_ne!(refreshed["refresh_token"].as_str().unwrap(), refresh);
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(&new_access))
            .await
            .0,
        200
    );

    // The old refresh token is spent.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/refresh",
            None,
            json!({ "refresh_token": refresh }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
    let (status, body) = server
        .post(
            "/_matrix/client/v3/refresh",
            None,
            json!({ "refresh_token": "roost_rt_x_y" }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));

    // Logout revokes the session: its tokens and its refresh token.
    let next = refreshed["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .post("/_matrix/client/v3/logout", Some(&new_access), json!({}))
            .await
            .0,
        200
    );
    let (status, _) = server
        .post(
            "/_matrix/client/v3/refresh",
            None,
            json!({ "refresh_token": next }),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(&new_access))
            .await
            .0,
        401
    );
}
