//! Restart cost, memory and disk at scale, with the default config.
//!
//! 1. Bulk load N sessions (~200 bytes of data each); peak RSS of the load (`VmHWM`).
//! 2. First reopen right after the bulk load: open + first `load`, timed.
//! 3. Reopens after a clean shutdown (3 times): open + first `load`, timed; RSS after.
//! 4. Churn: 90% of the sessions expire and are purged, then as many are created again;
//!    disk size, RSS and reopen time after it.
//!
//! Each figure needs the process to itself, so this is a plain program, not criterion.
//! `cargo bench --bench open` (1M sessions); `SESSILE_BENCH_SIZES=200000` to pick the size;
//! `SESSILE_BENCH_QUICK=1` for the small CI run. See BENCHMARKS.md.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use sessile::{Config, ManualClock, SessionId, Store};

use common::{disk_bytes, fill, proc_kib, reset_peak_rss, sizes};

const IDLE: Duration = Duration::from_secs(30 * 60);

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Everything default but the clock (so that 90% of the sessions can be made to expire).
fn open(path: &Path, clock: &ManualClock) -> Store {
    Config::new(path).clock(clock.clock()).open().expect("open")
}

/// Creates `n` filled sessions; keeps every 1000th token.
fn load_sessions(store: &Store, n: usize, first: u64) -> Vec<SessionId> {
    let mut kept = Vec::new();
    for i in 0..n {
        let mut s = store.create().expect("create");
        fill(&mut s, first + i as u64);
        store.save(&s).expect("save");
        if i % 1000 == 0 {
            kept.push(s.id().clone());
        }
    }
    kept
}

fn reopen(path: &Path, clock: &ManualClock, probe: &SessionId, label: &str) -> Duration {
    let t = Instant::now();
    let store = open(path, clock);
    let found = store.load(probe).expect("load").is_some();
    let d = t.elapsed();
    assert!(found, "the probe session survives the restart");
    println!(
        "open/{label}: open + first load {d:.3?}; RSS {:.0} MiB",
        mib(proc_kib("VmRSS"))
    );
    d
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for n in sizes(&[1_000_000], &[2_000]) {
        run(n);
    }
}

fn run(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessile");
    let clock = ManualClock::new();
    let base_rss = proc_kib("VmRSS");
    reset_peak_rss();

    // 1. Bulk load: 90% now, 10% twenty minutes later (they outlive the churn below).
    let t = Instant::now();
    let store = open(&path, &clock);
    let old = n * 9 / 10;
    let old_ids = load_sessions(&store, old, 0);
    clock.advance(Duration::from_secs(20 * 60));
    let young_ids = load_sessions(&store, n - old, old as u64);
    let load_time = t.elapsed();
    let peak_load = proc_kib("VmHWM");
    drop(store);
    println!(
        "open/{n}/bulk_load: {load_time:.1?} ({:.0} sessions/s); peak RSS {:.0} MiB (process baseline {:.0} MiB); disk {:.0} MiB after close",
        n as f64 / load_time.as_secs_f64(),
        mib(peak_load),
        mib(base_rss),
        disk_bytes(&path) as f64 / (1 << 20) as f64
    );

    // 2. and 3. Reopens.
    reset_peak_rss();
    let probe = &young_ids[0];
    reopen(
        &path,
        &clock,
        probe,
        &format!("{n}/first_reopen_after_bulk_load"),
    );
    let mut settled = Vec::new();
    for i in 1..=3 {
        settled.push(reopen(&path, &clock, probe, &format!("{n}/reopen_{i}")));
    }
    println!(
        "open/{n}/reopens: peak RSS over the reopens {:.0} MiB; disk {:.0} MiB",
        mib(proc_kib("VmHWM")),
        disk_bytes(&path) as f64 / (1 << 20) as f64
    );

    // 4. Churn: the 90% expire and are purged, then as many new ones are created.
    reset_peak_rss();
    clock.advance(IDLE - Duration::from_secs(10 * 60));
    let t = Instant::now();
    let store = open(&path, &clock);
    assert!(store.load(&old_ids[0]).expect("load").is_none());
    let purged = store.purge_expired().expect("purge");
    let purge_time = t.elapsed();
    let disk_after_purge = disk_bytes(&path);
    let t = Instant::now();
    let _new_ids = load_sessions(&store, old, n as u64);
    let refill_time = t.elapsed();
    drop(store);
    println!(
        "open/{n}/churn: purged {purged} in {purge_time:.1?}, recreated {old} in {refill_time:.1?}; peak RSS {:.0} MiB; disk {:.0} MiB after purge, {:.0} MiB after refill",
        mib(proc_kib("VmHWM")),
        disk_after_purge as f64 / (1 << 20) as f64,
        disk_bytes(&path) as f64 / (1 << 20) as f64
    );
    reopen(
        &path,
        &clock,
        probe,
        &format!("{n}/first_reopen_after_churn"),
    );
    reopen(&path, &clock, probe, &format!("{n}/reopen_after_churn"));
}
