//! sessile's tower-sessions adapter on Redis against tower-sessions-redis-store 0.16 (fred
//! 10), the store an axum app on Redis would otherwise pick: the same redis-server (one
//! this bench starts on a free loopback port, without persistence), the same records (about
//! 200 bytes of data, 20k sessions each), the same uniform picks, 32 concurrent requests
//! on a 2-worker tokio runtime, in one run.
//!
//! - `load`: `SessionStore::load` of a random session;
//! - `save`: `SessionStore::save` of a random session, loaded once beforehand, with one
//!   value changed (what tower-sessions does at the end of a request that changed it).
//!
//! Each contender's loads and saves run twice and the better run counts; the ratio is
//! sessile's throughput over the peer's. Printed as a table to stdout.
//!
//! `cargo bench --manifest-path benches/peers/Cargo.toml --bench redis`;
//! `SESSILE_BENCH_QUICK=1` (or `cargo test`) for a small run. Needs redis-server.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::interfaces::ClientLike;
use tower_sessions_core_014::session::{Id, Record};
use tower_sessions_core_014::session_store::SessionStore;

mod common;

use common::{Rng, smoke};

const CONCURRENCY: usize = 32;

/// A redis-server for this run, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Server {
            child,
            port,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data(i: u64) -> HashMap<String, serde_json::Value> {
    let mut d = HashMap::new();
    d.insert("user_id".to_string(), serde_json::json!(1_000_000 + i));
    d.insert(
        "csrf".to_string(),
        serde_json::json!("p8yJ1bQm4Xw0n3zVt7uKcE2sLd9hRa5fGi6oYj-MNkW"),
    );
    d.insert("locale".to_string(), serde_json::json!("en-GB"));
    d.insert(
        "cart".to_string(),
        serde_json::json!([100_001, 100_002, 100_003, 250_000, 250_001, 999_999]),
    );
    d
}

/// Runs `ops` calls of `call` (given the call's number) on [`CONCURRENCY`] tasks; returns
/// calls per second.
async fn throughput<S, F, Fut>(store: &Arc<S>, ops: usize, call: F) -> f64
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|t| {
            let store = Arc::clone(store);
            let call = call.clone();
            tokio::spawn(async move {
                for k in (t..ops).step_by(CONCURRENCY) {
                    call(Arc::clone(&store), k).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

/// The contenders' results: (load/s, save/s), the better of two runs each.
async fn measure<S: SessionStore + 'static>(store: S, n: usize, ops: usize) -> (f64, f64) {
    let store = Arc::new(store);
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let mut record = Record {
            id: Id::default(),
            data: data(i as u64),
            expiry_date: expiry,
        };
        store.create(&mut record).await.expect("create");
        ids.push(record.id);
    }
    let mut rng = Rng::new(7);
    let picks: Arc<Vec<Id>> = Arc::new((0..ops).map(|_| ids[rng.below(n)]).collect());
    // What each save writes: the record as loaded, one value changed.
    let mut loaded = Vec::with_capacity(ops);
    for id in picks.iter() {
        let mut record = store.load(id).await.expect("load").expect("live");
        record
            .data
            .insert("visits".into(), serde_json::json!(loaded.len()));
        loaded.push(record);
    }
    let loaded = Arc::new(loaded);
    let mut best = (0f64, 0f64);
    for _ in 0..2 {
        let p = Arc::clone(&picks);
        let loads = throughput(&store, ops, move |s, k| {
            let id = p[k];
            async move {
                std::hint::black_box(s.load(&id).await.expect("load"));
            }
        })
        .await;
        let l = Arc::clone(&loaded);
        let saves = throughput(&store, ops, move |s, k| {
            let l = Arc::clone(&l);
            async move {
                s.save(&l[k]).await.expect("save");
            }
        })
        .await;
        best = (best.0.max(loads), best.1.max(saves));
    }
    best
}

fn main() {
    // SESSILE_BENCH_REDIS_URL: a server of your own instead (to read its INFO
    // commandstats, say); flushed of the bench's keys by nothing: use an empty one.
    let own = std::env::var("SESSILE_BENCH_REDIS_URL").ok();
    let server = match own {
        Some(_) => None,
        None => match Server::start() {
            Some(server) => Some(server),
            None => {
                eprintln!("redis-server is not installed: skipping the Redis bench");
                return;
            }
        },
    };
    let (n, ops) = if smoke() {
        (500, 2_000)
    } else {
        (20_000, 60_000)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let url = own.unwrap_or_else(|| server.as_ref().map(Server::url).unwrap_or_default());

    let peer = rt.block_on(async {
        let config = fred::prelude::Config::from_url(&url).expect("fred config");
        let pool = fred::prelude::Pool::new(config, None, None, None, 6).expect("pool");
        pool.connect();
        pool.wait_for_connect().await.expect("connect");
        measure(tower_sessions_redis_store::RedisStore::new(pool), n, ops).await
    });
    let store = sessile::Config::redis(&url)
        .redis_namespace("bench")
        .open()
        .expect("open");
    let ours = rt.block_on(measure(sessile::tower::TowerStore::new(store), n, ops));

    println!(
        "| 32 concurrent requests, {n} sessions | sessile tower adapter | tower-sessions-redis-store | ratio |"
    );
    println!("|---|---|---|---|");
    println!(
        "| load | {:.1}k/s | {:.1}k/s | {:.2}x |",
        ours.0 / 1e3,
        peer.0 / 1e3,
        ours.0 / peer.0
    );
    println!(
        "| save | {:.1}k/s | {:.1}k/s | {:.2}x |",
        ours.1 / 1e3,
        peer.1 / 1e3,
        ours.1 / peer.1
    );
}
