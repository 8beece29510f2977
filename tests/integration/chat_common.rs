//! Shared helpers of the Chat API tests: a client that sends JSON with a bearer token and checks
//! every answer against `spec/openapi.yaml` (see `chat_spec`), and sign-up of test users.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestServer};

/// A Chat API user of a test server.
#[derive(Clone, Debug)]
pub struct ChatUser {
    pub token: String,
    pub refresh_token: String,
    pub user_id: String,
    pub username: String,
}

/// Sends a Chat API request; returns the status and the JSON body (`Null` when there is none).
/// Every answer is checked against the OpenAPI document: a route, status or body shape the
/// document does not describe fails the test.
pub async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server.http.request(method.clone(), server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body read");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    crate::chat_spec::check_response(&method, path, status, &value);
    (status, value)
}

pub async fn get(server: &TestServer, path: &str, token: &str) -> (u16, Value) {
    call(server, Method::GET, path, Some(token), None).await
}

pub async fn post(server: &TestServer, path: &str, token: &str, body: Value) -> (u16, Value) {
    call(server, Method::POST, path, Some(token), Some(body)).await
}

pub async fn put(server: &TestServer, path: &str, token: &str, body: Value) -> (u16, Value) {
    call(server, Method::PUT, path, Some(token), Some(body)).await
}

pub async fn delete(server: &TestServer, path: &str, token: &str) -> (u16, Value) {
    call(server, Method::DELETE, path, Some(token), None).await
}

/// The `error.code` of an error answer.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Signs up `username` (no e-mail verification required) and returns the logged-in user.
pub async fn signup(server: &TestServer, username: &str) -> ChatUser {
    let (status, body) = call(
        server,
        Method::POST,
        "/signup",
        None,
        Some(json!({
            "username": username,
            "email": format!("{username}@example.org"),
            "password": PASSWORD,
        })),
    )
    .await;
    assert_eq!(status, 201, "signup {username}: {body}");
    ChatUser {
        token: body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        refresh_token: body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
        user_id: body["user_id"].as_str().expect("user_id").to_owned(),
        username: username.to_owned(),
    }
}

/// Percent-encodes a user ID, room ID or event ID for a path segment.
pub fn enc(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// Makes `a` and `b` friends through the Chat API (a asks, b accepts); returns their direct chat.
pub async fn befriend(server: &TestServer, a: &ChatUser, b: &ChatUser) -> String {
    let (status, body) = post(
        server,
        "/friends/add",
        &a.token,
        json!({ "user_id": b.user_id }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post(
        server,
        "/friends/accept",
        &b.token,
        json!({ "user_id": a.user_id }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["chat_id"].as_str().expect("chat_id").to_owned()
}
