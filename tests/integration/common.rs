//! Shared helpers: start a real server on an ephemeral loopback port with a temporary data
//! directory, register users over HTTP, run a real SMTP server.

use std::path::PathBuf;
use std::time::Duration;

use roost::Config;
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery";

pub struct TestServer {
    pub server: Option<roost::Server>,
    pub base: String,
    pub http: reqwest::Client,
    pub data: tempfile::TempDir,
}

/// A config for tests: loopback port 0, a temporary data directory, rate limits off.
pub fn test_config(data_dir: PathBuf) -> Config {
    let mut config = Config {
        listen: vec!["127.0.0.1:0".into()],
        data_dir,
        log_level: "warn".into(),
        ..Config::default()
    };
    config.rate_limits.enabled = false;
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(data.path().to_path_buf());
        configure(&mut config);
        let server = roost::start(config).await.expect("server starts");
        let base = server.base_url();
        Self {
            server: Some(server),
            base,
            http: reqwest::Client::new(),
            data,
        }
    }

    /// A plain HTTP client of its client API.
    pub fn api(&self) -> crate::child::Api {
        crate::child::Api {
            base: self.base.clone(),
            http: self.http.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; returns the status and the JSON body (Null if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api().call(method, path, token, body).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// Registers with the dummy stage; returns the login response.
    pub async fn register(&self, username: &str) -> Value {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({
                    "username": username,
                    "password": PASSWORD,
                    "auth": { "type": "m.login.dummy" },
                }),
            )
            .await;
        assert_eq!(status, 200, "register {username}: {body}");
        body
    }

    pub async fn login(&self, username: &str, password: &str) -> (u16, Value) {
        self.post(
            "/_matrix/client/v3/login",
            None,
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": username },
                "password": password,
            }),
        )
        .await
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A registered user of a test server.
pub struct User {
    pub token: String,
    pub id: String,
}

/// Registers `name` and returns its token and ID.
pub async fn user(server: &TestServer, name: &str) -> User {
    let body = server.register(name).await;
    User {
        token: token(&body),
        id: body["user_id"].as_str().expect("user_id").to_owned(),
    }
}

/// Creates a room with the given `createRoom` body; returns its ID.
pub async fn create_room(server: &TestServer, u: &User, body: Value) -> String {
    let (status, resp) = server
        .post("/_matrix/client/v3/createRoom", Some(&u.token), body)
        .await;
    assert_eq!(status, 200, "{resp}");
    resp["room_id"].as_str().expect("room_id").to_owned()
}

/// Sends an `m.text` message with a transaction ID.
pub async fn send_text(
    server: &TestServer,
    u: &User,
    room: &str,
    txn: &str,
    body: &str,
) -> (u16, Value) {
    server
        .call(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(&u.token),
            Some(json!({ "msgtype": "m.text", "body": body })),
        )
        .await
}

/// A `/sync` running in the background with the given query string (it should carry `since` and
/// `timeout`): resolves to (time taken, body).
pub fn spawn_long_poll(
    server: &TestServer,
    token: &str,
    query: &str,
) -> tokio::task::JoinHandle<(Duration, Value)> {
    let http = server.http.clone();
    let url = server.url(&format!("/_matrix/client/v3/sync?{query}"));
    let token = token.to_owned();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let body: Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("sync sent")
            .json()
            .await
            .expect("sync answer");
        (started.elapsed(), body)
    })
}

/// Joins a room by ID (`POST /rooms/{id}/join`).
pub async fn join(server: &TestServer, u: &User, room: &str) -> (u16, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&u.token),
            json!({}),
        )
        .await
}

/// Sets the user's typing state in a room (`timeout` in ms).
pub async fn set_typing(
    server: &TestServer,
    u: &User,
    room: &str,
    typing: bool,
    timeout: Option<u64>,
) -> (u16, Value) {
    let mut body = json!({ "typing": typing });
    if let Some(timeout) = timeout {
        body["timeout"] = json!(timeout);
    }
    server
        .call(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", u.id),
            Some(&u.token),
            Some(body),
        )
        .await
}

/// Sends a receipt of `kind` for `event` (`POST /rooms/{id}/receipt/{kind}/{event}`).
pub async fn send_receipt(
    server: &TestServer,
    u: &User,
    room: &str,
    kind: &str,
    event: &str,
    body: Value,
) -> (u16, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/{kind}/{event}"),
            Some(&u.token),
            body,
        )
        .await
}

pub fn token(body: &Value) -> String {
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

pub fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or("")
}

/// A real SMTP server (aiosmtpd, a separate process) on a loopback port, delivering into a
/// Maildir that tests read.
pub struct SmtpServer {
    pub port: u16,
    child: std::process::Child,
    maildir: tempfile::TempDir,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let maildir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
        // Wait until it accepts connections (bounded).
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    port,
                    child,
                    maildir,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the SMTP test server did not start (is aiosmtpd installed?)");
    }

    fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail").join("new");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, String)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((modified, std::fs::read_to_string(e.path()).ok()?))
            })
            .collect();
        files.sort_by_key(|(t, _)| *t);
        files.into_iter().map(|(_, m)| m).collect()
    }

    /// Waits (bounded) for the n-th message to `to` (1-based) and returns it, decoded.
    pub async fn wait_for_message(&self, to: &str, nth: usize) -> String {
        for _ in 0..200 {
            let found: Vec<String> = self
                .messages()
                .into_iter()
                .filter(|m| m.contains(to))
                .collect();
            if found.len() >= nth {
                return decode_quoted_printable(&found[nth - 1]);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no e-mail to {to} arrived");
    }

    /// How many messages were delivered to `to`.
    pub fn count_for(&self, to: &str) -> usize {
        self.messages().iter().filter(|m| m.contains(to)).count()
    }

    pub fn configure(&self, config: &mut Config) {
        config.smtp.host = Some("127.0.0.1".into());
        config.smtp.port = self.port;
        config.smtp.security = roost::config::SmtpSecurity::None;
        config.smtp.from = "Roost <noreply@localhost>".into();
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn decode_quoted_printable(raw: &str) -> String {
    let joined = raw.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds the value of a query parameter in the first link of an e-mail.
pub fn link_param(mail: &str, name: &str) -> String {
    let start = mail.find("http://").expect("a link in the e-mail");
    let link: String = mail[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let url = url::Url::parse(&link).expect("valid link");
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("{name} in {link}"))
}

pub fn link(mail: &str) -> String {
    let start = mail.find("http://").expect("a link in the e-mail");
    mail[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect()
}
