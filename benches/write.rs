//! Write costs: create, save, touch (inside and outside the coalescing granularity) and
//! destroy, against two plain sled inserts per session and a two-tree sled transaction.
//!
//! `cargo bench --bench write`; `SESSILE_BENCH_QUICK=1` for the small CI run.
//! See BENCHMARKS.md.

mod common;

use std::time::{Duration, Instant};

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput};
use sessile::{Config, ManualClock, SessionId, Store};
use sled::Transactional;

use common::{Rng, fill, populate, sizes};

const STORAGE_CACHE: u64 = 64 * 1024 * 1024;

/// Bytes of the record `Store::create` writes (an empty session): format byte, 48-byte
/// header, 2-byte "no user", 1-byte empty map. The baselines insert values of this size.
const EMPTY_RECORD: usize = 52;
/// Bytes of a filled record (see `common::fill`), for the overwrite baseline.
const FILLED_RECORD: usize = 250;

fn baselines(c: &mut Criterion, n: usize, dir: &std::path::Path) {
    let db = sled::Config::new()
        .path(dir.join("raw"))
        .cache_capacity(STORAGE_CACHE)
        .open()
        .expect("sled");
    let sessions = db.open_tree("sessions").expect("tree");
    let expiry = db.open_tree("expiry").expect("tree");
    let mut rng = Rng::new(7);
    // Trees as large as the sessile store's: `n` records of a filled session's size and
    // their index keys, so the inserts below land in trees of the same depth.
    let keys: Vec<[u8; 32]> = (0..n).map(|_| rng.bytes()).collect();
    let mut filled = vec![2u8; FILLED_RECORD];
    for key in &keys {
        let mut ekey = [0u8; 40];
        ekey[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
        ekey[8..].copy_from_slice(key);
        expiry.insert(ekey, &[]).expect("insert");
        sessions.insert(key, filled.as_slice()).expect("insert");
    }
    let value = vec![1u8; EMPTY_RECORD];
    let mut g = c.benchmark_group("write/create");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sled_two_inserts", |b| {
        b.iter(|| {
            let key: [u8; 32] = rng.bytes();
            let mut ekey = [0u8; 40];
            ekey[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
            ekey[8..].copy_from_slice(&key);
            expiry.insert(ekey, &[]).expect("insert");
            sessions.insert(key, value.as_slice()).expect("insert");
        })
    });
    g.bench_function("sled_two_tree_transaction", |b| {
        b.iter(|| {
            let key: [u8; 32] = rng.bytes();
            let mut ekey = [0u8; 40];
            ekey[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
            ekey[8..].copy_from_slice(&key);
            (&sessions, &expiry)
                .transaction(|(s, e)| {
                    e.insert(&ekey[..], &[])?;
                    s.insert(&key[..], value.as_slice())?;
                    Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                })
                .expect("transaction");
        })
    });
    g.finish();

    // What a save that keeps its expiry does at best: one insert over an existing record
    // of the same size, round-robin over 10k of them.
    // Each overwrite changes the bytes: sled skips a set to the value already stored.
    let mut i = 0usize;
    let mut g = c.benchmark_group("write/save");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sled_one_overwrite", |b| {
        b.iter(|| {
            filled[..8].copy_from_slice(&(i as u64).to_le_bytes());
            sessions
                .insert(keys[i % keys.len().min(10_000)], filled.as_slice())
                .expect("insert");
            i += 1;
        })
    });
    g.finish();
    drop(db);
}

