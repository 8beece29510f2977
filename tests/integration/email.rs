//! E-mail verification, login by e-mail and password reset, through a real SMTP server.

use serde_json::json;

use crate::common::{PASSWORD, SmtpServer, TestServer, errcode, link, link_param, token};

async fn start(smtp: &SmtpServer, require: bool) -> TestServer {
    TestServer::start_with(|c| {
        smtp.configure(c);
        c.registration_requires_email = require;
    })
    .await
}

/// Registers `name` with a verified address (following the link in the e-mail).
async fn register_with_email(server: &TestServer, smtp: &SmtpServer, name: &str, email: &str) {
    let secret = format!("secret-{name}");
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register/email/requestToken",
            None,
            json!({ "client_secret": secret, "email": email, "send_attempt": 1 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sid = body["sid"].as_str().unwrap().to_owned();
    let mail = smtp.wait_for_message(&email.to_lowercase(), 1).await;
    assert_eq!(link_param(&mail, "sid"), sid);
    let resp = reqwest::get(link(&mail)).await.unwrap();
    assert_eq!(resp.status(), 200);

    let (status, challenge) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": name, "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 401);
    let offered = challenge["flows"].as_array().unwrap();
    assert!(
        offered
            .iter()
            .any(|f| f["stages"] == json!(["m.login.email.identity"])),
        "{challenge}"
    );
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({
                "username": name, "password": PASSWORD,
                "auth": {
                    "type": "m.login.email.identity",
                    "session": challenge["session"],
                    "threepid_creds": { "sid": sid, "client_secret": secret },
                },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The same validation cannot register a second account.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({
                "username": format!("{name}2"), "password": PASSWORD,
                "auth": {
                    "type": "m.login.email.identity",
                    "threepid_creds": { "sid": sid, "client_secret": secret },
                },
            }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_THREEPID_AUTH_FAILED"));
}

#[tokio::test]
async fn sign_up_with_verified_email_then_log_in_by_email() {
    let smtp = SmtpServer::start().await;
    let server = start(&smtp, true).await;

    // Without a verified address, registration cannot complete.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({ "username": "x", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_eq!(status, 401, "{body}");

    register_with_email(&server, &smtp, "alice", "Alice@Example.org").await;
    let (status, body) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({
                "type": "m.login.password", "password": PASSWORD,
                "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "alice@example.org" },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:localhost");
    let (_, threepids) = server
        .get("/_matrix/client/v3/account/3pid", Some(&token(&body)))
        .await;
    assert_eq!(threepids["threepids"][0]["address"], "alice@example.org");

    // The link works once.
    let mail = smtp.wait_for_message("alice@example.org", 1).await;
    let resp = reqwest::get(link(&mail)).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(errcode(&body), "M_TOKEN_INCORRECT");
}

#[tokio::test]
async fn password_reset_by_email_without_revealing_addresses() {
    let smtp = SmtpServer::start().await;
    let server = start(&smtp, false).await;
    register_with_email(&server, &smtp, "bob", "bob@example.org").await;
    let (_, before) = server.login("bob", PASSWORD).await;

    // An unknown address gets the same answer, and no e-mail.
    let (status, unknown) = server
        .post(
            "/_matrix/client/v3/account/password/email/requestToken",
            None,
            json!({ "client_secret": "s1", "email": "nobody@example.org", "send_attempt": 1 }),
        )
        .await;
    assert_eq!(status, 200);
    assert!(unknown["sid"].is_string());
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/password/email/requestToken",
            None,
            json!({ "client_secret": "s2", "email": "bob@example.org", "send_attempt": 1 }),
        )
        .await;
    assert_eq!(status, 200);
    let sid = body["sid"].as_str().unwrap().to_owned();
    let mail = smtp.wait_for_message("bob@example.org", 2).await;
    assert!(mail.contains("Reset your password"), "{mail}");
    assert_eq!(smtp.count_for("nobody@example.org"), 0);

    // Submit the code the way a client with a code field would.
    let submit_url = body["submit_url"].as_str().unwrap();
    let code = link_param(&mail, "token");
    let wrong = reqwest::Client::new()
        .post(submit_url)
        .json(&json!({ "sid": sid, "client_secret": "s2", "token": "wrong" }))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    let ok = reqwest::Client::new()
        .post(submit_url)
        .json(&json!({ "sid": sid, "client_secret": "s2", "token": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/password",
            None,
            json!({
                "new_password": "a brand new password",
                "auth": {
                    "type": "m.login.email.identity",
                    "threepid_creds": { "sid": sid, "client_secret": "s2" },
                },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.login("bob", PASSWORD).await.0, 403);
    assert_eq!(server.login("bob", "a brand new password").await.0, 200);
    // Devices were logged out.
    let (status, _) = server
        .get("/_matrix/client/v3/account/whoami", Some(&token(&before)))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn add_an_address_to_an_account() {
    let smtp = SmtpServer::start().await;
    let server = start(&smtp, false).await;
    let carol = server.register("carol").await;
    let t = token(&carol);
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/3pid/email/requestToken",
            Some(&t),
            json!({ "client_secret": "c1", "email": "carol@example.org", "send_attempt": 1 }),
        )
        .await;
    assert_eq!(status, 200);
    let sid = body["sid"].clone();
    let mail = smtp.wait_for_message("carol@example.org", 1).await;
    assert_eq!(reqwest::get(link(&mail)).await.unwrap().status(), 200);
    let (status, body) = server
        .post(
            "/_matrix/client/v3/account/3pid/add",
            Some(&t),
            json!({
                "client_secret": "c1", "sid": sid,
                "auth": { "type": "m.login.password", "user": "carol", "password": PASSWORD },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = server
        .get("/_matrix/client/v3/account/3pid", Some(&t))
        .await;
    assert_eq!(list["threepids"][0]["address"], "carol@example.org");
    let (status, _) = server
        .post(
            "/_matrix/client/v3/account/3pid/delete",
            Some(&t),
            json!({ "medium": "email", "address": "carol@example.org" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, list) = server
        .get("/_matrix/client/v3/account/3pid", Some(&t))
        .await;
    assert_eq!(list["threepids"].as_array().unwrap().len(), 0);
}
