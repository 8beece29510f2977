//! Chat API accounts: sign-up (with and without a verified e-mail address), login (by username,
//! user ID and e-mail; with TOTP), token refresh, logout, profile, other users' profiles,
//! password reset by e-mail, blocking, uptime, and 401 without a token.

use reqwest::Method;
use serde_json::{Value, json};

use crate::chat_common::{ChatUser, call, code, delete, enc, get, post, put, signup};
use crate::common::{PASSWORD, SmtpServer, TestServer, link, link_param};
use crate::totp::code_at;

/// A request without a token.
async fn anonymous(server: &TestServer, method: Method, path: &str, body: Value) -> (u16, Value) {
    call(server, method, path, None, Some(body)).await
}

async fn login(server: &TestServer, login: &str, password: &str) -> (u16, Value) {
    anonymous(
        server,
        Method::POST,
        "/login",
        json!({ "login": login, "password": password }),
    )
    .await
}

fn assert_tokens(body: &Value, user_id: &str) {
    assert_eq!(body["user_id"], user_id, "{body}");
    assert_eq!(
        Some(body["username"].as_str().unwrap()),
        user_id.strip_prefix('@').and_then(|u| u.split(':').next())
    );
    for field in ["device_id", "access_token", "refresh_token"] {
        assert!(
            body[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}: {body}"
        );
    }
    assert!(body["expires_in_ms"].as_u64().is_some_and(|ms| ms > 0));
}

/// Signs up with the given fields (no e-mail verification); returns (status, body).
async fn try_signup(server: &TestServer, body: Value) -> (u16, Value) {
    anonymous(server, Method::POST, "/signup", body).await
}

