//! The OpenAPI document against the running server: every documented route exists and every
//! route the Chat API serves is documented (with exactly the documented methods), every
//! documented operation is called at least once with its answer checked against the document,
//! and the interactive docs (`/docs`, its assets, `/openapi.json`) are served by Roost itself.

use std::collections::BTreeSet;

use reqwest::Method;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde_json::{Value, json};

use crate::chat_common::{self, ChatUser, code, enc};
use crate::chat_spec::{self, METHODS, spec};
use crate::common::{PASSWORD, TestServer};

/// Whether a server route belongs to the Chat API (everything but Matrix, discovery and health).
fn is_chat_route(template: &str) -> bool {
    !(template.starts_with("/_matrix/")
        || template.starts_with("/.well-known/")
        || template == "/health")
}

#[test]
fn the_document_is_consistent() {
    let spec = spec();
    let doc = &spec.doc;
    assert_eq!(doc["openapi"], "3.1.0");

    // Operation IDs are unique, every operation is tagged and summarised.
    let mut ids = BTreeSet::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            assert!(op["summary"].is_string(), "{method} {template}: no summary");
            assert!(op["tags"].is_array(), "{method} {template}: no tags");
        }
    }

    // Every operation that needs a token documents the 401, every one that takes a body or a
    // path parameter documents the 400, every list documents its paging parameters.
    for op in &spec.operations {
        let what = format!("{} {}", op.method, op.template);
        let raw = &doc["paths"][&op.template][op.method.to_lowercase()];
        if op.secured {
            assert!(op.responses.contains_key(&401), "{what}: no 401");
        }
        if raw.get("requestBody").is_some() && op.template != "/ws" {
            assert!(op.responses.contains_key(&400), "{what}: no 400");
        }
        let success = op.responses.keys().filter(|s| **s < 300).count();
        assert!(success >= 1, "{what}: no success answer");
        let params: Vec<String> = raw["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["$ref"].as_str().map(str::to_owned))
            .collect();
        if params.iter().any(|p| p.ends_with("/Limit")) {
            assert!(
                params.iter().any(|p| p.ends_with("/Cursor")),
                "{what}: limit without cursor"
            );
        }
    }

    // Every error code is listed with its statuses, in the enum and in the table.
    let error_code = &doc["components"]["schemas"]["ErrorCode"];
    let listed: BTreeSet<String> = error_code["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    let with_statuses: BTreeSet<String> = spec.code_statuses.keys().cloned().collect();
    assert_eq!(
        listed, with_statuses,
        "ErrorCode enum and x-statuses differ"
    );
    let table = error_code["description"].as_str().expect("description");
    for (code, statuses) in &spec.code_statuses {
        let statuses: Vec<String> = statuses.iter().map(u16::to_string).collect();
        let row = format!("| `{code}` | {} |", statuses.join(", "));
        assert!(table.contains(&row), "the ErrorCode table lacks {row}");
    }

    // The examples the document gives are valid.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for (name, schema) in schemas {
        for example in schema["examples"].as_array().into_iter().flatten() {
            let problems = spec.schema_errors(name, example);
            assert!(problems.is_empty(), "example of {name}: {problems:?}");
        }
    }
}

#[test]
fn concrete_paths_find_their_templates() {
    let spec = spec();
    let cases = [
        ("/users/blocked", "/users/{id}"),
        ("/users/%40a%3Ab", "/users/{id}"),
        ("/users/%40a%3Ab/block", "/users/{id}/block"),
        ("/messages/group/%21r", "/messages/group/{id}"),
        ("/messages/%24e/status", "/messages/{id}/status"),
        ("/notifications?unread=true&limit=5", "/notifications"),
        ("/friends/requests", "/friends/requests"),
        ("/call/turn", "/call/turn"),
    ];
    for (path, template) in cases {
        let found = spec.template_of(path);
        if path == "/users/blocked" {
            assert_eq!(found, Some("/users/blocked"), "a literal beats a parameter");
        } else {
            assert_eq!(found, Some(template), "{path}");
        }
    }
    assert_eq!(spec.template_of("/users/"), None);
    assert_eq!(spec.template_of("/nowhere"), None);
}

#[test]
fn every_documented_route_is_served_and_every_chat_route_documented() {
    let served: BTreeSet<String> = roost::api::route_templates()
        .into_iter()
        .filter(|t| is_chat_route(t))
        .collect();
    let documented: BTreeSet<String> = spec()
        .operations
        .iter()
        .map(|op| op.template.clone())
        .collect();
    let missing: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "documented but not served: {missing:?}");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in spec/openapi.yaml: {undocumented:?}"
    );
}

