//! Purging expired sessions, and what a purge does to foreground lookups.
//!
//! 1. Purge rate: `Store::purge_expired` on N expired sessions (the purge thread's pass)
//!    against a naive sweep over a copy of the same folder opened with plain sled: walk the
//!    `sessions` tree, `get` each record, and `remove` expired ones from both trees.
//! 2. Lookup latency: p50/p99 of `Store::load` on live sessions, idle and while a pass
//!    deletes a backlog of expired sessions on another thread.
//!
//! These phases each need minutes of setup per sample, so they are timed by hand (median
//! of 3 rounds), not through criterion. `cargo bench --bench cleanup` (100k purge, 1M
//! backlog); `SESSILE_BENCH_QUICK=1` for the small CI run. See BENCHMARKS.md.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sessile::{Config, ManualClock, Store};

use common::{Rng, copy_dir, percentiles, populate, smoke};

const IDLE: Duration = Duration::from_secs(30 * 60);

fn manual_store(path: &std::path::Path, clock: &ManualClock) -> Store {
    Config::new(path)
        .clock(clock.clock())
        .idle_timeout(IDLE)
        .no_absolute_timeout()
        .purge_thread(false)
        .open()
        .expect("open")
}

/// The naive sweep: every record read and checked, expired ones removed from both trees.
fn naive_sweep(path: &std::path::Path, now_ms: u64) -> usize {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .expect("sled");
    let sessions = db.open_tree("sessions").expect("tree");
    let expiry = db.open_tree("expiry").expect("tree");
    let keys: Vec<sled::IVec> = sessions
        .iter()
        .keys()
        .collect::<Result<_, _>>()
        .expect("keys");
    let mut removed = 0;
    for key in keys {
        let Some(record) = sessions.get(&key).expect("get") else {
            continue;
        };
        let expires_at = u64::from_be_bytes(record[1..9].try_into().expect("header"));
        if expires_at <= now_ms {
            sessions.remove(&key).expect("remove");
            let mut ekey = record[1..9].to_vec();
            ekey.extend_from_slice(&key);
            expiry.remove(ekey).expect("remove");
            removed += 1;
        }
    }
    removed
}

fn purge_rate(n: usize) {
    let rounds = if smoke() { 1 } else { 3 };
    let mut ours = Vec::new();
    let mut naive = Vec::new();
    for round in 0..rounds {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sessile");
        let clock = ManualClock::new();
        {
            let store = manual_store(&path, &clock);
            populate(&store, n);
        }
        copy_dir(&path, &dir.path().join("naive"));
        clock.advance(IDLE + Duration::from_secs(60));
        let now_ms = clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis() as u64;

        let store = manual_store(&path, &clock);
        let t = Instant::now();
        let purged = store.purge_expired().expect("purge");
        let d = t.elapsed();
        assert_eq!(purged, n);
        drop(store);
        ours.push(d);

        let t = Instant::now();
        let removed = naive_sweep(&dir.path().join("naive"), now_ms);
        let dn = t.elapsed();
        assert_eq!(removed, n);
        naive.push(dn);
        eprintln!(
            "round {round}: purge_expired {n} in {d:.2?} ({:.0}/s); naive sweep {dn:.2?} ({:.0}/s)",
            n as f64 / d.as_secs_f64(),
            n as f64 / dn.as_secs_f64()
        );
    }
    ours.sort();
    naive.sort();
    let (o, nv) = (ours[ours.len() / 2], naive[naive.len() / 2]);
    println!(
        "cleanup/purge/{n}: purge_expired {:.0} sessions/s, naive sweep {:.0} sessions/s, ratio {:.2}x (median of {rounds})",
        n as f64 / o.as_secs_f64(),
        n as f64 / nv.as_secs_f64(),
        nv.as_secs_f64() / o.as_secs_f64()
    );
}

fn load_latency(
    store: &Store,
    ids: &[sessile::SessionId],
    stop: Option<&AtomicBool>,
) -> Vec<Duration> {
    let mut rng = Rng::new(3);
    let mut samples = Vec::with_capacity(1 << 20);
    let limit = if smoke() { 20_000 } else { 400_000 };
    loop {
        let id = &ids[rng.below(ids.len())];
        let t = Instant::now();
        let s = store.load(id).expect("load");
        samples.push(t.elapsed());
        assert!(s.is_some());
        match stop {
            Some(stop) => {
                if stop.load(Ordering::Acquire) {
                    break;
                }
            }
            None => {
                if samples.len() >= limit {
                    break;
                }
            }
        }
    }
    samples
}

fn latency_during_purge(backlog: usize, live: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessile");
    let clock = ManualClock::new();
    let store = manual_store(&path, &clock);
    let t = Instant::now();
    populate(&store, backlog);
    clock.advance(Duration::from_secs(20 * 60));
    let ids = populate(&store, live);
    clock.advance(Duration::from_secs(15 * 60));
    eprintln!(
        "built {backlog} expired + {live} live sessions in {:.1?}",
        t.elapsed()
    );

    let mut idle = load_latency(&store, &ids, None);
    let (p50, p99) = percentiles(&mut idle);

    let done = AtomicBool::new(false);
    let (mut busy, purge_time, purged) = std::thread::scope(|s| {
        let purger = s.spawn(|| {
            let t = Instant::now();
            let n = store.purge_expired().expect("purge");
            let d = t.elapsed();
            done.store(true, Ordering::Release);
            (n, d)
        });
        let samples = load_latency(&store, &ids, Some(&done));
        let (n, d) = purger.join().expect("purger");
        (samples, d, n)
    });
    assert_eq!(purged, backlog);
    let (b50, b99) = percentiles(&mut busy);
    println!(
        "cleanup/latency/{backlog}: load p50 {p50:.2?} p99 {p99:.2?} idle; p50 {b50:.2?} p99 {b99:.2?} during purge ({} loads, purge took {purge_time:.1?}); p99 ratio {:.2}x",
        busy.len(),
        b99.as_secs_f64() / p99.as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (purge_n, backlog, live) = if smoke() {
        (2_000, 5_000, 1_000)
    } else {
        (100_000, 1_000_000, 10_000)
    };
    purge_rate(purge_n);
    // SESSILE_BENCH_PURGE_ONLY=1 skips the 1M-backlog latency run.
    if std::env::var_os("SESSILE_BENCH_PURGE_ONLY").is_none() {
        latency_during_purge(backlog, live);
    }
}