/// The code of a password-reset e-mail (the line `Code: ...`).
fn reset_code(mail: &str) -> String {
    mail.lines()
        .find_map(|l| l.trim().strip_prefix("Code: "))
        .expect("a code in the e-mail")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn chat_signup_validates_and_logs_in() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    assert_eq!(alice.user_id, "@alice:localhost");

    let (status, body) = try_signup(
        &server,
        json!({
            "username": "Bob", "email": "Bob@Example.org", "password": PASSWORD,
            "display_name": "Bob B.", "device_name": "Bob's phone",
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_tokens(&body, "@bob:localhost");
    assert_eq!(body["email"], "bob@example.org");
    assert_eq!(body["email_verified"], false);
    let bob_token = body["access_token"].as_str().unwrap().to_owned();
    let (status, profile) = get(&server, "/profile", &bob_token).await;
    assert_eq!(status, 200);
    assert_eq!(profile["display_name"], "Bob B.");
    assert_eq!(profile["email"], "bob@example.org");
    assert_eq!(profile["email_verified"], false);
    // The device is a Matrix device with the name given.
    let device_path = format!(
        "/_matrix/client/v3/devices/{}",
        body["device_id"].as_str().unwrap()
    );
    let (status, device) = server.get(&device_path, Some(&bob_token)).await;
    assert_eq!(
        (status, device["display_name"].as_str()),
        (200, Some("Bob's phone"))
    );
    // Without a display name, the username is the display name.
    let (_, profile) = get(&server, "/profile", &alice.token).await;
    assert_eq!(profile["display_name"], "alice");

    let fields = |username: &str, email: &str, password: &str| json!({ "username": username, "email": email, "password": password });
    // Taken username (in any case), taken address.
    let (status, body) = try_signup(&server, fields("ALICE", "other@example.org", PASSWORD)).await;
    assert_eq!((status, code(&body)), (409, "username_taken"), "{body}");
    let (status, body) = try_signup(&server, fields("carol", "ALICE@example.org", PASSWORD)).await;
    assert_eq!((status, code(&body)), (409, "email_taken"), "{body}");
    // Bad e-mail addresses, weak passwords, bad usernames, bad display names.
    for email in ["not an address", "a@", "", "@example.org"] {
        let (status, body) = try_signup(&server, fields("carol", email, PASSWORD)).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_request"),
            "{email}: {body}"
        );
    }
    for password in ["short", ""] {
        let (status, body) =
            try_signup(&server, fields("carol", "carol@example.org", password)).await;
        assert_eq!((status, code(&body)), (400, "weak_password"), "{body}");
    }
    let long = "x".repeat(300);
    for username in ["bad name", "_reserved", "é", "", "a:b", long.as_str()] {
        let (status, body) =
            try_signup(&server, fields(username, "carol@example.org", PASSWORD)).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_username"),
            "{username}: {body}"
        );
    }
    for display_name in [json!(""), json!("x".repeat(257)), json!("a\nb"), json!(5)] {
        let mut body = fields("carol", "carol@example.org", PASSWORD);
        body["display_name"] = display_name;
        let (status, body) = try_signup(&server, body).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    }
    // Missing fields and wrong types.
    for body in [
        json!({ "username": "carol", "password": PASSWORD }),
        json!({ "username": "carol", "email": "carol@example.org" }),
        json!({ "username": 7, "email": "carol@example.org", "password": PASSWORD }),
    ] {
        let (status, answer) = try_signup(&server, body).await;
        assert_eq!(
            (status, code(&answer)),
            (400, "invalid_request"),
            "{answer}"
        );
    }
    // Nothing of the refused attempts was created.
    let (status, body) = login(&server, "carol", PASSWORD).await;
    assert_eq!((status, code(&body)), (401, "invalid_credentials"));
}

#[tokio::test]
async fn chat_signup_respects_the_registration_mode() {
    let closed =
        TestServer::start_with(|c| c.registration = Some(roost::config::RegistrationMode::Closed))
            .await;
    let (status, body) = try_signup(
        &closed,
        json!({ "username": "alice", "email": "alice@example.org", "password": PASSWORD }),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (403, "registration_closed"),
        "{body}"
    );

    let server =
        TestServer::start_with(|c| c.registration = Some(roost::config::RegistrationMode::Token))
            .await;
    server
        .server
        .as_ref()
        .unwrap()
        .services()
        .regtokens
        .create(Some("invite-1".into()), Some(1), None)
        .unwrap();
    let attempt = |name: &str, token: Option<&str>| {
        let mut body = json!({ "username": name, "email": format!("{name}@example.org"), "password": PASSWORD });
        if let Some(token) = token {
            body["registration_token"] = json!(token);
        }
        body
    };
    let (status, body) = try_signup(&server, attempt("alice", None)).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let (status, body) = try_signup(&server, attempt("alice", Some("wrong"))).await;
    assert_eq!((status, code(&body)), (403, "invalid_registration_token"));
    let (status, body) = try_signup(&server, attempt("alice", Some("invite-1"))).await;
    assert_eq!(status, 201, "{body}");
    // One use only.
    let (status, body) = try_signup(&server, attempt("bob", Some("invite-1"))).await;
    assert_eq!((status, code(&body)), (403, "invalid_registration_token"));
}

#[tokio::test]
async fn chat_login_by_username_user_id_and_email() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    for name in [
        "alice",
        "Alice",
        "@alice:localhost",
        "alice@example.org",
        "ALICE@example.org",
    ] {
        let (status, body) = login(&server, name, PASSWORD).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_tokens(&body, &alice.user_id);
        assert_ne!(body["access_token"], alice.token.as_str());
    }
    // A login with a device name names the device.
    let (status, body) = anonymous(
        &server,
        Method::POST,
        "/login",
        json!({ "login": "alice", "password": PASSWORD, "device_name": "Laptop" }),
    )
    .await;
    assert_eq!(status, 200);
    let (_, device) = server
        .get(
            &format!(
                "/_matrix/client/v3/devices/{}",
                body["device_id"].as_str().unwrap()
            ),
            Some(body["access_token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(device["display_name"], "Laptop");

    // Wrong credentials are 401 `invalid_credentials`, whichever part is wrong.
    for (name, password) in [
        ("alice", "wrong password"),
        ("nobody", PASSWORD),
        ("nobody@example.org", PASSWORD),
        ("@alice:elsewhere.org", PASSWORD),
        ("not a name!", PASSWORD),
    ] {
        let (status, body) = login(&server, name, password).await;
        assert_eq!(
            (status, code(&body)),
            (401, "invalid_credentials"),
            "{name}: {body}"
        );
    }
    for body in [
        json!({ "login": "", "password": PASSWORD }),
        json!({ "login": "alice" }),
        json!({ "password": PASSWORD }),
        json!({ "login": "alice", "password": PASSWORD, "device_name": "x".repeat(257) }),
    ] {
        let (status, answer) = anonymous(&server, Method::POST, "/login", body).await;
        assert_eq!(
            (status, code(&answer)),
            (400, "invalid_request"),
            "{answer}"
        );
    }
    // The Matrix login takes the same password.
    assert_eq!(server.login("alice", PASSWORD).await.0, 200);
}

#[tokio::test]
async fn chat_refresh_and_logout() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;

    let (status, refreshed) = anonymous(
        &server,
        Method::POST,
        "/token/refresh",
        json!({ "refresh_token": alice.refresh_token }),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_tokens(&refreshed, &alice.user_id);
    assert_ne!(refreshed["refresh_token"], alice.refresh_token.as_str());
    // A refresh token works once.
    let (status, body) = anonymous(
        &server,
        Method::POST,
        "/token/refresh",
        json!({ "refresh_token": alice.refresh_token }),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    for body in [json!({}), json!({ "refresh_token": 5 })] {
        let (status, _) = anonymous(&server, Method::POST, "/token/refresh", body).await;
        assert_eq!(status, 400);
    }
    let access = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(get(&server, "/profile", &access).await.0, 200);

    // Logout removes the device: its tokens stop working at once, other sessions stay.
    let (_, other) = login(&server, "alice", PASSWORD).await;
    let other_device = other["device_id"].clone();
    let other = other["access_token"].as_str().unwrap().to_owned();
    let (status, body) = post(&server, "/logout", &access, json!({})).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, body) = get(&server, "/profile", &access).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let (status, _) = server
        .get("/_matrix/client/v3/account/whoami", Some(&access))
        .await;
    assert_eq!(status, 401);
    let (status, _) = anonymous(
        &server,
        Method::POST,
        "/token/refresh",
        json!({ "refresh_token": refreshed["refresh_token"] }),
    )
    .await;
    assert_eq!(status, 401);
    let (_, devices) = server.get("/_matrix/client/v3/devices", Some(&other)).await;
    assert_eq!(
        devices["devices"][0]["device_id"], other_device,
        "{devices}"
    );
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");
    assert_eq!(get(&server, "/profile", &other).await.0, 200);
}

#[tokio::test]
async fn chat_totp_enrol_login_and_remove() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let t = alice.token.as_str();

    let (status, body) = post(&server, "/mfa/totp", t, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(
        body["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/Roost:")
    );
    // Not on until confirmed.
    let (_, profile) = get(&server, "/profile", t).await;
    assert_eq!(profile["mfa_enabled"], false);
    assert_eq!(login(&server, "alice", PASSWORD).await.0, 200);
    let (status, body) = post(&server, "/mfa/totp/confirm", t, json!({ "code": "000000" })).await;
    assert_eq!((status, code(&body)), (403, "invalid_code"));
    let (status, body) = post(&server, "/mfa/totp/confirm", t, json!({ "code": "" })).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"));
    let (status, body) = post(
        &server,
        "/mfa/totp/confirm",
        t,
        json!({ "code": code_at(&secret, 0) }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let recovery: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    let (_, profile) = get(&server, "/profile", t).await;
    assert_eq!(profile["mfa_enabled"], true);
    let (status, body) = post(&server, "/mfa/totp", t, json!({})).await;
    assert_eq!((status, code(&body)), (409, "mfa_already_enabled"));

    // The password alone now answers a challenge, not tokens.
    let (status, challenge) = login(&server, "alice", PASSWORD).await;
    assert_eq!(status, 200, "{challenge}");
    assert_eq!(challenge["mfa_required"], true);
    assert!(challenge.get("access_token").is_none());
    let mfa_token = challenge["mfa_token"].clone();
    // The Matrix login asks for the code too.
    let (status, _) = server.login("alice", PASSWORD).await;
    assert_eq!(status, 401);
    // A wrong password never reaches the second factor.
    assert_eq!(login(&server, "alice", "wrong password").await.0, 401);

    let second = |mfa_token: Value, code: String| {
        let server = &server;
        async move {
            anonymous(
                server,
                Method::POST,
                "/login/mfa",
                json!({ "mfa_token": mfa_token, "code": code }),
            )
            .await
        }
    };
    let (status, body) = second(mfa_token.clone(), "123456".into()).await;
    assert_eq!((status, code(&body)), (401, "invalid_code"));
    let (status, body) = second(json!("no such challenge"), code_at(&secret, 30)).await;
    assert_eq!((status, code(&body)), (401, "invalid_mfa_token"));
    let (status, body) = second(mfa_token.clone(), code_at(&secret, 30)).await;
    assert_eq!(status, 200, "{body}");
    assert_tokens(&body, &alice.user_id);
    // The challenge is spent.
    let (status, body) = second(mfa_token, recovery[0].clone()).await;
    assert_eq!((status, code(&body)), (401, "invalid_mfa_token"));

    // The one-step form: the code along with the password (here a recovery code).
    let (status, body) = anonymous(
        &server,
        Method::POST,
        "/login",
        json!({ "login": "alice", "password": PASSWORD, "totp_code": recovery[1] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_tokens(&body, &alice.user_id);
    let (status, body) = anonymous(
        &server,
        Method::POST,
        "/login",
        json!({ "login": "alice", "password": PASSWORD, "totp_code": recovery[1] }),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (401, "invalid_code"),
        "a recovery code works once"
    );

    // Turning it off takes a valid code.
    let off = |code: &str| {
        call(
            &server,
            Method::DELETE,
            "/mfa/totp",
            Some(t),
            Some(json!({ "code": code })),
        )
    };
    let (status, body) = off("000000").await;
    assert_eq!((status, code(&body)), (403, "invalid_code"));
    let (status, body) = off(&recovery[2]).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, body) = off(&recovery[3]).await;
    assert_eq!((status, code(&body)), (409, "mfa_not_enabled"));
    let (status, body) = login(&server, "alice", PASSWORD).await;
    assert_eq!(status, 200);
    assert_tokens(&body, &alice.user_id);
    let (status, body) = post(&server, "/mfa/totp/confirm", t, json!({ "code": "123456" })).await;
    assert_eq!((status, code(&body)), (409, "mfa_not_enrolled"));
}

/// Uploads `bytes` through the Matrix content repository; returns the media ID.
async fn upload(server: &TestServer, token: &str, content_type: &str, bytes: Vec<u8>) -> String {
    let response = server
        .http
        .post(server.url("/_matrix/media/v3/upload"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["content_uri"]
        .as_str()
        .and_then(|u| u.strip_prefix("mxc://localhost/"))
        .expect("a local content URI")
        .to_owned()
}

fn png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbaImage::from_pixel(2, 2, image::Rgba([0, 128, 255, 255]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[tokio::test]
async fn chat_profile_read_and_update() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let t = alice.token.as_str();

    let (status, profile) = get(&server, "/profile", t).await;
    assert_eq!(status, 200);
    assert_eq!(
        profile,
        json!({
            "user_id": "@alice:localhost", "username": "alice", "display_name": "alice",
            "avatar_url": null, "status_message": null, "email": "alice@example.org",
            "email_verified": false, "mfa_enabled": false,
        })
    );

    // A room, to see the change carried into the member event as Matrix clients see it.
    let (status, room) = server
        .post("/_matrix/client/v3/createRoom", Some(t), json!({}))
        .await;
    assert_eq!(status, 200);
    let member_path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        enc(room["room_id"].as_str().unwrap()),
        enc(&alice.user_id)
    );

    let picture = upload(&server, t, "image/png", png()).await;
    let (status, profile) = put(
        &server,
        "/profile",
        t,
        json!({ "display_name": "  Alice A.  ", "avatar_file_id": picture, "status_message": "Studying" }),
    )
    .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["display_name"], "Alice A.");
    assert_eq!(
        profile["avatar_url"],
        format!("/_matrix/client/v1/media/download/localhost/{picture}")
    );
    assert_eq!(profile["status_message"], "Studying");
    let (_, member) = server.get(&member_path, Some(t)).await;
    assert_eq!(member["displayname"], "Alice A.");
    assert_eq!(member["avatar_url"], format!("mxc://localhost/{picture}"));
    let (_, matrix) = server
        .get("/_matrix/client/v3/profile/@alice:localhost", None)
        .await;
    assert_eq!(matrix["displayname"], "Alice A.");
    let (_, presence) = server
        .get(
            "/_matrix/client/v3/presence/@alice:localhost/status",
            Some(t),
        )
        .await;
    assert_eq!(presence["status_msg"], "Studying");

    // Absent fields stay, null clears.
    let (status, profile) = put(&server, "/profile", t, json!({ "status_message": null })).await;
    assert_eq!(status, 200);
    assert_eq!(profile["status_message"], Value::Null);
    assert_eq!(profile["display_name"], "Alice A.");
    let (_, profile) = put(&server, "/profile", t, json!({ "avatar_file_id": null })).await;
    assert_eq!(profile["avatar_url"], Value::Null);
    let (_, member) = server.get(&member_path, Some(t)).await;
    assert!(member.get("avatar_url").is_none(), "{member}");
    let (_, profile) = put(&server, "/profile", t, json!({ "display_name": null })).await;
    assert_eq!(profile["display_name"], Value::Null);
    put(&server, "/profile", t, json!({ "display_name": "Alice" })).await;
    let (_, profile) = put(&server, "/profile", t, json!({ "display_name": "" })).await;
    assert_eq!(profile["display_name"], Value::Null);
    let (_, profile) = put(&server, "/profile", t, json!({})).await;
    assert_eq!(profile["username"], "alice");

    // Validation: nothing changes when a field is refused.
    let text = upload(&server, t, "text/plain", b"hello".to_vec()).await;
    let theirs = upload(&server, &bob.token, "image/png", png()).await;
    for (body, status, error) in [
        (json!({ "display_name": "   " }), 400, "invalid_request"),
        (
            json!({ "display_name": "x".repeat(257) }),
            400,
            "invalid_request",
        ),
        (json!({ "display_name": "a\u{7}b" }), 400, "invalid_request"),
        (json!({ "display_name": 12 }), 400, "invalid_request"),
        (
            json!({ "status_message": "x".repeat(257) }),
            400,
            "invalid_request",
        ),
        (json!({ "status_message": ["x"] }), 400, "invalid_request"),
        (
            json!({ "avatar_file_id": "../etc" }),
            400,
            "invalid_request",
        ),
        (json!({ "avatar_file_id": text }), 400, "invalid_request"),
        (
            json!({ "avatar_file_id": "NoSuchFile" }),
            400,
            "invalid_request",
        ),
        (json!({ "avatar_file_id": theirs }), 400, "invalid_request"),
        (
            json!({ "display_name": "Changed", "avatar_file_id": "NoSuchFile" }),
            400,
            "invalid_request",
        ),
    ] {
        let (got, answer) = put(&server, "/profile", t, body.clone()).await;
        assert_eq!((got, code(&answer)), (status, error), "{body}: {answer}");
    }
    let (_, profile) = get(&server, "/profile", t).await;
    assert_eq!(profile["display_name"], Value::Null);
    assert_eq!(profile["avatar_url"], Value::Null);
}

#[tokio::test]
async fn chat_users_show_last_seen_only_to_people_who_share_a_room() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let (status, _) = put(
        &server,
        "/profile",
        &bob.token,
        json!({ "status_message": "Here" }),
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = get(&server, "/users/bob", &alice.token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@bob:localhost");
    assert_eq!(body["username"], "bob");
    assert_eq!(body["display_name"], "bob");
    assert_eq!(body["blocked"], false);
    for hidden in ["status_message", "presence", "online", "last_seen_at"] {
        assert_eq!(body[hidden], Value::Null, "{hidden}: {body}");
    }

    // Once they share a room, alice sees when bob was last active.
    let (_, room) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({ "invite": [bob.user_id] }),
        )
        .await;
    let room_id = room["room_id"].as_str().unwrap();
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(room_id)),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let before = now_ms();
    get(&server, "/profile", &bob.token).await;
    let (status, body) = get(
        &server,
        &format!("/users/{}", enc(&bob.user_id)),
        &alice.token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["status_message"], "Here");
    assert!(body["presence"].is_string(), "{body}");
    assert_eq!(body["online"], body["presence"] == "online");
    let seen = body["last_seen_at"].as_u64().expect("last_seen_at");
    assert!(
        seen + 1000 >= before && seen <= now_ms(),
        "{seen} vs {before}"
    );

    // Blocking hides it again, either way.
    let (status, _) = post(&server, "/users/alice/block", &bob.token, json!({})).await;
    assert_eq!(status, 204);
    let (_, body) = get(&server, "/users/bob", &alice.token).await;
    assert_eq!(body["last_seen_at"], Value::Null);
    assert_eq!(body["blocked"], false);
    let (_, body) = get(&server, "/users/alice", &bob.token).await;
    assert_eq!(body["blocked"], true);

    // One's own profile is always visible; unknown users are 404, bad IDs 400.
    let (_, body) = get(&server, "/users/alice", &alice.token).await;
    assert!(body["last_seen_at"].is_u64(), "{body}");
    for (id, status) in [
        ("nobody", 404),
        ("%40nobody%3Alocalhost", 404),
        ("%40bob%3Aelsewhere.org", 404),
        ("%40bad", 400),
        ("a%3Ab", 400),
    ] {
        let (got, body) = get(&server, &format!("/users/{id}"), &alice.token).await;
        assert_eq!(got, status, "{id}: {body}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn ignored_users(server: &TestServer, user: &ChatUser) -> Value {
    let (status, body) = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
                enc(&user.user_id)
            ),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["ignored_users"].clone()
}

#[tokio::test]
async fn chat_block_and_unblock() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let carol = signup(&server, "carol").await;

    // A Matrix client's own ignore list is kept.
    let (status, _) = server
        .call(
            Method::PUT,
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
                enc(&alice.user_id)
            ),
            Some(&alice.token),
            Some(json!({ "ignored_users": { "@someone:elsewhere.org": {} } })),
        )
        .await;
    assert_eq!(status, 200);

    // Bob asked alice to be friends; blocking him declines the request.
    let services = server.server.as_ref().unwrap().services();
    let bob_id = ruma::UserId::parse(&bob.user_id).unwrap();
    let alice_id = ruma::UserId::parse(&alice.user_id).unwrap();
    let carol_id = ruma::UserId::parse(&carol.user_id).unwrap();
    services
        .add_friend(&bob_id, &alice_id)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        services.friendship(&alice_id, &bob_id).unwrap(),
        roost::service::chat::friends::Friendship::Incoming(_)
    ));
    let (status, body) = post(&server, "/users/bob/block", &alice.token, json!({})).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(
        services.friendship(&alice_id, &bob_id).unwrap(),
        roost::service::chat::friends::Friendship::None
    );
    // An outgoing request is withdrawn the same way.
    services
        .add_friend(&alice_id, &carol_id)
        .await
        .unwrap()
        .unwrap();
    let (status, _) = post(
        &server,
        &format!("/users/{}/block", enc(&carol.user_id)),
        &alice.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        services.friendship(&carol_id, &alice_id).unwrap(),
        roost::service::chat::friends::Friendship::None
    );

    // Matrix clients see the same list; blocking twice changes nothing.
    let (status, _) = post(&server, "/users/bob/block", &alice.token, json!({})).await;
    assert_eq!(status, 204);
    assert_eq!(
        ignored_users(&server, &alice).await,
        json!({ "@someone:elsewhere.org": {}, "@bob:localhost": {}, "@carol:localhost": {} })
    );
    let (status, body) = get(&server, "/users/blocked", &alice.token).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "@bob:localhost",
            "@carol:localhost",
            "@someone:elsewhere.org"
        ]
    );
    assert_eq!(body["users"][0]["display_name"], "bob");

    // Unblocking (also of someone not blocked) is 204.
    let (status, body) = delete(&server, "/users/bob/block", &alice.token).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = delete(&server, "/users/bob/block", &alice.token).await;
    assert_eq!(status, 204);
    assert_eq!(
        ignored_users(&server, &alice).await,
        json!({ "@someone:elsewhere.org": {}, "@carol:localhost": {} })
    );

    // Refusals.
    let (status, body) = post(&server, "/users/alice/block", &alice.token, json!({})).await;
    assert_eq!((status, code(&body)), (400, "self"));
    let (status, body) = post(&server, "/users/nobody/block", &alice.token, json!({})).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, _) = post(&server, "/users/%40bad/block", &alice.token, json!({})).await;
    assert_eq!(status, 400);
    let (_, body) = get(&server, "/users/blocked", &bob.token).await;
    assert_eq!(body["users"], json!([]));
}

#[tokio::test]
async fn chat_uptime_and_tokens_required() {
    let server = TestServer::start().await;
    let (status, body) = call(&server, Method::GET, "/uptime", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let started = body["started_at"].as_u64().unwrap();
    let uptime = body["uptime_ms"].as_u64().unwrap();
    assert!(started <= now_ms() && started + uptime <= now_ms() + 1000);

    let alice = signup(&server, "alice").await;
    let endpoints = [
        (Method::POST, "/logout"),
        (Method::GET, "/profile"),
        (Method::PUT, "/profile"),
        (Method::GET, "/users/alice"),
        (Method::POST, "/mfa/totp"),
        (Method::POST, "/mfa/totp/confirm"),
        (Method::DELETE, "/mfa/totp"),
        (Method::POST, "/users/alice/block"),
        (Method::DELETE, "/users/alice/block"),
        (Method::GET, "/users/blocked"),
    ];
    for (method, path) in endpoints {
        let body = (method != Method::GET).then(|| json!({ "code": "123456" }));
        let (status, answer) = call(&server, method.clone(), path, None, body.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (401, "unauthorized"),
            "{method} {path}"
        );
        let (status, answer) = call(&server, method.clone(), path, Some("not-a-token"), body).await;
        assert_eq!(
            (status, code(&answer)),
            (401, "unauthorized"),
            "{method} {path}"
        );
    }
    // The token still works: none of the refused requests did anything.
    assert_eq!(get(&server, "/profile", &alice.token).await.0, 200);
}

async fn start_with_smtp(smtp: &SmtpServer, require: bool) -> TestServer {
    TestServer::start_with(|c| {
        smtp.configure(c);
        c.registration_requires_email = require;
    })
    .await
}

/// Signs up `name` on a server that requires a verified address, with the code from the
/// e-mail; returns the Tokens answer.
async fn signup_verified(server: &TestServer, smtp: &SmtpServer, name: &str, email: &str) -> Value {
    let (status, pending) = try_signup(
        server,
        json!({ "username": name, "email": email, "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 202, "{pending}");
    assert_eq!(pending["verification_required"], true);
    assert_eq!(pending["email"], email.to_lowercase());
    assert!(pending["expires_at"].as_u64().unwrap() > now_ms());
    let mail = smtp.wait_for_message(&email.to_lowercase(), 1).await;
    let token = link_param(&mail, "token");
    assert!(mail.contains(&token), "the code is in the text too");
    let (status, body) = anonymous(
        server,
        Method::POST,
        "/signup/verify",
        json!({ "signup_id": pending["signup_id"], "token": token }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

#[tokio::test]
async fn chat_signup_with_email_verification() {
    let smtp = SmtpServer::start().await;
    let server = start_with_smtp(&smtp, true).await;

    let (status, pending) = try_signup(
        &server,
        json!({
            "username": "alice", "email": "Alice@Example.org", "password": PASSWORD,
            "display_name": "Alice",
        }),
    )
    .await;
    assert_eq!(status, 202, "{pending}");
    let signup_id = pending["signup_id"].clone();
    let mail = smtp.wait_for_message("alice@example.org", 1).await;
    let token = link_param(&mail, "token");
    // No account until the code comes back.
    assert_eq!(login(&server, "alice", PASSWORD).await.0, 401);

    let verify = |body: Value| anonymous(&server, Method::POST, "/signup/verify", body);
    let (status, body) = verify(json!({ "signup_id": signup_id, "token": "wrong" })).await;
    assert_eq!((status, code(&body)), (400, "invalid_token"), "{body}");
    let (status, body) = verify(json!({ "signup_id": "unknown", "token": token })).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = verify(json!({ "token": token })).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"));
    let (status, body) = verify(json!({ "signup_id": signup_id, "token": token })).await;
    assert_eq!(status, 201, "{body}");
    assert_tokens(&body, "@alice:localhost");
    assert_eq!(body["email"], "alice@example.org");
    assert_eq!(body["email_verified"], true);
    let access = body["access_token"].as_str().unwrap().to_owned();
    // The sign-up is used up.
    let (status, _) = verify(json!({ "signup_id": signup_id, "token": token })).await;
    assert_eq!(status, 404);

    let (_, profile) = get(&server, "/profile", &access).await;
    assert_eq!(profile["display_name"], "Alice");
    assert_eq!(profile["email"], "alice@example.org");
    assert_eq!(profile["email_verified"], true);
    // Matrix clients see the validated address; it logs in, as the username does.
    let (_, threepids) = server
        .get("/_matrix/client/v3/account/3pid", Some(&access))
        .await;
    assert_eq!(threepids["threepids"][0]["address"], "alice@example.org");
    for name in ["alice@example.org", "alice"] {
        let (status, body) = login(&server, name, PASSWORD).await;
        assert_eq!(status, 200, "{name}: {body}");
    }
    // The address and the username are taken now.
    let (status, body) = try_signup(
        &server,
        json!({ "username": "alice2", "email": "alice@example.org", "password": PASSWORD }),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "email_taken"));
    let (status, body) = try_signup(
        &server,
        json!({ "username": "alice", "email": "other@example.org", "password": PASSWORD }),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "username_taken"));

    // Following the link in the e-mail verifies too: the code can then be left out.
    let (status, pending) = try_signup(
        &server,
        json!({ "username": "bob", "email": "bob@example.org", "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 202);
    let mail = smtp.wait_for_message("bob@example.org", 1).await;
    let (status, body) = verify(json!({ "signup_id": pending["signup_id"] })).await;
    assert_eq!((status, code(&body)), (400, "invalid_token"), "not yet");
    assert_eq!(reqwest::get(link(&mail)).await.unwrap().status(), 200);
    let (status, body) = verify(json!({ "signup_id": pending["signup_id"] })).await;
    assert_eq!(status, 201, "{body}");
    assert_tokens(&body, "@bob:localhost");

    // Two pending sign-ups of the same name: the first one verified wins.
    let (status, first) = try_signup(
        &server,
        json!({ "username": "carol", "email": "carol1@example.org", "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 202);
    let first_mail = smtp.wait_for_message("carol1@example.org", 1).await;
    let carol = signup_verified(&server, &smtp, "carol", "carol2@example.org").await;
    assert_tokens(&carol, "@carol:localhost");
    let (status, body) = verify(json!({
        "signup_id": first["signup_id"], "token": link_param(&first_mail, "token"),
    }))
    .await;
    assert_eq!((status, code(&body)), (409, "username_taken"), "{body}");
}

#[tokio::test]
async fn chat_password_reset_by_email() {
    let smtp = SmtpServer::start().await;
    let server = start_with_smtp(&smtp, true).await;
    let tokens = signup_verified(&server, &smtp, "dora", "dora@example.org").await;
    let old_access = tokens["access_token"].as_str().unwrap().to_owned();

    let forgot = |email: &str| {
        anonymous(
            &server,
            Method::POST,
            "/password/forgot",
            json!({ "email": email }),
        )
    };
    // Unknown addresses get the same answer, and no e-mail.
    let (status, body) = forgot("nobody@example.org").await;
    assert_eq!((status, body), (202, Value::Null));
    let (status, body) = forgot("not an address").await;
    assert_eq!((status, code(&body)), (400, "invalid_request"));
    let (status, _) = forgot("Dora@Example.org").await;
    assert_eq!(status, 202);
    // The sign-up e-mail was the first message, the reset the second.
    let mail = smtp.wait_for_message("dora@example.org", 2).await;
    assert!(mail.contains("Reset your password"), "{mail}");
    let reset_token = reset_code(&mail);
    assert_eq!(reset_token.len(), 32);

    let reset = |token: &str, password: &str| {
        anonymous(
            &server,
            Method::POST,
            "/password/reset",
            json!({ "token": token, "new_password": password }),
        )
    };
    let (status, body) = reset("wrong", "a brand new password").await;
    assert_eq!((status, code(&body)), (400, "invalid_token"));
    // A weak password is refused without spending the code.
    let (status, body) = reset(&reset_token, "short").await;
    assert_eq!((status, code(&body)), (400, "weak_password"));
    let (status, body) = reset(&reset_token, "a brand new password").await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, body) = reset(&reset_token, "yet another password").await;
    assert_eq!(
        (status, code(&body)),
        (400, "invalid_token"),
        "the code works once"
    );

    // Every session was logged out, the old password no longer works, the new one does.
    let (status, _) = get(&server, "/profile", &old_access).await;
    assert_eq!(status, 401);
    let (status, body) = login(&server, "dora", PASSWORD).await;
    assert_eq!((status, code(&body)), (401, "invalid_credentials"));
    let (status, body) = login(&server, "dora@example.org", "a brand new password").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.login("dora", "a brand new password").await.0, 200);
    assert_eq!(smtp.count_for("nobody@example.org"), 0);
}

#[tokio::test]
async fn chat_password_reset_needs_a_verified_address() {
    let smtp = SmtpServer::start().await;
    let server = start_with_smtp(&smtp, false).await;
    // Signed up without verification: the address logs in but receives no reset code.
    let erin = signup(&server, "erin").await;
    let (status, _) = anonymous(
        &server,
        Method::POST,
        "/password/forgot",
        json!({ "email": "erin@example.org" }),
    )
    .await;
    assert_eq!(status, 202);
    // A message to someone else, sent after, arrives: so the first was never sent.
    let frank = signup(&server, "frank").await;
    let (status, _) = server
        .post(
            "/_matrix/client/v3/account/3pid/email/requestToken",
            Some(&frank.token),
            json!({ "client_secret": "c1", "email": "frank@example.net", "send_attempt": 1 }),
        )
        .await;
    assert_eq!(status, 200);
    smtp.wait_for_message("frank@example.net", 1).await;
    assert_eq!(smtp.count_for("erin@example.org"), 0);
    assert_eq!(login(&server, "erin@example.org", PASSWORD).await.0, 200);
    assert_eq!(get(&server, "/profile", &erin.token).await.0, 200);

    // Without SMTP, reset by e-mail is not available at all.
    let plain = TestServer::start().await;
    let (status, body) = anonymous(
        &plain,
        Method::POST,
        "/password/forgot",
        json!({ "email": "erin@example.org" }),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_configured"));
}