/// The same path with every `{id}` replaced by `value`.
fn fill(template: &str, value: &str) -> String {
    template.replace("{id}", value)
}

#[tokio::test]
async fn chat_routes_serve_exactly_the_documented_methods() {
    let server = TestServer::start().await;
    let spec = spec();
    let templates: BTreeSet<&str> = spec
        .operations
        .iter()
        .map(|o| o.template.as_str())
        .collect();
    for template in templates {
        for method in METHODS {
            let documented = spec
                .operations
                .iter()
                .any(|o| o.template == template && o.method.eq_ignore_ascii_case(method));
            if documented {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let path = fill(template, "x");
            let response = server
                .http
                .request(method.clone(), server.url(&path))
                .send()
                .await
                .expect("sent");
            assert_eq!(
                response.status().as_u16(),
                405,
                "{method} {template} is not documented, so the server must not serve it"
            );
        }
    }
}

#[tokio::test]
async fn the_docs_page_and_its_assets_are_served_locally() {
    let server = TestServer::start().await;

    // The document, as JSON, is the YAML file.
    let (status, served) =
        chat_common::call(&server, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(&served, &spec().doc, "/openapi.json is spec/openapi.yaml");

    // The page: HTML with a strict policy, no inline script, nothing from another host.
    let response = server
        .http
        .get(server.url("/docs"))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers[CONTENT_TYPE].to_str().expect("ascii").to_owned();
    chat_spec::check_raw(&Method::GET, "/docs", status, &content_type);
    assert_eq!(status, 200);
    let csp = headers[CONTENT_SECURITY_POLICY].to_str().expect("ascii");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let page = response.text().await.expect("page");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "an inline script: {page}");

    // Every script and style sheet the page loads, each with its type and caching.
    let assets: Vec<&str> = page
        .split(['"', '\''])
        .filter(|s| s.starts_with("/docs/assets/"))
        .collect();
    assert_eq!(assets.len(), 4, "{assets:?}");
    for asset in assets.iter().chain(&[
        "/docs/assets/LICENSE",
        "/docs/assets/NOTICE",
        "/docs/assets/swagger-ui-bundle.js.LICENSE.txt",
    ]) {
        let response = server
            .http
            .get(server.url(asset))
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = headers[CONTENT_TYPE].to_str().expect("ascii").to_owned();
        chat_spec::check_raw(&Method::GET, asset, status, &content_type);
        assert_eq!(status, 200, "{asset}");
        let expected = match asset.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            _ => "text/plain; charset=utf-8",
        };
        assert_eq!(content_type, expected, "{asset}");
        assert!(
            headers["cache-control"]
                .to_str()
                .expect("ascii")
                .contains("max-age="),
            "{asset}"
        );
        let body = response.bytes().await.expect("body");
        assert!(!body.is_empty(), "{asset}");

        // Revalidation costs a 304 and no body.
        let etag = headers[ETAG].clone();
        let again = server
            .http
            .get(server.url(asset))
            .header(IF_NONE_MATCH, etag)
            .send()
            .await
            .expect("sent");
        assert_eq!(again.status().as_u16(), 304, "{asset}");
        assert!(again.bytes().await.expect("body").is_empty());
    }
    let init = server
        .http
        .get(server.url("/docs/assets/docs-init.js"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("script");
    assert!(
        init.contains("\"/openapi.json\""),
        "Swagger UI reads /openapi.json"
    );

    // An unknown asset is the Chat API's 404.
    let (status, body) =
        chat_common::call(&server, Method::GET, "/docs/assets/nothing.js", None, None).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}

/// Calls documented operations and remembers which were called, so that the walk can prove it
/// called every one.
struct Walk<'a> {
    server: &'a TestServer,
    called: BTreeSet<(String, String)>,
}

impl<'a> Walk<'a> {
    fn new(server: &'a TestServer) -> Self {
        Self {
            server,
            called: BTreeSet::new(),
        }
    }

    fn record(&mut self, method: &Method, path: &str) {
        let template = spec()
            .template_of(path)
            .unwrap_or_else(|| panic!("{path} is not documented"))
            .to_owned();
        self.called.insert((method.as_str().to_owned(), template));
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.record(&method, path);
        chat_common::call(self.server, method, path, token, body).await
    }

    /// Calls and asserts the status; returns the body.
    async fn expect(
        &mut self,
        status: u16,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let (got, answer) = self.call(method.clone(), path, Some(token), body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        answer
    }

    /// `POST /files` with one PNG; returns the File.
    async fn upload_png(&mut self, token: &str, name: &str) -> Value {
        self.record(&Method::POST, "/files");
        let (status, file) = upload(self.server, token, name, "image/png", png()).await;
        assert_eq!(status, 201, "{file}");
        file
    }
}

/// Opens `GET /ws{query}` with the token in the header: the status of the handshake and the
/// first frame (101), or the error body (any other status).
async fn ws_first_frame(server: &TestServer, token: &str, query: &str) -> (u16, Value) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error, Message};
    let url = format!("{}/ws{query}", server.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().expect("request");
    let bearer = format!("Bearer {token}").parse().expect("header value");
    request.headers_mut().insert("authorization", bearer);
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, response)) => {
            let wait = std::time::Duration::from_secs(15);
            loop {
                let message = tokio::time::timeout(wait, ws.next())
                    .await
                    .expect("a frame in time")
                    .expect("open")
                    .expect("frame");
                if let Message::Text(text) = message {
                    let frame = serde_json::from_str(text.as_str()).expect("JSON frame");
                    return (response.status().as_u16(), frame);
                }
            }
        }
        Err(Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let value = serde_json::from_slice(body).expect("a JSON error");
            (response.status().as_u16(), value)
        }
        Err(e) => panic!("GET /ws: {e}"),
    }
}

