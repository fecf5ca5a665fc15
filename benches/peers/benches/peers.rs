//! `load` of one session, through each store's own API, on the same population: N
//! sessions holding about 200 bytes of data, looked up with Zipf-skewed and uniform
//! popularity, one thread, inside one tokio current-thread runtime.
//!
//! Contenders: sessile's `Store::load`, sessile's tower-sessions adapter, and
//! tower-sessions-sled-store 0.2, tower-sessions-rusqlite-store 0.15 (SQLite in WAL mode),
//! tower-sessions-moka-store 0.15 and tower-sessions' MemoryStore 0.15 (both in memory:
//! the upper bound of a store that forgets everything on restart), each through its own
//! `SessionStore::load`. Popularity: Zipf (s = 1.1), hot (99% of lookups on 1% of the
//! sessions) and uniform.
//!
//! Then `SessionStore::save` of a changed record (one value replaced) on the hot
//! distribution, for the adapter, the sled store and MemoryStore; and the longest time one
//! adapter call holds the executor (every adapter load and save runs in place), as p99
//! and max over a timed loop, printed to stderr.
//!
//! `cargo bench --manifest-path benches/peers/Cargo.toml`; `SESSILE_BENCH_SIZES=10000` to
//! pick the size; `SESSILE_BENCH_QUICK=1` (or `cargo test`) for a small run.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use std::hint::black_box;

use criterion::{Criterion, Throughput};

mod common;

use common::{Rng, smoke};
use sessile::{SessionId, Store};
use time::OffsetDateTime;

fn sizes() -> Vec<usize> {
    if let Ok(s) = std::env::var("SESSILE_BENCH_SIZES") {
        return s.split(',').filter_map(|n| n.trim().parse().ok()).collect();
    }
    if smoke() { vec![2_000] } else { vec![100_000] }
}

/// How lookups pick sessions.
#[derive(Clone, Copy)]
enum Popularity {
    Zipf,
    /// 99% of lookups on 1% of the sessions.
    Hot,
    Uniform,
}

/// Picks into `0..n` with the given popularity.
fn picks(n: usize, len: usize, popularity: Popularity) -> Vec<u32> {
    let mut rng = Rng::new(42);
    match popularity {
        Popularity::Uniform | Popularity::Hot => {
            let hot = matches!(popularity, Popularity::Hot);
            return common::picks(&mut rng, n, len, hot)
                .into_iter()
                .map(|i| i as u32)
                .collect();
        }
        Popularity::Zipf => {}
    }
    let mut cdf = Vec::with_capacity(n);
    let mut sum = 0.0;
    for k in 1..=n {
        sum += (k as f64).powf(-1.1);
        cdf.push(sum);
    }
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        perm.swap(i, rng.below(i + 1));
    }
    (0..len)
        .map(|_| {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * sum;
            perm[cdf.partition_point(|c| *c < u).min(n - 1)]
        })
        .collect()
}

/// The payload, as tower-sessions holds it: JSON values by key.
fn json_data(i: u64) -> HashMap<String, serde_json::Value> {
    let mut d = HashMap::new();
    d.insert("user_id".to_string(), serde_json::json!(1_000_000 + i));
    d.insert(
        "csrf".to_string(),
        serde_json::json!("p8yJ1bQm4Xw0n3zVt7uKcE2sLd9hRa5fGi6oYj-MNkW"),
    );
    d.insert("locale".to_string(), serde_json::json!("en-GB"));
    d.insert(
        "cart".to_string(),
        serde_json::json!([
            100_001, 100_002, 100_003, 250_000, 250_001, 999_999, 123_456, 654_321
        ]),
    );
    d.insert(
        "flash".to_string(),
        serde_json::json!("Your changes were saved. Check your inbox to confirm your address."),
    );
    d
}

/// The same payload through sessile's own API.
fn fill(s: &mut sessile::Session, i: u64) {
    s.insert("user_id", &(1_000_000 + i)).expect("insert");
    s.insert("csrf", "p8yJ1bQm4Xw0n3zVt7uKcE2sLd9hRa5fGi6oYj-MNkW")
        .expect("insert");
    s.insert("locale", "en-GB").expect("insert");
    s.insert(
        "cart",
        &[
            100_001u32, 100_002, 100_003, 250_000, 250_001, 999_999, 123_456, 654_321,
        ],
    )
    .expect("insert");
    s.insert(
        "flash",
        "Your changes were saved. Check your inbox to confirm your address.",
    )
    .expect("insert");
}

