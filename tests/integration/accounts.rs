//! Password change, deactivation, device management with user-interactive auth.

use reqwest::Method;
use serde_json::json;

use crate::common::{PASSWORD, TestServer, errcode, token};

#[tokio::test]
async fn password_change_logs_out_other_devices() {
    let server = TestServer::start().await;
    let first = server.register("alice").await;
    let (_, second) = server.login("alice", PASSWORD).await;
    let (t1, t2) = (token(&first), token(&second));

    // Wrong password in the UIA stage: 401 with the stage error, nothing changes.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/password",
            Some(&t1),
            json!({ "new_password": "new password 1" }),
        )
        .await;
    assert_eq!(status, 401);
    let session = body["session"].as_str().unwrap().to_owned();
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/password",
            Some(&t1),
            json!({
                "new_password": "new password 1",
                "auth": {
                    "type": "m.login.password", "session": session,
                    "identifier": { "type": "m.id.user", "user": "alice" },
                    "password": "wrong",
                },
            }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_FORBIDDEN"));
    assert_eq!(server.login("alice", PASSWORD).await.0, 200);

    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/password",
            Some(&t1),
            json!({
                "new_password": "new password 1",
                "auth": {
                    "type": "m.login.password", "session": session,
                    "identifier": { "type": "m.id.user", "user": "@alice:localhost" },
                    "password": PASSWORD,
                },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(&t1))
            .await
            .0,
        200
    );
    let (status, body) = server
        .get("/_matrix/client/v3/account/whoami", Some(&t2))
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
    assert_eq!(server.login("alice", PASSWORD).await.0, 403);
    assert_eq!(server.login("alice", "new password 1").await.0, 200);
}

#[tokio::test]
async fn deactivation_is_final() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let t = token(&alice);
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&t),
            json!({ "auth": { "type": "m.login.password", "user": "alice", "password": PASSWORD } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .get("/_matrix/client/v3/account/whoami", Some(&t))
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"));
    let (status, body) = server.login("alice", PASSWORD).await;
    assert_eq!((status, errcode(&body)), (403, "M_USER_DEACTIVATED"));
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_USER_IN_USE"));
}

#[tokio::test]
async fn devices_rename_and_delete() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let t = token(&alice);
    let (_, other) = server.login("alice", PASSWORD).await;
    let other_device = other["device_id"].as_str().unwrap().to_owned();
    let (_, third) = server.login("alice", PASSWORD).await;

    let path = format!("/_matrix/client/v3/devices/{other_device}");
    let (status, _) = server
        .call(
            Method::PUT,
            &path,
            Some(&t),
            Some(json!({ "display_name": "tablet" })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server.get(&path, Some(&t)).await;
    assert_eq!(
        (status, body["display_name"].as_str()),
        (200, Some("tablet"))
    );
    let (status, body) = server
        .call(
            Method::PUT,
            "/_matrix/client/v3/devices/NOPE",
            Some(&t),
            Some(json!({ "display_name": "x" })),
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));

    // Delete needs the password.
    let (status, body) = server.call(Method::DELETE, &path, Some(&t), None).await;
    assert_eq!(status, 401);
    assert_eq!(body["flows"][0]["stages"][0], "m.login.password");
    let auth = json!({ "auth": {
        "type": "m.login.password", "session": body["session"],
        "identifier": { "type": "m.id.user", "user": "alice" }, "password": PASSWORD,
    }});
    let (status, _) = server
        .call(Method::DELETE, &path, Some(&t), Some(auth))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(&token(&other)))
            .await
            .0,
        401
    );
    assert_eq!(server.get(&path, Some(&t)).await.0, 404);

    let (status, body) = server
        .post(
            "/_matrix/client/v3/delete_devices",
            Some(&t),
            json!({
                "devices": [third["device_id"]],
                "auth": { "type": "m.login.password", "user": "alice", "password": PASSWORD },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(&token(&third)))
            .await
            .0,
        401
    );
    let (_, body) = server.get("/_matrix/client/v3/devices", Some(&t)).await;
    assert_eq!(body["devices"].as_array().unwrap().len(), 1);

    // Logging in again with an existing device ID replaces that device's session.
    let (status, again) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({
                "type": "m.login.password", "user": "alice", "password": PASSWORD,
                "device_id": alice["device_id"],
            }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["device_id"], alice["device_id"]);
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(&t))
            .await
            .0,
        401
    );
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(&token(&again)))
            .await
            .0,
        200
    );

    // logout/all ends every session.
    let (status, _) = server
        .post(
            "/_matrix/client/v3/logout/all",
            Some(&token(&again)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        server
            .get("/_matrix/client/v3/account/whoami", Some(&token(&again)))
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn graceful_shutdown_releases_the_store() {
    let mut server = TestServer::start().await;
    server.register("alice").await;
    server.stop().await;
    let config = crate::common::test_config(server.data.path().to_path_buf());
    let again = roost::start(config)
        .await
        .expect("restart on the same data");
    let (status, body) = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/login", again.base_url()))
        .json(&json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD }))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 200, "{:?}", body.text().await);
    again.shutdown().await.unwrap();
}
