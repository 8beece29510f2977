//! The built `roost` binary as a child process (for the tests that kill it, signal it or limit
//! its files), and plain HTTP helpers against its base URL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{PASSWORD, token};

pub const BIN: &str = env!("CARGO_BIN_EXE_roost");

/// The `roost` command with a clean environment: the data directory, loopback port 0, rate
/// limits off.
pub fn roost(data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("ROOST_LISTEN", "127.0.0.1:0")
        .env("ROOST_DATA_DIR", data)
        .env("ROOST_RATE_LIMITS__ENABLED", "false")
        .env("ROOST_LOG_LEVEL", "warn");
    cmd
}

/// A `roost serve` process, killed (SIGKILL) when dropped, even by a failed assertion.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl ServerProcess {
    /// Starts `roost serve` on a free loopback port.
    pub fn start(data: &Path) -> Self {
        Self::start_on(data, "127.0.0.1:0")
    }

    /// Starts `roost serve` listening on `listen` and waits until it does.
    pub fn start_on(data: &Path, listen: &str) -> Self {
        let mut child = roost(data)
            .env("ROOST_LISTEN", listen)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("roost serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("first line");
        let Some(base) = line.trim().strip_prefix("roost: listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected output: {line:?}");
        };
        let base = base.to_owned();
        Self { child, base }
    }

    /// The address it listens on (`127.0.0.1:<port>`), to start the next process on.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: sends a signal to our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sets the process's soft RLIMIT_FSIZE (`None`: back to the hard limit): writes that would
    /// grow a file beyond it fail with EFBIG, as on a full disk.
    pub fn set_file_size_limit(&self, limit: Option<u64>) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads the limit of our own child into a local struct.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut current) };
        assert_eq!(rc, 0, "prlimit get");
        let new = libc::rlimit {
            rlim_cur: limit.unwrap_or(current.rlim_max).min(current.rlim_max),
            rlim_max: current.rlim_max,
        };
        // SAFETY: sets the limit of our own child from a local struct.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit set");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plain HTTP against a base URL.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request; `Err` when no answer arrived (the server is down or died meanwhile).
    pub async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.try_call(method, path, token, body)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, token, Some(body))
            .await
    }

    /// Registers `username` (dummy auth); returns the access token and the user ID.
    pub async fn register(&self, username: &str) -> (String, String) {
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
        let user_id = body["user_id"].as_str().expect("user_id").to_owned();
        (token(&body), user_id)
    }

    pub async fn login(&self, user: &str, password: &str) -> (u16, Value) {
        self.post(
            "/_matrix/client/v3/login",
            None,
            json!({ "type": "m.login.password", "user": user, "password": password }),
        )
        .await
    }
}
