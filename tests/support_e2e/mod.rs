//! Running an example server as its own process for the end-to-end tests.
#![allow(dead_code)]

#[path = "../adapter_suite/http.rs"]
mod http;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use self::http::Client;

/// The binary of `example`, built by `cargo test` beside the test; built here (with
/// `features`) if missing, for example under `cargo test --test e2e_server`.
fn example_binary(example: &str, features: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("examples").join(example);
    if !binary.exists() {
        let target_dir = profile_dir.parent().expect("target dir");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", example, "--features", features])
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
pub struct Running {
    child: Option<Child>,
    pub addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
}

impl Running {
    /// Starts `example` (built with `features`) on the data folder `data`, on a free port.
    pub fn start(example: &str, features: &str, data: &Path) -> Running {
        Running::start_with(example, features, data, &[])
    }

    /// [`start`](Self::start) with more environment variables (and without the Redis
    /// ones unless given).
    pub fn start_with(example: &str, features: &str, data: &Path, env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(example_binary(example, features))
            .env("SESSILE_DATA", data)
            .env("SESSILE_ADDR", "127.0.0.1:0")
            .env_remove("SESSILE_COOKIE_KEY")
            .env_remove("SESSILE_REDIS_URL")
            .env_remove("SESSILE_REDIS_NAMESPACE")
            .envs(env.iter().copied())
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

    /// Sends the server the signal `name` (`USR1`, ...).
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// The next line the server prints that holds `needle` (waiting up to a minute).
    pub fn line_with(&self, needle: &str) -> String {
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
    pub fn terminate(mut self) {
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