/// Benchmarks `op(i)` for the indices in `seq`, all awaited inside one `block_on`.
fn bench_async<F, Fut>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    rt: &tokio::runtime::Runtime,
    seq: &[u32],
    op: F,
) where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool>,
{
    let mask = seq.len() - 1;
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters as usize {
                    let found = op(seq[i & mask] as usize).await;
                    debug_assert!(found);
                    black_box(found);
                }
                start.elapsed()
            })
        })
    });
}

fn main() {
    let mut c = common::criterion();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in sizes() {
        run(&mut c, &rt, n);
    }
    c.final_summary();
}

fn run(c: &mut Criterion, rt: &tokio::runtime::Runtime, n: usize) {
    use tower_sessions_core_014::SessionStore as _;
    use tower_sessions_core_015::SessionStore as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let expiry = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let t = Instant::now();

    // sessile, through its own API.
    let store = Store::open(dir.path().join("sessile")).expect("open");
    let ids: Vec<SessionId> = (0..n)
        .map(|i| {
            let mut s = store.create().expect("create");
            fill(&mut s, i as u64);
            store.save(&s).expect("save");
            s.id().clone()
        })
        .collect();

    // sessile's tower-sessions adapter (core 0.15), in its own folder.
    let adapter_store = sessile_adapter::open(&dir.path().join("sessile-tower"));
    // Through tower-sessions 0.15's trait (the store implements 0.14's too).
    let adapter: &dyn tower_sessions_core_015::SessionStore = &adapter_store;
    let adapter_ids: Vec<tower_sessions_core_015::session::Id> = rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut r = tower_sessions_core_015::session::Record {
                id: Default::default(),
                data: json_data(i as u64),
                expiry_date: expiry,
            };
            adapter.create(&mut r).await.expect("create");
            out.push(r.id);
        }
        out
    });

    // tower-sessions-sled-store 0.2, on sled's default config as its docs show.
    let sled_db = sled::open(dir.path().join("sled-store")).expect("sled");
    let sled_store =
        tower_sessions_sled_store::SledStore::new(sled_db.open_tree("sessions").expect("tree"));
    // tower-sessions-moka-store 0.15 and tower-sessions' MemoryStore 0.15, in memory.
    let moka = tower_sessions_moka_store::MokaStore::new(Some(n as u64 * 2));
    let memory = tower_sessions_memory_store::MemoryStore::default();
    let ids14: Vec<tower_sessions_core_014::session::Id> = rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let r = tower_sessions_core_014::session::Record {
                id: Default::default(),
                data: json_data(i as u64),
                expiry_date: expiry,
            };
            sled_store.save(&r).await.expect("save");
            moka.save(&r).await.expect("save");
            out.push(r.id);
        }
        out
    });
    let memory_ids: Vec<tower_sessions_core_015::session::Id> = rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let r = tower_sessions_core_015::session::Record {
                id: Default::default(),
                data: json_data(i as u64),
                expiry_date: expiry,
            };
            memory.save(&r).await.expect("save");
            out.push(r.id);
        }
        out
    });

    // tower-sessions-rusqlite-store 0.15 on a file, WAL mode.
    let (sqlite, sqlite_ids) = rt.block_on(async {
        let conn = tokio_rusqlite::Connection::open(dir.path().join("sessions.sqlite"))
            .await
            .expect("sqlite");
        conn.call(|c| {
            c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
            Ok::<_, tokio_rusqlite::rusqlite::Error>(())
        })
        .await
        .expect("pragma");
        let store = tower_sessions_rusqlite_store::RusqliteStore::new(conn);
        store.migrate().await.expect("migrate");
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let r = tower_sessions_core_015::session::Record {
                id: Default::default(),
                data: json_data(i as u64),
                expiry_date: expiry,
            };
            store.save(&r).await.expect("save");
            out.push(r.id);
        }
        (store, out)
    });
    eprintln!(
        "populated 6 stores with {n} sessions each in {:.1?}",
        t.elapsed()
    );

    for popularity in [Popularity::Zipf, Popularity::Hot, Popularity::Uniform] {
        let seq = picks(n, (2 * n).next_power_of_two().max(4096), popularity);
        let dist = match popularity {
            Popularity::Zipf => "zipf",
            Popularity::Hot => "hot",
            Popularity::Uniform => "uniform",
        };
        let mut g = c.benchmark_group(format!("peers/{n}/{dist}"));
        g.throughput(Throughput::Elements(1));
        bench_async(&mut g, "sessile_store_load", rt, &seq, |i| {
            let r = store.load(&ids[i]).expect("load").is_some();
            async move { r }
        });
        bench_async(&mut g, sessile_adapter::NAME, rt, &seq, |i| {
            let fut = adapter.load(&adapter_ids[i]);
            async move { fut.await.expect("load").is_some() }
        });
        bench_async(&mut g, "tower_sessions_sled_store", rt, &seq, |i| {
            let fut = sled_store.load(&ids14[i]);
            async move { fut.await.expect("load").is_some() }
        });
        bench_async(&mut g, "tower_sessions_rusqlite_store", rt, &seq, |i| {
            let fut = sqlite.load(&sqlite_ids[i]);
            async move { fut.await.expect("load").is_some() }
        });
        bench_async(&mut g, "tower_sessions_moka_store", rt, &seq, |i| {
            let fut = moka.load(&ids14[i]);
            async move { fut.await.expect("load").is_some() }
        });
        bench_async(&mut g, "tower_sessions_memory_store", rt, &seq, |i| {
            let fut = memory.load(&memory_ids[i]);
            async move { fut.await.expect("load").is_some() }
        });
        g.finish();
    }

    // Saves of a changed record (the flash message changes each time), hot picks.
    let seq = picks(n, (2 * n).next_power_of_two().max(4096), Popularity::Hot);
    let counter = std::cell::Cell::new(0u64);
    let changed = |i: usize| {
        counter.set(counter.get() + 1);
        let mut data = json_data(i as u64);
        data.insert("flash".into(), serde_json::json!(counter.get()));
        data
    };
    let mut g = c.benchmark_group(format!("peers/{n}/save"));
    g.throughput(Throughput::Elements(1));
    bench_async(&mut g, "sessile_tower_adapter_save", rt, &seq, |i| {
        let r = tower_sessions_core_015::session::Record {
            id: adapter_ids[i],
            data: changed(i),
            expiry_date: expiry,
        };
        let store = adapter;
        async move { store.save(&r).await.is_ok() }
    });
    bench_async(&mut g, "tower_sessions_sled_store_save", rt, &seq, |i| {
        let r = tower_sessions_core_014::session::Record {
            id: ids14[i],
            data: changed(i),
            expiry_date: expiry,
        };
        let store = &sled_store;
        async move { store.save(&r).await.is_ok() }
    });
    bench_async(&mut g, "tower_sessions_memory_store_save", rt, &seq, |i| {
        let r = tower_sessions_core_015::session::Record {
            id: memory_ids[i],
            data: changed(i),
            expiry_date: expiry,
        };
        let store = &memory;
        async move { store.save(&r).await.is_ok() }
    });
    g.finish();

    // How long one adapter call holds the executor: loads (uniform, so most miss the
    // cache) and saves, each timed on its own.
    let uniform = picks(n, 20_000, Popularity::Uniform);
    let hold = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        let p99 = times[times.len() * 99 / 100];
        (p99, times[times.len() - 1])
    };
    let (mut loads, mut saves) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for &i in &uniform {
            let i = i as usize;
            let t = Instant::now();
            black_box(adapter.load(&adapter_ids[i]).await.expect("load"));
            loads.push(t.elapsed());
            let r = tower_sessions_core_015::session::Record {
                id: adapter_ids[i],
                data: changed(i),
                expiry_date: expiry,
            };
            let t = Instant::now();
            adapter.save(&r).await.expect("save");
            saves.push(t.elapsed());
        }
    });
    let ((lp99, lmax), (sp99, smax)) = (hold(&mut loads), hold(&mut saves));
    eprintln!(
        "executor hold per adapter call over {} uniform picks: load p99 {lp99:.1?} max {lmax:.1?}; save p99 {sp99:.1?} max {smax:.1?}",
        uniform.len()
    );
}

/// sessile's tower-sessions adapter.
mod sessile_adapter {
    pub const NAME: &str = "sessile_tower_adapter";

    pub fn open(path: &std::path::Path) -> sessile::tower::TowerStore {
        let store = sessile::Store::open(path).expect("open");
        sessile::tower::TowerStore::new(store)
    }
}