fn sessile_writes(c: &mut Criterion, n: usize, dir: &std::path::Path) {
    let store = Store::open(dir.join("sessile")).expect("open");
    let ids = populate(&store, n);

    let mut g = c.benchmark_group("write/create");
    g.throughput(Throughput::Elements(1));
    g.bench_function("store_create", |b| {
        b.iter(|| black_box(store.create().expect("create")))
    });
    g.bench_function("store_create_fill_save", |b| {
        b.iter(|| {
            let mut s = store.create().expect("create");
            fill(&mut s, 1);
            store.save(&s).expect("save");
        })
    });
    g.finish();

    let mut g = c.benchmark_group("write/save");
    g.throughput(Throughput::Elements(1));
    let sessions: Vec<_> = ids
        .iter()
        .take(10_000)
        .map(|id| store.load(id).expect("load").expect("live"))
        .collect();
    let mut i = 0usize;
    let mut counter = 0u64;
    g.bench_function("save_changed", |b| {
        b.iter(|| {
            let mut s = sessions[i % sessions.len()].clone();
            i += 1;
            counter += 1;
            s.insert("counter", &counter).expect("insert");
            store.save(&s).expect("save");
        })
    });
    // The same change on a copy loaded just before (a request: load, change, save): the
    // copy's version is the stored one, so the save writes its contents as they are.
    // Against `save_changed`, whose copies are stale after the first lap (every save is
    // then applied onto a newer version: the change-set merge), this is what merging
    // costs.
    g.bench_function("load_change_save", |b| {
        b.iter(|| {
            let mut s = store
                .load(sessions[i % sessions.len()].id())
                .expect("load")
                .expect("live");
            i += 1;
            counter += 1;
            s.insert("counter", &counter).expect("insert");
            store.save(&s).expect("save");
        })
    });
    g.bench_function("load_only", |b| {
        b.iter(|| {
            black_box(store.load(sessions[i % sessions.len()].id()).expect("load"));
            i += 1;
        })
    });
    // Sessions saved just now: an unchanged save inside the granularity writes nothing.
    let fresh: Vec<_> = ids
        .iter()
        .take(10_000)
        .map(|id| store.load(id).expect("load").expect("live"))
        .collect();
    g.bench_function("save_unchanged", |b| {
        b.iter(|| {
            store.save(&fresh[i % fresh.len()]).expect("save");
            i += 1;
        })
    });
    g.finish();

    let mut g = c.benchmark_group("write/touch");
    g.throughput(Throughput::Elements(1));
    let hot: Vec<SessionId> = ids.iter().take(10_000).cloned().collect();
    let before: Vec<_> = hot
        .iter()
        .take(100)
        .map(|id| store.load(id).expect("load").expect("live").last_seen())
        .collect();
    g.bench_function("touch_inside_granularity", |b| {
        b.iter(|| {
            black_box(store.touch(&hot[i % hot.len()]).expect("touch"));
            i += 1;
        })
    });
    // No disk write: the stored last_seen of the touched sessions did not move.
    let after: Vec<_> = hot
        .iter()
        .take(100)
        .map(|id| store.load(id).expect("load").expect("live").last_seen())
        .collect();
    assert_eq!(
        before, after,
        "a touch inside the granularity wrote a record"
    );
    eprintln!("touch inside the granularity: no record was rewritten (last_seen unchanged)");
    g.finish();

    // Outside the granularity: a manual clock moves 20 ms per touch, round-robin over 10k
    // sessions, so each touch moves its session's expiry by 200 s > 90 s granularity.
    let clock = ManualClock::new();
    let moving = Config::new(dir.join("moving"))
        .clock(clock.clock())
        .no_absolute_timeout()
        .purge_thread(false)
        .open()
        .expect("open");
    let moving_ids = populate(&moving, 10_000.min(n.max(5_000)));
    let mut g = c.benchmark_group("write/touch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("touch_outside_granularity", |b| {
        b.iter(|| {
            clock.advance(Duration::from_millis(20));
            let live = moving
                .touch(&moving_ids[i % moving_ids.len()])
                .expect("touch");
            debug_assert!(live);
            i += 1;
        })
    });
    g.finish();

    // A save of changed data whose expiry moves past the granularity: record, new index
    // entry, old index entry removed (three writes).
    let mut moving_sessions: Vec<_> = moving_ids
        .iter()
        .map(|id| moving.load(id).expect("load").expect("live"))
        .collect();
    let mut g = c.benchmark_group("write/save");
    g.throughput(Throughput::Elements(1));
    g.bench_function("save_changed_moving_expiry", |b| {
        b.iter(|| {
            clock.advance(Duration::from_millis(20));
            let len = moving_sessions.len();
            let s = &mut moving_sessions[i % len];
            counter += 1;
            s.insert("counter", &counter).expect("insert");
            moving.save(s).expect("save");
            i += 1;
        })
    });
    g.finish();

    let mut g = c.benchmark_group("write/destroy");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("destroy_with_flush", |b| {
        b.iter_batched(
            || store.create().expect("create").id().clone(),
            |id| assert!(store.destroy(&id).expect("destroy")),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn main() {
    let mut c = common::criterion();
    for n in sizes(&[100_000], &[2_000]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        baselines(&mut c, n, dir.path());
        sessile_writes(&mut c, n, dir.path());
        eprintln!("write benches at {n} sessions took {:.1?}", t.elapsed());
    }
    c.final_summary();
}
