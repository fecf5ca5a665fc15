//! End to end: `examples/server.rs` run as its own process, driven over HTTP with a
//! cookie jar, stopped with SIGTERM and started again on the same folder. The session,
//! its user and its visit count must survive; logout and "log out other devices" must
//! stick.

#![cfg(all(unix, feature = "tower"))]

#[path = "adapter_suite/http.rs"]
mod http;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use self::http::Client;

/// The example binary, built by `cargo test` beside this test; built here if missing
/// (for example under `cargo test --test e2e_server`).
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("examples").join("server");
    if !binary.exists() {
        let target_dir = profile_dir.parent().expect("target dir");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "server", "--features", "tower"])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the example server failed");
    }
    binary
}

/// A running example server; killed (SIGKILL) if the test fails before stopping it.
struct Running {
    child: Option<Child>,
    addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
}

impl Running {
    fn start(data: &Path) -> Running {
        let mut child = Command::new(server_binary())
            .env("SESSILE_DATA", data)
            .env("SESSILE_ADDR", "127.0.0.1:0")
            .env_remove("SESSILE_COOKIE_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example server");
        let out = child.stdout.take().expect("stdout");
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Running {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout,
        };
        let line = running.line_with("listening on http://");
        running.addr = line
            .trim_start_matches("listening on http://")
            .parse()
            .expect("address in the banner");
        running
    }

    fn line_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("server never printed {needle:?}: {e}"),
            }
        }
    }

    /// SIGTERM, then wait for a clean exit that reports the flush.
    fn terminate(mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.line_with("sessions flushed");
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = child.try_wait().expect("wait") {
                break exit;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(exit.success(), "server exited with {exit}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn sessions_survive_a_sigterm_restart_of_the_example_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    let server = Running::start(&data);
    let mut laptop = Client::new(server.addr);
    assert_eq!(laptop.get("/").json(), json!({ "user": null, "visits": 1 }));
    assert_eq!(laptop.get("/").json(), json!({ "user": null, "visits": 2 }));
    let anonymous = laptop.clone();
    let login = laptop.post_form("/login", "user=alice");
    assert_eq!(login.status, 200, "{login:?}");
    assert_ne!(
        laptop.cookie("id"),
        anonymous.cookie("id"),
        "login rotates the ID"
    );
    assert_eq!(
        laptop.get("/").json(),
        json!({ "user": "alice", "visits": 3 })
    );
    // The last write right before the signal must survive it.
    assert_eq!(laptop.post_form("/login", "user=alice").status, 200);
    server.terminate();

    let key = std::fs::metadata(data.join("cookie-key")).expect("key file");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );

    let server = Running::start(&data);
    laptop.addr = server.addr;
    assert_eq!(
        laptop.get("/").json(),
        json!({ "user": "alice", "visits": 4 })
    );
    let mut old = anonymous;
    old.addr = server.addr;
    assert_eq!(
        old.get("/").json(),
        json!({ "user": null, "visits": 1 }),
        "the pre-login ID stays dead"
    );

    let mut phone = Client::new(server.addr);
    let remembered = phone.post_form("/login", "user=alice&remember=on");
    assert_eq!(
        remembered.json()["remembered"],
        json!(true),
        "{remembered:?}"
    );
    let devices = laptop.get("/devices").json();
    let list = devices["devices"].as_array().expect("a list");
    assert_eq!(list.len(), 2, "{devices}");
    // "Remember me" idles out after 30 days, the laptop's login after 30 minutes.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut left: Vec<u64> = list
        .iter()
        .map(|d| d["expires_at"].as_u64().expect("seconds") - now)
        .collect();
    left.sort_unstable();
    assert!(left[0] <= 30 * 60, "{devices}");
    assert!(left[1] > 29 * 86_400, "{devices}");
    assert_eq!(
        list.iter().filter(|d| d["current"] == json!(true)).count(),
        1
    );
    assert_eq!(
        laptop.post("/logout-others").json(),
        json!({ "user": "alice", "destroyed": 1 })
    );
    assert_eq!(
        phone.get("/").json()["user"],
        json!(null),
        "phone logged out"
    );

    let before_logout = laptop.clone();
    assert_eq!(laptop.post("/logout").status, 200);
    server.terminate();

    let server = Running::start(&data);
    let mut replay = before_logout;
    replay.addr = server.addr;
    assert_eq!(
        replay.get("/").json(),
        json!({ "user": null, "visits": 1 }),
        "a logout survives the restart"
    );
    server.terminate();
}
