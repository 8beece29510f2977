//! The `roost` binary as a process: durability across `kill -9`, graceful shutdown on SIGTERM,
//! the admin CLI against a stopped server, and config errors.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::common::{PASSWORD, errcode, token};

const BIN: &str = env!("CARGO_BIN_EXE_roost");

fn roost(data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("ROOST_LISTEN", "127.0.0.1:0")
        .env("ROOST_DATA_DIR", data)
        .env("ROOST_RATE_LIMITS__ENABLED", "false")
        .env("ROOST_LOG_LEVEL", "warn");
    cmd
}

/// A server process that is killed when the test ends, even by a failed assertion.
struct ServerProcess(Child);

impl ServerProcess {
    fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()?;
        self.0.wait().map(|_| ())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `roost serve` and reads the address it listens on.
fn spawn_server(data: &Path) -> (ServerProcess, String) {
    let mut child = roost(data)
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
    let base = line
        .trim()
        .strip_prefix("roost: listening on ")
        .unwrap_or_else(|| panic!("unexpected output: {line}"))
        .to_owned();
    (ServerProcess(child), base)
}

async fn post(
    base: &str,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or_default(),
    )
}

async fn login(base: &str, user: &str, password: &str) -> (u16, serde_json::Value) {
    post(
        base,
        "/_matrix/client/v3/login",
        None,
        json!({ "type": "m.login.password", "user": user, "password": password }),
    )
    .await
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_server(data.path());
    let (status, alice) = post(
        &base,
        "/_matrix/client/v3/register",
        None,
        json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
    )
    .await;
    assert_eq!(status, 200);
    let access = token(&alice);
    let resp = reqwest::Client::new()
        .put(format!(
            "{base}/_matrix/client/v3/profile/@alice:localhost/displayname"
        ))
        .bearer_auth(&access)
        .json(&json!({ "displayname": "Alice Survivor" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, room) = post(
        &base,
        "/_matrix/client/v3/createRoom",
        Some(&access),
        json!({ "name": "kept" }),
    )
    .await;
    assert_eq!(status, 200);
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let resp = reqwest::Client::new()
        .put(format!(
            "{base}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1"
        ))
        .bearer_auth(&access)
        .json(&json!({ "msgtype": "m.text", "body": "acknowledged" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    child.kill().unwrap(); // SIGKILL: no shutdown path runs.

    let (mut child, base) = spawn_server(data.path());
    let resp = reqwest::Client::new()
        .get(format!("{base}/_matrix/client/v3/profile/@alice:localhost"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the access token survived too");
    let profile: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(profile["displayname"], "Alice Survivor");
    assert_eq!(login(&base, "alice", PASSWORD).await.0, 200);
    let history: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{base}/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=5"
        ))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["chunk"][0]["content"]["body"], "acknowledged");

    // SIGTERM: a graceful stop with exit status 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.0.wait().unwrap().success());
}

#[tokio::test]
async fn admin_cli_works_on_a_stopped_server() {
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = roost(data.path()).args(args).output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = run(&["user", "create", "root", "--password", PASSWORD, "--admin"]);
    assert!(ok, "{out}");
    assert!(out.contains("@root:localhost"));
    let (ok, out) = run(&["user", "create", "dave"]);
    assert!(ok, "{out}");
    let generated = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .to_owned();
    let (ok, out) = run(&["user", "create", "dave", "--password", PASSWORD]);
    assert!(!ok && out.contains("already taken"), "{out}");
    let (ok, out) = run(&["user", "create", "Bad Name", "--password", PASSWORD]);
    assert!(!ok, "{out}");
    let (ok, out) = run(&["user", "list"]);
    assert!(
        ok && out.contains("@root:localhost\tadmin") && out.contains("@dave:localhost"),
        "{out}"
    );
    let (ok, out) = run(&[
        "registration-token",
        "create",
        "--token",
        "abc",
        "--uses",
        "2",
    ]);
    assert!(ok && out.trim() == "abc", "{out}");

    let (mut child, base) = spawn_server(data.path());
    assert_eq!(login(&base, "dave", &generated).await.0, 200);
    // The store is locked while the server runs.
    let (ok, out) = run(&["user", "list"]);
    assert!(!ok && out.contains("in use"), "{out}");
    child.kill().unwrap();

    let (ok, out) = run(&[
        "user",
        "reset-password",
        "dave",
        "--password",
        "another password",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["user", "deactivate", "@root:localhost"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["user", "make-admin", "nobody"]);
    assert!(!ok && out.contains("no such user"), "{out}");

    let (mut child, base) = spawn_server(data.path());
    assert_eq!(login(&base, "dave", &generated).await.0, 403);
    assert_eq!(login(&base, "dave", "another password").await.0, 200);
    let (status, body) = login(&base, "root", PASSWORD).await;
    assert_eq!((status, errcode(&body)), (403, "M_USER_DEACTIVATED"));
    child.kill().unwrap();
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roost.toml");
    std::fs::write(&file, "server_name = \"example.org\"\n[smtp]\nprot = 25\n").unwrap();
    let out = roost(dir.path())
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smtp.prot"), "{err}");

    let out = roost(dir.path())
        .env("ROOST_RATE_LIMITS__ENABLED", "sometimes")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate_limits.enabled"));

    std::fs::write(&file, "server_name = \"example.org\"\n").unwrap();
    let out = roost(dir.path())
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("example.org"));
}