/// A small PNG image.
pub fn png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 80, 9]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG");
    out.into_inner()
}

/// `POST /files` (`multipart/form-data` with one `file` part); the answer is checked against
/// the document.
pub async fn upload(
    server: &TestServer,
    token: &str,
    name: &str,
    mime_type: &str,
    data: Vec<u8>,
) -> (u16, Value) {
    const BOUNDARY: &str = "roost-chat-openapi-boundary";
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: {mime_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let response = server
        .http
        .post(server.url("/files"))
        .bearer_auth(token)
        .header(
            CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("upload sent");
    let status = response.status().as_u16();
    let value: Value = response.json().await.expect("JSON answer");
    chat_spec::check_response(&Method::POST, "/files", status, &value);
    (status, value)
}

/// Makes `a` and `b` friends; returns their chat ID.
async fn befriend(walk: &mut Walk<'_>, a: &ChatUser, b: &ChatUser) -> String {
    let body = json!({ "user_id": b.user_id });
    walk.expect(201, Method::POST, "/friends/add", &a.token, Some(body))
        .await;
    let body = json!({ "user_id": a.user_id });
    let friend = walk
        .expect(200, Method::POST, "/friends/accept", &b.token, Some(body))
        .await;
    friend["chat_id"].as_str().expect("chat_id").to_owned()
}

/// Every documented operation, called at least once against a running server: the happy path
/// where it is cheap, and for every operation the 401 without a token and a refused body or
/// parameter. Each answer is checked against the document on the way.
#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let server = TestServer::start_with(|c| {
        c.turn.uris = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        c.turn.shared_secret = Some("walk-secret".into());
    })
    .await;
    let mut walk = Walk::new(&server);
    let get = Method::GET;
    let post = Method::POST;
    let put = Method::PUT;
    let delete = Method::DELETE;

    // Without a token, every operation that needs one is 401 (the WebSocket closes with 4001
    // instead: see chat_ws).
    for op in &spec().operations {
        if !op.secured || op.template == "/ws" {
            continue;
        }
        let method = Method::from_bytes(op.method.as_bytes()).expect("method");
        let path = fill(&op.template, "%40nobody%3Alocalhost");
        let body = (method != get).then(|| json!({}));
        let (status, answer) = walk.call(method.clone(), &path, None, body).await;
        assert_eq!(
            (status, code(&answer)),
            (401, "unauthorized"),
            "{method} {path}"
        );
    }

    // Server.
    let (status, uptime) = walk.call(get.clone(), "/uptime", None, None).await;
    assert_eq!((status, uptime["status"].as_str()), (200, Some("ok")));
    walk.call(get.clone(), "/openapi.json", None, None).await;
    walk.record(&get, "/docs");
    walk.record(&get, "/docs/assets/docs-init.js");

    // Users: sign-up, login, refresh, profile.
    let (status, body) = walk
        .call(
            post.clone(),
            "/signup",
            None,
            Some(json!({ "username": "walker" })),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let signup =
        json!({ "username": "walker", "email": "walker@example.org", "password": PASSWORD });
    let (status, tokens) = walk.call(post.clone(), "/signup", None, Some(signup)).await;
    assert_eq!(status, 201, "{tokens}");
    let alice = ChatUser {
        token: tokens["access_token"].as_str().expect("token").to_owned(),
        refresh_token: tokens["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned(),
        user_id: tokens["user_id"].as_str().expect("user_id").to_owned(),
        username: "walker".into(),
    };
    let bob = chat_common::signup(&server, "walkbob").await;
    let carol = chat_common::signup(&server, "walkcarol").await;
    let verify = json!({ "signup_id": "no-such-signup", "token": "123456" });
    let (status, body) = walk
        .call(post.clone(), "/signup/verify", None, Some(verify))
        .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");

    let login = json!({ "login": "walker@example.org", "password": PASSWORD });
    let (status, logged_in) = walk.call(post.clone(), "/login", None, Some(login)).await;
    assert_eq!(status, 200, "{logged_in}");
    let wrong = json!({ "login": "walker", "password": "not the password" });
    let (status, body) = walk.call(post.clone(), "/login", None, Some(wrong)).await;
    assert_eq!(
        (status, code(&body)),
        (401, "invalid_credentials"),
        "{body}"
    );
    let mfa = json!({ "mfa_token": "no-such-challenge", "code": "123456" });
    let (status, body) = walk.call(post.clone(), "/login/mfa", None, Some(mfa)).await;
    assert_eq!(status, 401, "{body}");
    let refresh = json!({ "refresh_token": logged_in["refresh_token"] });
    let (status, refreshed) = walk
        .call(post.clone(), "/token/refresh", None, Some(refresh))
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let refresh = json!({ "refresh_token": "not-a-refresh-token" });
    let (status, _) = walk
        .call(post.clone(), "/token/refresh", None, Some(refresh))
        .await;
    assert_eq!(status, 401);
    let second = refreshed["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    walk.expect(204, post.clone(), "/logout", &second, None)
        .await;

    walk.expect(200, get.clone(), "/profile", &alice.token, None)
        .await;
    let long_name = json!({ "display_name": "x".repeat(300) });
    walk.expect(400, put.clone(), "/profile", &alice.token, Some(long_name))
        .await;
    let avatar = walk.upload_png(&alice.token, "me.png").await;
    let update = json!({ "display_name": "Walker", "avatar_file_id": avatar["id"], "status_message": "walking" });
    let profile = walk
        .expect(200, put.clone(), "/profile", &alice.token, Some(update))
        .await;
    assert_eq!(profile["display_name"], "Walker");

    let bob_path = format!("/users/{}", enc(&bob.user_id));
    walk.expect(200, get.clone(), &bob_path, &alice.token, None)
        .await;
    walk.expect(404, get.clone(), "/users/nobody", &alice.token, None)
        .await;
    walk.expect(400, get.clone(), "/users/%40%3A", &alice.token, None)
        .await;

    // Blocking.
    let carol_block = format!("/users/{}/block", enc(&carol.user_id));
    walk.expect(204, post.clone(), &carol_block, &alice.token, None)
        .await;
    let blocked = walk
        .expect(200, get.clone(), "/users/blocked", &alice.token, None)
        .await;
    assert_eq!(blocked["users"][0]["user_id"], carol.user_id.as_str());
    walk.expect(204, delete.clone(), &carol_block, &alice.token, None)
        .await;
    let self_block = format!("/users/{}/block", enc(&alice.user_id));
    walk.expect(400, post.clone(), &self_block, &alice.token, None)
        .await;

    // Password reset (no e-mail on this server) and two-factor enrolment.
    let forgot = json!({ "email": "walker@example.org" });
    let (status, body) = walk
        .call(post.clone(), "/password/forgot", None, Some(forgot))
        .await;
    assert_eq!((status, code(&body)), (404, "not_configured"), "{body}");
    let reset = json!({ "token": "not-a-code", "new_password": "another horse battery" });
    let (status, body) = walk
        .call(post.clone(), "/password/reset", None, Some(reset))
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_token"), "{body}");
    let enrolment = walk
        .expect(200, post.clone(), "/mfa/totp", &bob.token, None)
        .await;
    assert!(enrolment["otpauth_uri"].as_str().is_some());
    let wrong_code = json!({ "code": "000000" });
    walk.expect(
        403,
        post.clone(),
        "/mfa/totp/confirm",
        &bob.token,
        Some(wrong_code.clone()),
    )
    .await;
    walk.expect(
        409,
        delete.clone(),
        "/mfa/totp",
        &bob.token,
        Some(wrong_code),
    )
    .await;

    // Friends.
    let to_self = json!({ "user_id": alice.user_id });
    walk.expect(
        400,
        post.clone(),
        "/friends/add",
        &alice.token,
        Some(to_self),
    )
    .await;
    let dm = befriend(&mut walk, &alice, &bob).await;
    let to_carol = json!({ "user_id": carol.username });
    walk.expect(
        201,
        post.clone(),
        "/friends/add",
        &alice.token,
        Some(to_carol),
    )
    .await;
    let requests = walk
        .expect(200, get.clone(), "/friends/requests", &carol.token, None)
        .await;
    assert_eq!(requests["incoming"].as_array().map(Vec::len), Some(1));
    let from_alice = json!({ "user_id": alice.user_id });
    walk.expect(
        204,
        post.clone(),
        "/friends/decline",
        &carol.token,
        Some(from_alice.clone()),
    )
    .await;
    walk.expect(
        404,
        post.clone(),
        "/friends/decline",
        &carol.token,
        Some(from_alice),
    )
    .await;
    let friends = walk
        .expect(200, get.clone(), "/friends", &alice.token, None)
        .await;
    assert_eq!(friends["friends"][0]["chat_id"], dm.as_str());
    let carol_chat = befriend(&mut walk, &carol, &alice).await;

    // Messages, with a picture, a reply, a mention, a reaction, an edit, read status.
    let photo = walk.upload_png(&alice.token, "photo.png").await;
    let text = json!({ "to": bob.user_id, "text": "hello" });
    let hello = walk
        .expect(201, post.clone(), "/messages", &alice.token, Some(text))
        .await;
    let hello_id = hello["id"].as_str().expect("id").to_owned();
    let image = json!({ "to": bob.user_id, "file_id": photo["id"], "text": "look", "reply_to": hello_id, "mentions": [bob.user_id] });
    let picture = walk
        .expect(201, post.clone(), "/messages", &alice.token, Some(image))
        .await;
    assert_eq!(picture["type"], "image");
    let to_stranger = json!({ "to": "nobody-at-all", "text": "hi" });
    let (status, _) = walk
        .call(
            post.clone(),
            "/messages",
            Some(&alice.token),
            Some(to_stranger),
        )
        .await;
    assert!(matches!(status, 403 | 404), "{status}");
    let empty = json!({ "to": bob.user_id });
    walk.expect(400, post.clone(), "/messages", &alice.token, Some(empty))
        .await;

    let conversation = format!("/messages/{}", enc(&bob.user_id));
    let page = walk
        .expect(
            200,
            get.clone(),
            &format!("{conversation}?limit=1"),
            &alice.token,
            None,
        )
        .await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1));
    walk.expect(
        400,
        get.clone(),
        &format!("{conversation}?limit=0"),
        &alice.token,
        None,
    )
    .await;
    let hello_path = format!("/messages/{}", enc(&hello_id));
    let edit = json!({ "text": "hello again" });
    let edited = walk
        .expect(
            200,
            put.clone(),
            &hello_path,
            &alice.token,
            Some(edit.clone()),
        )
        .await;
    assert_eq!(edited["edited"], true);
    walk.expect(403, put.clone(), &hello_path, &bob.token, Some(edit))
        .await;
    let reactions = format!("{hello_path}/reactions");
    let thumbs = json!({ "key": "👍" });
    walk.expect(
        201,
        post.clone(),
        &reactions,
        &bob.token,
        Some(thumbs.clone()),
    )
    .await;
    walk.expect(204, delete.clone(), &reactions, &bob.token, Some(thumbs))
        .await;
    walk.expect(
        400,
        post.clone(),
        &reactions,
        &bob.token,
        Some(json!({ "key": "" })),
    )
    .await;
    let picture_path = format!("/messages/{}", enc(picture["id"].as_str().expect("id")));
    walk.expect(
        204,
        post.clone(),
        &format!("{picture_path}/read"),
        &bob.token,
        None,
    )
    .await;
    let status = walk
        .expect(
            200,
            get.clone(),
            &format!("{picture_path}/status"),
            &alice.token,
            None,
        )
        .await;
    assert_eq!(status["state"], "read", "{status}");
    walk.expect(
        404,
        get.clone(),
        &format!("{picture_path}/status"),
        &carol.token,
        None,
    )
    .await;
    walk.expect(204, delete.clone(), &hello_path, &alice.token, None)
        .await;

    // Files.
    let files = walk
        .expect(
            200,
            get.clone(),
            &format!("/chats/{}/files", enc(&dm)),
            &alice.token,
            None,
        )
        .await;
    assert_eq!(files["files"][0]["id"], photo["id"]);
    walk.expect(
        404,
        get.clone(),
        &format!("/chats/{}/files", enc(&dm)),
        &carol.token,
        None,
    )
    .await;
    let spare = walk.upload_png(&alice.token, "spare.png").await;
    let spare_path = format!("/files/{}", spare["id"].as_str().expect("id"));
    walk.expect(403, delete.clone(), &spare_path, &bob.token, None)
        .await;
    walk.expect(204, delete.clone(), &spare_path, &alice.token, None)
        .await;

    // A group with a picture.
    let picture = walk.upload_png(&alice.token, "group.png").await;
    let create = json!({ "name": "Study group", "topic": "exams", "picture_file_id": picture["id"], "members": [bob.user_id] });
    let group = walk
        .expect(201, post.clone(), "/groups", &alice.token, Some(create))
        .await;
    assert!(group["picture_url"].is_string(), "{group}");
    walk.expect(
        400,
        post.clone(),
        "/groups",
        &alice.token,
        Some(json!({ "name": "", "members": [] })),
    )
    .await;
    let group_id = group["id"].as_str().expect("id").to_owned();
    let group_path = format!("/groups/{}", enc(&group_id));
    walk.expect(200, get.clone(), "/groups", &bob.token, None)
        .await;
    walk.expect(
        200,
        post.clone(),
        &format!("{group_path}/join"),
        &bob.token,
        None,
    )
    .await;
    walk.expect(200, get.clone(), &group_path, &bob.token, None)
        .await;
    walk.expect(404, get.clone(), &group_path, &carol.token, None)
        .await;
    let rename = json!({ "name": "Exam prep" });
    walk.expect(
        403,
        put.clone(),
        &group_path,
        &bob.token,
        Some(rename.clone()),
    )
    .await;
    walk.expect(200, put.clone(), &group_path, &alice.token, Some(rename))
        .await;
    let add_carol = json!({ "user_id": carol.user_id });
    walk.expect(
        200,
        post.clone(),
        &format!("{group_path}/add"),
        &alice.token,
        Some(add_carol.clone()),
    )
    .await;
    walk.expect(
        409,
        post.clone(),
        &format!("{group_path}/add"),
        &alice.token,
        Some(add_carol.clone()),
    )
    .await;
    walk.expect(
        200,
        post.clone(),
        &format!("{group_path}/remove"),
        &alice.token,
        Some(add_carol),
    )
    .await;
    let promote = json!({ "user_id": bob.user_id, "admin": true });
    let promoted = walk
        .expect(
            200,
            post.clone(),
            &format!("{group_path}/admins"),
            &alice.token,
            Some(promote),
        )
        .await;
    assert!(
        promoted["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["role"] == "admin")
    );
    let to_group = json!({ "to": group_id, "text": "welcome @walkbob", "mentions": [bob.user_id] });
    walk.expect(201, post.clone(), "/messages", &alice.token, Some(to_group))
        .await;
    let group_messages = format!("/messages/group/{}", enc(&group_id));
    walk.expect(200, get.clone(), &group_messages, &bob.token, None)
        .await;
    walk.expect(404, get.clone(), &group_messages, &carol.token, None)
        .await;
    walk.expect(
        204,
        post.clone(),
        &format!("{group_path}/leave"),
        &bob.token,
        None,
    )
    .await;

    // Notifications.
    let feed = walk
        .expect(
            200,
            get.clone(),
            "/notifications?unread=true",
            &bob.token,
            None,
        )
        .await;
    assert!(
        feed["unread_count"].as_u64().is_some_and(|n| n > 0),
        "{feed}"
    );
    walk.expect(
        400,
        get.clone(),
        "/notifications?limit=101",
        &bob.token,
        None,
    )
    .await;
    walk.expect(
        204,
        post.clone(),
        "/notifications/read",
        &bob.token,
        Some(json!({ "all": true })),
    )
    .await;
    walk.expect(
        400,
        post.clone(),
        "/notifications/read",
        &bob.token,
        Some(json!({ "ids": "x" })),
    )
    .await;

    // A call, and the log.
    let offer = json!({ "to": bob.user_id, "kind": "voice", "sdp_offer": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" });
    let call = walk
        .expect(201, post.clone(), "/call/start", &alice.token, Some(offer))
        .await;
    let call_id = call["id"].as_str().expect("id").to_owned();
    walk.expect(
        400,
        post.clone(),
        "/call/start",
        &alice.token,
        Some(json!({ "to": bob.user_id, "kind": "hologram", "sdp_offer": "v=0" })),
    )
    .await;
    let candidates = json!({ "call_id": call_id, "candidates": [{ "candidate": "candidate:1 1 UDP 1 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0 }] });
    walk.expect(
        204,
        post.clone(),
        "/call/candidates",
        &alice.token,
        Some(candidates),
    )
    .await;
    let answer = json!({ "call_id": call_id, "sdp_answer": "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" });
    let answered = walk
        .expect(200, post.clone(), "/call/answer", &bob.token, Some(answer))
        .await;
    assert_eq!(answered["outcome"], "ongoing");
    let end = json!({ "call_id": call_id });
    let ended = walk
        .expect(200, post.clone(), "/call/end", &alice.token, Some(end))
        .await;
    assert_eq!(ended["outcome"], "completed");
    walk.expect(
        404,
        post.clone(),
        "/call/end",
        &carol.token,
        Some(json!({ "call_id": call_id })),
    )
    .await;
    let log = walk
        .expect(200, get.clone(), "/calls", &bob.token, None)
        .await;
    assert_eq!(log["calls"][0]["id"], call_id.as_str());
    let turn = walk
        .expect(200, get.clone(), "/call/turn", &bob.token, None)
        .await;
    assert_eq!(turn["uris"][0], "turn:127.0.0.1:3478?transport=udp");

    // Friends end: the chat ends for both.
    let remove = json!({ "user_id": alice.user_id });
    walk.expect(
        204,
        post.clone(),
        "/friends/remove",
        &carol.token,
        Some(remove),
    )
    .await;
    walk.expect(
        404,
        get.clone(),
        &format!("/chats/{}/files", enc(&carol_chat)),
        &carol.token,
        None,
    )
    .await;

    // Every operation that takes a JSON body refuses one that is not an object.
    for op in &spec().operations {
        let raw = &spec().doc["paths"][&op.template][op.method.to_lowercase()];
        let takes_json = raw["requestBody"]["content"]
            .get("application/json")
            .is_some();
        if !takes_json || !op.secured {
            continue;
        }
        let method = Method::from_bytes(op.method.as_bytes()).expect("method");
        let path = fill(&op.template, &enc(&group_id));
        let (status, answer) = walk
            .call(
                method.clone(),
                &path,
                Some(&alice.token),
                Some(json!(["not", "an", "object"])),
            )
            .await;
        assert_eq!(
            (status, code(&answer)),
            (400, "invalid_request"),
            "{method} {path}"
        );
    }

    // The WebSocket: the upgrade and its first frame, a bad cursor, a plain request.
    walk.record(&get, "/ws");
    let (status, ready) = ws_first_frame(&server, &alice.token, "").await;
    assert_eq!(status, 101);
    assert_eq!(ready["type"], "ready", "{ready}");
    chat_spec::check_schema("WsServerFrame", &ready);
    let (status, body) = ws_first_frame(&server, &alice.token, "?cursor=not-a-cursor").await;
    chat_spec::check_response(&get, "/ws", status, &body);
    assert_eq!((status, code(&body)), (400, "invalid_request"));
    let (status, body) =
        chat_common::call(&server, get.clone(), "/ws", Some(&alice.token), None).await;
    assert_eq!((status, code(&body)), (426, "upgrade_required"));

    let missed: Vec<_> = spec()
        .operations
        .iter()
        .map(|op| (op.method.clone(), op.template.clone()))
        .filter(|key| !walk.called.contains(key))
        .collect();
    assert!(
        missed.is_empty(),
        "operations the walk did not call: {missed:?}"
    );
}
