//! Which backend a test's store lives on, and a real redis-server for the Redis runs: the
//! one `.ci/run` starts (`SESSILE_TEST_REDIS_URL`), or one this test binary starts on a
//! free loopback port, in a temporary folder, without persistence. It stops when the test
//! binary exits.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether the suites run on Redis: `SESSILE_TEST_BACKEND=redis` (`.ci/run` runs them
/// both ways).
pub fn on_redis() -> bool {
    std::env::var("SESSILE_TEST_BACKEND").is_ok_and(|b| b == "redis")
}

/// The default settings for a store "in" `path`: that folder, or on Redis a namespace
/// named after it (so reopening the same path reopens the same store).
pub fn config_at(path: impl AsRef<std::path::Path>) -> sessile::Config {
    if !on_redis() {
        return sessile::Config::new(path);
    }
    redis_config(&namespace_of(path.as_ref()))
}

/// The settings for namespace `ns` on the shared test server.
#[cfg(feature = "redis")]
pub fn redis_config(ns: &str) -> sessile::Config {
    let url = shared_url().expect("SESSILE_TEST_BACKEND=redis needs redis-server");
    sessile::Config::redis(url).redis_namespace(ns)
}

#[cfg(not(feature = "redis"))]
pub fn redis_config(_ns: &str) -> sessile::Config {
    panic!("SESSILE_TEST_BACKEND=redis needs --features redis")
}

fn namespace_of(path: &std::path::Path) -> String {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(path);
    format!("t{h:016x}")
}

