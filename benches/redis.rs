//! The Redis backend against plain Redis commands on the same loopback server, in one
//! run: `Store::load` against a `GET` of the same record bytes, `Store::save` against a
//! `SET` of them (with a TTL, as the store sets one), and `update` (lease, read, script,
//! release). What is left between a load and a `GET` is all a local cache could save
//! (a coherent cache still needs a round trip to validate); see BENCHMARKS.md, "Scaling
//! out".
//!
//! `cargo bench --features redis --bench redis`; it uses `SESSILE_BENCH_REDIS_URL` if set,
//! else starts its own redis-server (no persistence) on a free port and stops it after.

mod common;

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use redis::Commands;
use sessile::Config;

use common::{Rng, populate, sizes};

/// A redis-server for the run, stopped when dropped.
struct Server(Option<Child>, String);

impl Server {
    fn start() -> Option<Server> {
        if let Ok(url) = std::env::var("SESSILE_BENCH_REDIS_URL")
            .or_else(|_| std::env::var("SESSILE_TEST_REDIS_URL"))
        {
            return Some(Server(None, url));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()?;
        let dir = std::env::temp_dir();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let url = format!("redis://127.0.0.1:{port}/");
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .is_err()
        {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Server(Some(child), url))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn bench(c: &mut Criterion, url: &str, n: usize) {
    let ns = format!("bench{}", std::process::id());
    let store = Config::redis(url)
        .redis_namespace(ns.as_str())
        .purge_thread(false)
        .touch_granularity(Duration::ZERO)
        .open()
        .expect("open");
    let ids = populate(&store, n);
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connection");
    // The same bytes as the store's records, under plain keys.
    let record: Vec<u8> = {
        let keys: Vec<String> = conn.keys(format!("{ns}:s:*")).expect("keys");
        conn.get(&keys[0]).expect("get")
    };
    let plain: Vec<String> = (0..n).map(|i| format!("{ns}:plain:{i}")).collect();
    for key in &plain {
        let _: () = conn.set(key, record.as_slice()).expect("set");
    }
    let mut rng = Rng::new(11);

    let mut g = c.benchmark_group(format!("redis/load/{n}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_get", |b| {
        b.iter(|| {
            let v: Vec<u8> = conn.get(&plain[rng.below(n)]).expect("get");
            black_box(v)
        })
    });
    // The same GET through an r2d2 pool with a read timeout, as the store's connections
    // are: what the pool and the timeout cost.
    let pool = r2d2::Pool::builder()
        .max_size(4)
        .test_on_check_out(false)
        .build(redis::Client::open(url).expect("client"))
        .expect("pool");
    g.bench_function("pooled_get", |b| {
        b.iter(|| {
            let mut conn = pool.get().expect("connection");
            let v: Vec<u8> = conn.get(&plain[rng.below(n)]).expect("get");
            black_box(v)
        })
    });
    g.bench_function("store_load", |b| {
        b.iter(|| black_box(store.load(&ids[rng.below(n)]).expect("load")))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("redis/save/{n}"));
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_set_px", |b| {
        b.iter(|| {
            let _: () = redis::cmd("SET")
                .arg(&plain[rng.below(n)])
                .arg(record.as_slice())
                .arg("PX")
                .arg(2_100_000)
                .query(&mut conn)
                .expect("set");
        })
    });
    let mut sessions: Vec<_> = ids
        .iter()
        .take(1000)
        .map(|id| store.load(id).expect("load").expect("live"))
        .collect();
    let mut round = 0u64;
    g.bench_function("store_save_changed", |b| {
        b.iter(|| {
            round += 1;
            let i = rng.below(sessions.len());
            let s = &mut sessions[i];
            s.insert("n", &round).expect("insert");
            store.save(s).expect("save");
        })
    });
    g.bench_function("store_update", |b| {
        b.iter(|| {
            store
                .update(&ids[rng.below(n)], |s| s.insert("n", &1u64))
                .expect("update")
        })
    });
    g.finish();
    drop(store);
    let keys: Vec<String> = conn.keys(format!("{ns}:*")).expect("keys");
    for chunk in keys.chunks(1000) {
        let _: () = conn.del(chunk).expect("del");
    }
}

fn main() {
    let Some(server) = Server::start() else {
        eprintln!("no redis-server: the Redis benchmarks did not run");
        return;
    };
    let mut c = common::criterion();
    for n in sizes(&[10_000], &[300]) {
        bench(&mut c, &server.1, n);
    }
    c.final_summary();
}
