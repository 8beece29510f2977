//! Chat API groups and files: creating a group of friends with a picture, invitations, details
//! changed by admins only, adding, removing, leaving, promoting and demoting (the last admin
//! stays), the group as Matrix sees it, strangers answered 404 everywhere; uploading files
//! (multipart), listing the files of a chat page by page as history visibility allows, and
//! deleting them.

use std::io::Cursor;

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::chat_common::{ChatUser, befriend, call, code, delete, enc, get, post, put, signup};
use crate::common::TestServer;

const BOUNDARY: &str = "roost-test-boundary-7MA4YWxkTrZu0gW";

/// A PNG of `width` × `height`.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 30 % 256) as u8, (y * 30 % 256) as u8, 128])
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode");
    out.into_inner()
}

/// One part of a form: field name, file name, content type, data.
struct Part<'a> {
    field: &'a str,
    filename: Option<&'a str>,
    content_type: Option<&'a str>,
    data: &'a [u8],
}

fn file_part<'a>(filename: &'a str, content_type: &'a str, data: &'a [u8]) -> Part<'a> {
    Part {
        field: "file",
        filename: Some(filename),
        content_type: Some(content_type),
        data,
    }
}

fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", part.field);
        if let Some(filename) = part.filename {
            disposition.push_str(&format!("; filename=\"{filename}\""));
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(content_type) = part.content_type {
            body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(part.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// `POST /files` with a raw body and content type; checked against the OpenAPI document.
async fn upload_raw(
    server: &TestServer,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = server
        .http
        .post(server.url("/files"))
        .header(CONTENT_TYPE, content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("upload sent");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body read");
    let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "POST /files: answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    crate::chat_spec::check_response(&Method::POST, "/files", status, &value);
    (status, value)
}

async fn upload(server: &TestServer, user: &ChatUser, parts: &[Part<'_>]) -> (u16, Value) {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    upload_raw(server, Some(&user.token), &content_type, form(parts)).await
}

/// Uploads a file and returns its File object.
async fn upload_ok(server: &TestServer, user: &ChatUser, parts: &[Part<'_>]) -> Value {
    let (status, body) = upload(server, user, parts).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// The member entry of `user` in a Group object.
fn member<'a>(group: &'a Value, user: &ChatUser) -> Option<&'a Value> {
    group["members"]
        .as_array()?
        .iter()
        .find(|m| m["user"]["user_id"] == json!(user.user_id))
}

fn role_of(group: &Value, user: &ChatUser) -> (String, String) {
    let m = member(group, user).unwrap_or_else(|| panic!("{} in {group}", user.user_id));
    (
        m["role"].as_str().unwrap_or_default().to_owned(),
        m["membership"].as_str().unwrap_or_default().to_owned(),
    )
}

fn pair(role: &str, membership: &str) -> (String, String) {
    (role.to_owned(), membership.to_owned())
}

/// A state event of a room through the Matrix API.
async fn matrix_state(server: &TestServer, token: &str, room: &str, kind: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/", enc(room));
    let (status, body) = server.get(&path, Some(token)).await;
    assert_eq!(status, 200, "{kind}: {body}");
    body
}

/// Sends a message event through the Matrix API; returns its event ID.
async fn matrix_send(server: &TestServer, token: &str, room: &str, content: Value) -> String {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
        enc(room),
        rand_txn()
    );
    let (status, body) = server
        .call(Method::PUT, &path, Some(token), Some(content))
        .await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

fn rand_txn() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("txn{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The `m.image`/`m.file` content of an uploaded File object.
fn file_message(msgtype: &str, file: &Value, server_name: &str) -> Value {
    let mut info = json!({"mimetype": file["mime_type"], "size": file["size"]});
    if let (Some(w), Some(h)) = (file["width"].as_u64(), file["height"].as_u64()) {
        info["w"] = json!(w);
        info["h"] = json!(h);
    }
    json!({
        "msgtype": msgtype,
        "body": file["name"],
        "url": format!("mxc://{server_name}/{}", file["id"].as_str().expect("id")),
        "info": info,
    })
}

fn server_name_of(user: &ChatUser) -> String {
    user.user_id
        .split_once(':')
        .map(|(_, s)| s.to_owned())
        .expect("server name")
}

#[tokio::test]
async fn groups_of_friends_managed_by_admins() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let carol = signup(&server, "carol").await;
    let dave = signup(&server, "dave").await;
    let erin = signup(&server, "erin").await;
    let dm = befriend(&server, &alice, &bob).await;
    befriend(&server, &alice, &carol).await;
    let ghost = format!("@ghost:{}", server_name_of(&alice));

    let picture = upload_ok(
        &server,
        &alice,
        &[file_part("group.png", "image/png", &png(8, 6))],
    )
    .await;
    let picture_id = picture["id"].as_str().expect("id").to_owned();
    let bobs_file = upload_ok(
        &server,
        &bob,
        &[file_part("bob.png", "image/png", &png(2, 2))],
    )
    .await;
    let text = upload_ok(
        &server,
        &alice,
        &[file_part("a.txt", "text/plain", b"hello")],
    )
    .await;

    // Members must be existing friends; fields are checked.
    let base =
        json!({"name": "Study group", "topic": "Linear algebra", "picture_file_id": picture_id});
    let with = |extra: Value| {
        let mut body = base.clone();
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    let (status, body) = post(
        &server,
        "/groups",
        &alice.token,
        with(json!({"members": [bob.user_id, erin.user_id]})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "not_friends"), "{body}");
    let (status, body) = post(
        &server,
        "/groups",
        &alice.token,
        with(json!({"members": [ghost]})),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    for bad in [
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "n".repeat(101)}),
        json!({"topic": "t".repeat(1001)}),
        json!({"topic": "bell\u{7}"}),
        json!({"topic": "carriage\rreturn"}),
        json!({"picture_file_id": "nope"}),
        json!({"picture_file_id": "../x"}),
        json!({"picture_file_id": bobs_file["id"]}),
        json!({"picture_file_id": text["id"]}),
        json!({"members": ["not a user!"]}),
        json!({"members": "bob"}),
        json!({"colour": "red"}),
    ] {
        let (status, body) = post(&server, "/groups", &alice.token, with(bad.clone())).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_request"),
            "{bad}: {body}"
        );
    }
    let (status, body) = post(&server, "/groups", &alice.token, json!({})).await;
    assert_eq!(status, 400, "{body}");

    // Created with a picture; members (by user ID or username) are invited.
    let (status, group) = post(
        &server,
        "/groups",
        &alice.token,
        with(json!({"members": [bob.user_id, "carol", alice.user_id]})),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with('!'));
    assert_eq!(group["name"], "Study group");
    assert_eq!(group["topic"], "Linear algebra");
    let picture_url = group["picture_url"].as_str().expect("picture_url");
    assert!(
        picture_url.ends_with(&format!("/{picture_id}")),
        "{picture_url}"
    );
    assert_eq!(group["created_by"], json!(alice.user_id));
    assert!(group["created_at"].as_u64().is_some());
    assert_eq!(group["my_role"], "admin");
    assert_eq!(group["my_membership"], "join");
    assert_eq!(group["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(role_of(&group, &alice), pair("admin", "join"));
    assert_eq!(role_of(&group, &bob), pair("member", "invite"));
    assert_eq!(role_of(&group, &carol), pair("member", "invite"));
    assert_eq!(
        member(&group, &alice).expect("alice")["user"]["username"],
        "alice"
    );
    let path = format!("/groups/{}", enc(&id));
    let action = |what: &str| format!("/groups/{}/{what}", enc(&id));

    // Invited members see the group; the direct chat is not a group.
    let (status, body) = get(&server, "/groups", &bob.token).await;
    assert_eq!(status, 200, "{body}");
    let groups = body["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{body}");
    assert_eq!(groups[0]["id"], json!(id));
    assert_eq!(groups[0]["my_membership"], "invite");
    let (status, body) = get(&server, &format!("/groups/{}", enc(&dm)), &bob.token).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");

    // An invitee cannot change anything before joining; joining twice is harmless.
    let (status, body) = put(&server, &path, &bob.token, json!({"name": "Mine"})).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    for _ in 0..2 {
        let (status, body) = post(&server, &action("join"), &bob.token, json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["my_membership"], "join");
        assert_eq!(body["my_role"], "member");
    }

    // Details: admins only; fields checked; null clears the topic.
    let (status, body) = put(&server, &path, &bob.token, json!({"name": "Mine"})).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    for bad in [
        json!({}),
        json!({"name": null}),
        json!({"name": ""}),
        json!({"topic": "t".repeat(1001)}),
        json!({"topic": "escape\u{1b}[31m"}),
        json!({"picture_file_id": bobs_file["id"]}),
        json!({"title": "x"}),
    ] {
        let (status, body) = put(&server, &path, &alice.token, bad.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_request"),
            "{bad}: {body}"
        );
    }
    let (status, body) = put(
        &server,
        &path,
        &alice.token,
        json!({"name": "Algebra", "topic": null}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Algebra");
    assert_eq!(body["topic"], Value::Null);
    assert_eq!(body["picture_url"], json!(picture_url));
    let (_, seen_by_bob) = get(&server, &path, &bob.token).await;
    assert_eq!(seen_by_bob["name"], "Algebra");

    // The same group through the Matrix API.
    let name = matrix_state(&server, &bob.token, &id, "m.room.name").await;
    assert_eq!(name["name"], "Algebra");
    let topic = matrix_state(&server, &bob.token, &id, "m.room.topic").await;
    assert_eq!(topic["topic"], "");
    let avatar = matrix_state(&server, &bob.token, &id, "m.room.avatar").await;
    assert_eq!(
        avatar["url"],
        json!(format!("mxc://{}/{picture_id}", server_name_of(&alice)))
    );
    assert_eq!(avatar["info"]["w"], 8);
    let create = matrix_state(&server, &bob.token, &id, "m.room.create").await;
    assert!(create["room_version"].is_string());
    let levels = matrix_state(&server, &bob.token, &id, "m.room.power_levels").await;
    assert_eq!(levels["invite"], 100);
    assert_eq!(levels["kick"], 100);
    assert_eq!(levels["events"]["m.room.name"], 100);
    let rules = matrix_state(&server, &bob.token, &id, "m.room.join_rules").await;
    assert_eq!(rules["join_rule"], "invite");
    // A member renaming the group from a Matrix client is refused by the auth rules too.
    let (status, _) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&id)),
            Some(&bob.token),
            Some(json!({"name": "Hijacked"})),
        )
        .await;
    assert_eq!(status, 403);

    // Promote and demote; the last admin stays.
    let (status, body) = post(
        &server,
        &action("admins"),
        &bob.token,
        json!({"user_id": alice.user_id, "admin": false}),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = post(
        &server,
        &action("admins"),
        &alice.token,
        json!({"user_id": alice.user_id, "admin": false}),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "last_admin"), "{body}");
    let (status, body) = post(
        &server,
        &action("admins"),
        &alice.token,
        json!({"user_id": "bob", "admin": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(role_of(&body, &bob), pair("admin", "join"));
    let levels = matrix_state(&server, &alice.token, &id, "m.room.power_levels").await;
    assert_eq!(levels["users"][&bob.user_id], 100);
    let (status, body) = post(
        &server,
        &action("admins"),
        &bob.token,
        json!({"user_id": alice.user_id, "admin": false}),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = post(
        &server,
        &action("admins"),
        &bob.token,
        json!({"user_id": bob.user_id, "admin": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["my_role"], "member");
    for bad in [
        json!({"user_id": bob.user_id}),
        json!({"user_id": bob.user_id, "admin": "yes"}),
        json!({"admin": true}),
    ] {
        let (status, body) = post(&server, &action("admins"), &alice.token, bad.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_request"),
            "{bad}: {body}"
        );
    }
    let (status, body) = post(
        &server,
        &action("admins"),
        &alice.token,
        json!({"user_id": dave.user_id, "admin": true}),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");

    // Adding: admins only, friends of the adder, not twice.
    let (status, body) = post(
        &server,
        &action("add"),
        &bob.token,
        json!({"user_id": erin.user_id}),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = post(
        &server,
        &action("add"),
        &alice.token,
        json!({"user_id": erin.user_id}),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "not_friends"), "{body}");
    befriend(&server, &erin, &alice).await;
    let (status, body) = post(
        &server,
        &action("add"),
        &alice.token,
        json!({"user_id": "erin"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(role_of(&body, &erin), pair("member", "invite"));
    let (status, body) = post(
        &server,
        &action("add"),
        &alice.token,
        json!({"user_id": erin.user_id}),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "already_member"), "{body}");
    let (status, body) = post(
        &server,
        &action("add"),
        &alice.token,
        json!({"user_id": ghost}),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");

    // Removing: admins only; an invitation can be withdrawn.
    let (status, body) = post(
        &server,
        &action("remove"),
        &bob.token,
        json!({"user_id": carol.user_id}),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = post(
        &server,
        &action("remove"),
        &alice.token,
        json!({"user_id": carol.user_id}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(member(&body, &carol).is_none(), "{body}");
    let (status, body) = get(&server, &path, &carol.token).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = post(
        &server,
        &action("remove"),
        &alice.token,
        json!({"user_id": alice.user_id}),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let (status, body) = post(
        &server,
        &action("remove"),
        &alice.token,
        json!({"user_id": dave.user_id}),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");

    // Leaving forgets the group.
    let (status, body) = post(&server, &action("leave"), &bob.token, json!({})).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = get(&server, &path, &bob.token).await;
    assert_eq!(status, 404);
    let (_, body) = get(&server, "/groups", &bob.token).await;
    assert_eq!(body["groups"], json!([]));
    let (_, body) = get(&server, &path, &alice.token).await;
    assert!(member(&body, &bob).is_none(), "{body}");

    // Strangers (and former members) get 404 everywhere; malformed IDs 400; no token 401.
    for user in [&dave, &bob] {
        let t = &user.token;
        let target = json!({"user_id": alice.user_id});
        let answers = [
            get(&server, &path, t).await,
            put(&server, &path, t, json!({"name": "x"})).await,
            post(&server, &action("join"), t, json!({})).await,
            post(&server, &action("add"), t, target.clone()).await,
            post(&server, &action("remove"), t, target.clone()).await,
            post(&server, &action("leave"), t, json!({})).await,
            post(
                &server,
                &action("admins"),
                t,
                json!({"user_id": alice.user_id, "admin": false}),
            )
            .await,
            get(&server, &format!("/chats/{}/files", enc(&id)), t).await,
        ];
        for (status, body) in answers {
            assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
        }
    }
    let unknown = "/groups/%21unknown%3Alocalhost";
    let (status, _) = get(&server, unknown, &alice.token).await;
    assert_eq!(status, 404);
    let (status, body) = get(&server, "/groups/not-a-room", &alice.token).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    for (method, p) in [
        (Method::GET, "/groups".to_owned()),
        (Method::POST, "/groups".to_owned()),
        (Method::GET, path.clone()),
        (Method::PUT, path.clone()),
        (Method::POST, action("join")),
        (Method::POST, action("add")),
        (Method::POST, action("remove")),
        (Method::POST, action("leave")),
        (Method::POST, action("admins")),
    ] {
        let (status, body) = call(&server, method, &p, None, Some(json!({}))).await;
        assert_eq!((status, code(&body)), (401, "unauthorized"), "{p}: {body}");
    }
}

/// The groups `user` sees in `GET /groups`.
async fn group_ids(server: &TestServer, user: &ChatUser) -> Vec<String> {
    let (status, body) = get(server, "/groups", &user.token).await;
    assert_eq!(status, 200, "{body}");
    body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn invites_from_blocked_users_and_direct_invites_are_not_groups() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let carol = signup(&server, "carol").await;
    befriend(&server, &alice, &bob).await;
    befriend(&server, &alice, &carol).await;

    // A bare username names the user in any case, in group requests as everywhere.
    let (status, group) = post(
        &server,
        "/groups",
        &bob.token,
        json!({"name": "Bob's", "topic": "line one\n\tline two", "members": ["Alice"]}),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["topic"], "line one\n\tline two");
    assert_eq!(role_of(&group, &alice), pair("member", "invite"));
    let bobs = group["id"].as_str().expect("id").to_owned();
    let (status, group) = post(&server, "/groups", &alice.token, json!({"name": "Alice's"})).await;
    assert_eq!(status, 201, "{group}");
    let alices = group["id"].as_str().expect("id").to_owned();
    let (status, group) = post(
        &server,
        &format!("/groups/{}/add", enc(&alices)),
        &alice.token,
        json!({"user_id": "Carol"}),
    )
    .await;
    assert_eq!(status, 200, "{group}");
    assert_eq!(role_of(&group, &carol), pair("member", "invite"));
    let mut ids = group_ids(&server, &alice).await;
    ids.sort();
    let mut expected = vec![bobs.clone(), alices.clone()];
    expected.sort();
    assert_eq!(ids, expected);

    // Blocked, the inviter's invitation is hidden as `/sync` hides it: no group to see or join.
    let bobs_path = format!("/groups/{}", enc(&bobs));
    let block_bob = format!("/users/{}/block", enc(&bob.user_id));
    let (status, _) = post(&server, &block_bob, &alice.token, json!({})).await;
    assert_eq!(status, 204);
    assert_eq!(group_ids(&server, &alice).await, vec![alices.clone()]);
    let (status, body) = get(&server, &bobs_path, &alice.token).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = post(
        &server,
        &format!("{bobs_path}/join"),
        &alice.token,
        json!({}),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, _) = delete(&server, &block_bob, &alice.token).await;
    assert_eq!(status, 204);
    let (status, body) = get(&server, &bobs_path, &alice.token).await;
    assert_eq!(
        (status, body["my_membership"].as_str()),
        (200, Some("invite")),
        "{body}"
    );

    // A Matrix client's direct-chat invitation is a friend request, not a group.
    let (status, body) = server
        .call(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&carol.token),
            Some(json!({"preset": "private_chat", "is_direct": true, "invite": [alice.user_id]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let direct = body["room_id"].as_str().expect("room_id").to_owned();
    assert!(!group_ids(&server, &alice).await.contains(&direct));
    let direct_path = format!("/groups/{}", enc(&direct));
    let (status, body) = get(&server, &direct_path, &alice.token).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = post(
        &server,
        &format!("{direct_path}/join"),
        &alice.token,
        json!({}),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, _) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(&direct),
                enc(&alice.user_id)
            ),
            Some(&alice.token),
        )
        .await;
    assert_ne!(status, 200, "the invitation must still be pending");
}

#[tokio::test]
async fn files_are_uploaded_listed_and_deleted() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let carol = signup(&server, "carol").await;
    let dave = signup(&server, "dave").await;
    let dm = befriend(&server, &alice, &bob).await;
    let server_name = server_name_of(&alice);

    // Upload: the name field (before the file) wins over the part's file name; the type comes
    // from the part or, without one, from the name.
    let image = upload_ok(
        &server,
        &alice,
        &[file_part("IMG_0001.png", "image/png", &png(12, 7))],
    )
    .await;
    assert_eq!(image["name"], "IMG_0001.png");
    assert_eq!(image["mime_type"], "image/png");
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64()),
        (Some(12), Some(7))
    );
    assert_eq!(image["uploader"], json!(alice.user_id));
    assert!(image["created_at"].as_u64().is_some());
    let image_id = image["id"].as_str().expect("id").to_owned();
    assert_eq!(
        image["url"],
        json!(format!(
            "/_matrix/client/v1/media/download/{server_name}/{image_id}"
        ))
    );
    let notes = upload_ok(
        &server,
        &alice,
        &[
            Part {
                field: "name",
                filename: None,
                content_type: None,
                data: b"Notes week 1.txt",
            },
            Part {
                field: "file",
                filename: Some("upload.bin"),
                content_type: None,
                data: b"x = 1\ny = 2\n",
            },
        ],
    )
    .await;
    assert_eq!(notes["name"], "Notes week 1.txt");
    assert_eq!(notes["mime_type"], "text/plain");
    assert_eq!(notes["size"], 12);
    assert!(notes.get("width").is_none(), "{notes}");
    // The bytes are served through the Matrix media API.
    let download = server
        .http
        .get(server.url(notes["url"].as_str().expect("url")))
        .bearer_auth(&bob.token)
        .send()
        .await
        .expect("download");
    assert_eq!(download.status().as_u16(), 200);
    assert_eq!(
        download.bytes().await.expect("bytes").as_ref(),
        b"x = 1\ny = 2\n"
    );

    // Bad forms.
    let no_file = form(&[Part {
        field: "name",
        filename: None,
        content_type: None,
        data: b"x",
    }]);
    let multipart = format!("multipart/form-data; boundary={BOUNDARY}");
    let bad_forms = [
        (
            "multipart/form-data".to_owned(),
            form(&[file_part("a", "text/plain", b"a")]),
        ),
        ("application/json".to_owned(), b"{\"file\": \"x\"}".to_vec()),
        (multipart.clone(), no_file),
        (
            multipart.clone(),
            form(&[Part {
                field: "other",
                filename: None,
                content_type: None,
                data: b"x",
            }]),
        ),
        (multipart.clone(), b"--nonsense".to_vec()),
        (
            multipart.clone(),
            form(&[
                file_part("a.txt", "text/plain", b"a"),
                file_part("b.txt", "text/plain", b"b"),
            ]),
        ),
    ];
    for (content_type, body) in bad_forms {
        let (status, answer) = upload_raw(&server, Some(&alice.token), &content_type, body).await;
        assert_eq!(
            (status, code(&answer)),
            (400, "invalid_request"),
            "{content_type}: {answer}"
        );
    }
    let (status, answer) = upload_raw(
        &server,
        None,
        &multipart,
        form(&[file_part("a", "text/plain", b"a")]),
    )
    .await;
    assert_eq!((status, code(&answer)), (401, "unauthorized"), "{answer}");

    // Files shared in the direct chat, through the Matrix API: an image, a file, text, a
    // redacted file and a remote one.
    let image_event = matrix_send(
        &server,
        &alice.token,
        &dm,
        file_message("m.image", &image, &server_name),
    )
    .await;
    matrix_send(
        &server,
        &bob.token,
        &dm,
        json!({"msgtype": "m.text", "body": "nice"}),
    )
    .await;
    let notes_event = matrix_send(
        &server,
        &bob.token,
        &dm,
        file_message("m.file", &notes, &server_name),
    )
    .await;
    let gone = upload_ok(
        &server,
        &alice,
        &[file_part("gone.txt", "text/plain", b"bye")],
    )
    .await;
    let gone_event = matrix_send(
        &server,
        &alice.token,
        &dm,
        file_message("m.file", &gone, &server_name),
    )
    .await;
    let (status, body) = server
        .call(
            Method::PUT,
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r1",
                enc(&dm),
                enc(&gone_event)
            ),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    matrix_send(
        &server,
        &alice.token,
        &dm,
        json!({"msgtype": "m.file", "body": "far.txt", "url": "mxc://elsewhere.example/abc"}),
    )
    .await;

    let files_path = format!("/chats/{}/files", enc(&dm));
    for viewer in [&alice, &bob] {
        let (status, body) = get(&server, &files_path, &viewer.token).await;
        assert_eq!(status, 200, "{body}");
        let files = body["files"].as_array().expect("files");
        assert_eq!(files.len(), 2, "{body}");
        assert_eq!(body["next_cursor"], Value::Null);
        assert_eq!(files[0]["id"], notes["id"]);
        assert_eq!(files[0]["message_id"], json!(notes_event));
        assert_eq!(files[0]["sender"], json!(bob.user_id));
        assert_eq!(files[0]["uploader"], json!(alice.user_id));
        assert_eq!(files[0]["name"], "Notes week 1.txt");
        assert_eq!(files[1]["id"], json!(image_id));
        assert_eq!(files[1]["message_id"], json!(image_event));
        assert_eq!(
            (files[1]["width"].as_u64(), files[1]["height"].as_u64()),
            (Some(12), Some(7))
        );
        assert!(files[1]["sent_at"].as_u64() <= files[0]["sent_at"].as_u64());
    }

    // Page by page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let page = match &cursor {
            Some(c) => format!("{files_path}?limit=1&cursor={c}"),
            None => format!("{files_path}?limit=1"),
        };
        let (status, body) = get(&server, &page, &bob.token).await;
        assert_eq!(status, 200, "{body}");
        for file in body["files"].as_array().expect("files") {
            seen.push(file["id"].clone());
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, vec![notes["id"].clone(), json!(image_id)]);
    for bad in [
        "?limit=0",
        "?limit=101",
        "?limit=x",
        "?cursor=abc",
        "?cursor=0",
        "?cursor=%2B5",
    ] {
        let (status, body) = get(&server, &format!("{files_path}{bad}"), &bob.token).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_request"),
            "{bad}: {body}"
        );
    }
    // A blocked user's files are left out, as their messages are; unblocked, they are back.
    let block_bob = format!("/users/{}/block", enc(&bob.user_id));
    let (status, _) = post(&server, &block_bob, &alice.token, json!({})).await;
    assert_eq!(status, 204);
    let (_, body) = get(&server, &files_path, &alice.token).await;
    let ids: Vec<_> = body["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(image_id)], "{body}");
    let (status, _) = delete(&server, &block_bob, &alice.token).await;
    assert_eq!(status, 204);
    let (_, body) = get(&server, &files_path, &alice.token).await;
    assert_eq!(body["files"].as_array().map(Vec::len), Some(2), "{body}");

    let (status, body) = get(&server, &files_path, &dave.token).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = get(&server, "/chats/%21nope%3Alocalhost/files", &bob.token).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = call(&server, Method::GET, &files_path, None, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");

    // In a group, an invitee sees no history (visibility "shared") until joining.
    befriend(&server, &alice, &carol).await;
    let (status, group) = post(
        &server,
        "/groups",
        &alice.token,
        json!({"name": "Files", "members": [carol.user_id]}),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group_id = group["id"].as_str().expect("id").to_owned();
    matrix_send(
        &server,
        &alice.token,
        &group_id,
        file_message("m.image", &image, &server_name),
    )
    .await;
    let group_files = format!("/chats/{}/files", enc(&group_id));
    let (status, body) = get(&server, &group_files, &carol.token).await;
    assert_eq!(
        (status, body["files"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );
    let (status, _) = post(
        &server,
        &format!("/groups/{}/join", enc(&group_id)),
        &carol.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = get(&server, &group_files, &carol.token).await;
    assert_eq!(body["files"][0]["id"], json!(image_id), "{body}");
    let (status, body) = get(&server, &group_files, &bob.token).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");

    // Deleting: the uploader only; then it is gone from the lists too.
    let notes_path = format!("/files/{}", notes["id"].as_str().expect("id"));
    let (status, body) = delete(&server, &notes_path, &bob.token).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = delete(&server, "/files/unknownmedia", &alice.token).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = delete(&server, "/files/bad.id", &alice.token).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let (status, body) = call(&server, Method::DELETE, &notes_path, None, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    let (status, body) = delete(&server, &notes_path, &alice.token).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = delete(&server, &notes_path, &alice.token).await;
    assert_eq!(status, 404);
    let (_, body) = get(&server, &files_path, &bob.token).await;
    let ids: Vec<_> = body["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(image_id)]);
}

#[tokio::test]
async fn uploads_respect_the_size_limit_and_quota() {
    let server = TestServer::start_with(|c| {
        c.media.max_upload_bytes = 1000;
        c.media.max_bytes_per_user = 1500;
    })
    .await;
    let alice = signup(&server, "alice").await;
    let (status, body) = upload(
        &server,
        &alice,
        &[file_part(
            "big.bin",
            "application/octet-stream",
            &[7u8; 1001],
        )],
    )
    .await;
    assert_eq!((status, code(&body)), (413, "too_large"), "{body}");
    // Far over the limit: refused from the declared length.
    let (status, body) = upload(
        &server,
        &alice,
        &[file_part(
            "huge.bin",
            "application/octet-stream",
            &vec![7u8; 200_000],
        )],
    )
    .await;
    assert_eq!((status, code(&body)), (413, "too_large"), "{body}");
    let file = upload_ok(
        &server,
        &alice,
        &[file_part(
            "ok.bin",
            "application/octet-stream",
            &[1u8; 1000],
        )],
    )
    .await;
    assert_eq!(file["size"], 1000);
    let (status, body) = upload(
        &server,
        &alice,
        &[file_part(
            "more.bin",
            "application/octet-stream",
            &[2u8; 600],
        )],
    )
    .await;
    assert_eq!((status, code(&body)), (403, "quota_exceeded"), "{body}");
    // Deleting frees the quota.
    let (status, _) = delete(
        &server,
        &format!("/files/{}", file["id"].as_str().expect("id")),
        &alice.token,
    )
    .await;
    assert_eq!(status, 204);
    upload_ok(
        &server,
        &alice,
        &[file_part(
            "more.bin",
            "application/octet-stream",
            &[2u8; 600],
        )],
    )
    .await;
}