/// A redis-server (or redis-sentinel) this process started, stopped when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    program: &'static str,
    _dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts redis-server on `port` (a free one if `None`), or `None` if the binary is
    /// missing outside CI. In CI a missing server fails the test.
    pub fn start(port: Option<u16>) -> Option<RedisServer> {
        RedisServer::start_with(port, &[])
    }

    /// [`start`](Self::start) with more `redis-server` arguments.
    pub fn start_with(port: Option<u16>, extra: &[String]) -> Option<RedisServer> {
        if !installed("redis-server", "redis-server") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer::start_in(port, dir.path(), extra);
        server._dir = Some(dir);
        Some(server)
    }

    /// A redis-server with its files in `dir` (which outlives it, so a server started
    /// again in it reads what this one wrote). Persistence is off unless `extra` turns
    /// it on. Call [`installed`] first.
    pub fn start_in(port: Option<u16>, dir: &std::path::Path, extra: &[String]) -> RedisServer {
        let port = port.unwrap_or_else(free_port);
        let mut args: Vec<String> = ["--save", "", "--appendonly", "no", "--daemonize", "no"]
            .map(String::from)
            .to_vec();
        args.extend(["--dir".into(), dir.to_str().expect("utf-8 dir").into()]);
        args.extend(extra.iter().cloned());
        RedisServer::spawn("redis-server", port, &args)
    }

    /// A redis-sentinel watching the primary on `primary_port` under the name `master`
    /// (quorum 2, down after 1 s), or `None` if redis-sentinel is missing outside CI.
    pub fn start_sentinel(primary_port: u16, master: &str) -> Option<RedisServer> {
        if !installed("redis-sentinel", "redis-sentinel") {
            return None;
        }
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {master} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {master} 1000\n\
                 sentinel failover-timeout {master} 4000\n\
                 sentinel parallel-syncs {master} 1\n"
            ),
        )
        .expect("sentinel.conf");
        let mut sentinel = RedisServer::spawn(
            "redis-sentinel",
            port,
            &[
                conf.to_str().expect("utf-8 dir").into(),
                "--dir".into(),
                dir.path().to_str().expect("utf-8 dir").into(),
            ],
        );
        sentinel._dir = Some(dir);
        Some(sentinel)
    }

    /// Runs `program` on `port` with `args` (a redis-sentinel config file first, as it
    /// wants), under a shell that stops it when this process ends, even if it dies: it
    /// watches its parent (this test binary).
    fn spawn(program: &'static str, port: u16, args: &[String]) -> RedisServer {
        let (config, rest) = match args.first() {
            Some(first) if !first.starts_with("--") => (vec![first.clone()], &args[1..]),
            _ => (Vec::new(), args),
        };
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{program} \"$@\" & r=$!; \
                 while kill -0 $PPID 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.2; done; \
                 kill $r 2>/dev/null"
            ))
            .arg("sh")
            .args(config)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--daemonize", "no"])
            .args(rest)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        wait_for_pong(port);
        RedisServer {
            port,
            child,
            program,
            _dir: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (as a crash would: SIGKILL) and waits until its port is closed.
    pub fn kill(mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl RedisServer {
    /// SIGKILLs the server and the shell that watches it.
    fn stop(&mut self) {
        let _ = Command::new("pkill")
            .args([
                "-KILL",
                "-f",
                &format!("{} 127.0.0.1:{}", self.program, self.port),
            ])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A redis-server replicating `primary`, returned once it is in sync
/// (`master_link_status:up`, within 30 s).
#[cfg(feature = "redis")]
pub fn start_replica(primary: &RedisServer) -> RedisServer {
    let replica = RedisServer::start_with(
        None,
        &[
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
        ],
    )
    .expect("replica");
    let mut conn = redis::Client::open(replica.url())
        .expect("client")
        .get_connection()
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut conn)
            .expect("info");
        if info.contains("master_link_status:up") {
            return replica;
        }
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes the server at `url` one that may evict keys: `maxmemory-policy` `policy` with a
/// memory limit (without one nothing is evicted).
#[cfg(feature = "redis")]
pub fn make_evicting(url: &str, policy: &str) {
    let client = redis::Client::open(url).expect("client");
    let mut conn = client.get_connection().expect("connect");
    for (name, value) in [("maxmemory-policy", policy), ("maxmemory", "1gb")] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut conn)
            .expect("config set");
    }
}

/// Certificates made with `openssl` for a TLS test: a CA and a server and a client
/// certificate it signed, and another CA nobody trusts.
pub struct Certificates {
    pub dir: tempfile::TempDir,
}

impl Certificates {
    /// Makes them in a temporary folder, or `None` (skip) if `openssl` is missing outside
    /// CI.
    pub fn make() -> Option<Certificates> {
        if Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            assert!(std::env::var_os("CI").is_none(), "openssl is not installed");
            eprintln!("openssl not installed: skipping the TLS test");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-subj",
                &format!("/CN={ca}"),
            ]);
        }
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write ext");
        for leaf in ["server", "client"] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{leaf}.key"),
                "-out",
                &format!("{leaf}.csr"),
                "-subj",
                &format!("/CN={leaf}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{leaf}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{leaf}.crt"),
                "-extfile",
                "ext.cnf",
            ]);
        }
        Some(Certificates { dir })
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// A redis-server with a plain port (for readiness and stopping) and a TLS port that
    /// asks clients for a certificate signed by the CA. Returns it and the TLS port.
    pub fn server(&self) -> Option<(RedisServer, u16)> {
        let tls_port = free_port();
        let file = |n: &str| self.path(n).to_str().expect("utf-8").to_owned();
        let extra = [
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            file("server.crt"),
            "--tls-key-file".to_owned(),
            file("server.key"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.crt"),
            "--tls-auth-clients".to_owned(),
            "yes".to_owned(),
        ];
        let server = RedisServer::start_with(None, &extra)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            assert!(Instant::now() < deadline, "the TLS port never opened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some((server, tls_port))
    }
}

/// The URL of the shared test server: `SESSILE_TEST_REDIS_URL`, or one started for this
/// test binary. `None` if there is no redis-server outside CI.
pub fn shared_url() -> Option<String> {
    static SERVER: OnceLock<Option<String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var("SESSILE_TEST_REDIS_URL") {
                return Some(url);
            }
            let server = RedisServer::start(None)?;
            let url = server.url();
            // Lives as long as the test binary; its shell stops it at exit.
            std::mem::forget(server);
            Some(url)
        })
        .clone()
}

/// Whether `program` (from the Debian package `package`) is installed. Outside CI a
/// missing one skips the test, with a message; in CI it fails it (`.ci/run` installs it).
pub fn installed(program: &str, package: &str) -> bool {
    let available = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is not installed (.ci/run installs the package {package})"
        );
        eprintln!("{program} not installed (package {package}): skipping this test");
    }
    available
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn wait_for_pong(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let mut buf = [0u8; 7];
            if s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "redis-server did not answer on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
