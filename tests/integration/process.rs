//! The `roost` binary as a process: durability across `kill -9`, graceful shutdown on SIGTERM,
//! the admin CLI against a stopped server, and config errors.

use std::time::Duration;

use serde_json::json;

use crate::child::{ServerProcess, roost};
use crate::common::{PASSWORD, errcode};

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let mut child = ServerProcess::start(data.path());
    let api = child.api();
    let (access, _) = api.register("alice").await;
    let (status, _) = api
        .put(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            Some(&access),
            json!({ "displayname": "Alice Survivor" }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, room) = api
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&access),
            json!({ "name": "kept" }),
        )
        .await;
    assert_eq!(status, 200);
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let (status, _) = api
        .put(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1"),
            Some(&access),
            json!({ "msgtype": "m.text", "body": "acknowledged" }),
        )
        .await;
    assert_eq!(status, 200);
    child.kill(); // SIGKILL: no shutdown path runs.

    let mut child = ServerProcess::start(data.path());
    let api = child.api();
    let (status, profile) = api
        .get("/_matrix/client/v3/profile/@alice:localhost", Some(&access))
        .await;
    assert_eq!(status, 200, "the access token survived too");
    assert_eq!(profile["displayname"], "Alice Survivor");
    assert_eq!(api.login("alice", PASSWORD).await.0, 200);
    let (_, history) = api
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=5"),
            Some(&access),
        )
        .await;
    assert_eq!(history["chunk"][0]["content"]["body"], "acknowledged");

    // SIGTERM: a graceful stop with exit status 0.
    assert!(child.terminate(Duration::from_secs(10)).success());
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

    let mut child = ServerProcess::start(data.path());
    let api = child.api();
    assert_eq!(api.login("dave", &generated).await.0, 200);
    // The store is locked while the server runs.
    let (ok, out) = run(&["user", "list"]);
    assert!(!ok && out.contains("in use"), "{out}");
    child.kill();

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

    let mut child = ServerProcess::start(data.path());
    let api = child.api();
    assert_eq!(api.login("dave", &generated).await.0, 403);
    assert_eq!(api.login("dave", "another password").await.0, 200);
    let (status, body) = api.login("root", PASSWORD).await;
    assert_eq!((status, errcode(&body)), (403, "M_USER_DEACTIVATED"));
    child.kill();
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
