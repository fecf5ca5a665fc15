//! A probe for counting the instructions of one tower-sessions `load` with callgrind (see
//! BENCHMARKS.md): sessile's tower adapter against tower-sessions' `MemoryStore`, on the
//! same records, in one loop that callgrind counts alone (`--toggle-collect='*measured*'`).
//!
//! ```text
//! cargo build --release --example tower_probe --features tower
//! valgrind --tool=callgrind --toggle-collect='*measured*' \
//!     target/release/examples/tower_probe sessile 2000 50000
//! ```
//!
//! Modes: `sessile` (the adapter over a sled store whose cache holds every record),
//! `sessile-cold` (a cache of a sixth of the records, as 16k of 100k: most loads miss),
//! `memory` (`MemoryStore`); `sessile-uniform` picks at random with repeats after as many
//! unmeasured picks (both loops are counted: halve the Ir). `PROBE_CACHE=N` sets the
//! cache's entries. Instructions per load = the loop's Ir / lookups. With
//! `-write` after the mode (`sessile-write`, `memory-write`) each step is a request that
//! changes a value: a load, then a save of the changed record.

use std::hint::black_box;

use sessile::tower::TowerStore;
use tower_sessions::cookie::time::{Duration, OffsetDateTime};
use tower_sessions::session::{Id, Record};
use tower_sessions::{MemoryStore, SessionStore};

#[path = "common/probe.rs"]
mod probe;

fn main() {
    let (mode, n, lookups) = probe::args("sessile", 2_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let found = if mode.starts_with("memory") {
        probe(&runtime, &MemoryStore::default(), n, lookups, &mode)
    } else {
        let cache = if mode.starts_with("sessile-cold") {
            n / 6
        } else if mode.contains("-hot") || mode.contains("-uniform") {
            16 * 1024 // the default, as in the peers bench
        } else {
            n
        };
        let store = sessile::Config::new(dir.path().join("store"))
            .cache_entries(
                std::env::var("PROBE_CACHE")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(cache.max(1)),
            )
            .open()
            .expect("open");
        probe(&runtime, &TowerStore::new(store), n, lookups, &mode)
    };
    println!("{mode}: {found} of {lookups} found");
}

/// Creates `n` records, loads each once, then counts the measured loop's loads.
fn probe(
    runtime: &tokio::runtime::Runtime,
    store: &impl SessionStore,
    n: usize,
    lookups: usize,
    mode: &str,
) -> usize {
    let ids = runtime.block_on(fill(store, n));
    // A fixed pseudo-random order; with `-hot` in the mode, 99% of the steps on the
    // first 1% of the records (as the peers bench's hot row).
    let spread = |i: usize| (i * 7919 + i / n) % n;
    let few = (n / 100).max(1);
    // `-uniform`: picks at random with repeats, as the peers bench's uniform row, after
    // as many unmeasured ones, so the cache holds what such picks leave in it.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % n as u64).unwrap_or(0)
    };
    if mode.contains("-uniform") {
        let warm: Vec<usize> = (0..lookups).map(|_| random()).collect();
        measured(runtime, store, &ids, &warm);
    }
    let order: Vec<usize> = (0..lookups)
        .map(|i| match mode {
            _ if mode.contains("-hot") && i % 100 != 0 => spread(i) % few,
            _ if mode.contains("-uniform") => random(),
            _ => spread(i),
        })
        .collect();
    let started = std::time::Instant::now();
    let found = if mode.ends_with("-write") {
        measured_writes(runtime, store, &ids, &order)
    } else {
        measured(runtime, store, &ids, &order)
    };
    let per_step = started.elapsed() / u32::try_from(lookups.max(1)).unwrap_or(u32::MAX);
    eprintln!("{mode}: {per_step:?} per step (wall clock)");
    found
}

/// Stores `n` records and loads each once.
async fn fill(store: &impl SessionStore, n: usize) -> Vec<Id> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let mut record = Record {
            id: Id::default(),
            data: probe::data(i as u64),
            expiry_date: OffsetDateTime::now_utc() + Duration::hours(1),
        };
        store.create(&mut record).await.expect("create");
        ids.push(record.id);
    }
    for id in &ids {
        black_box(store.load(id).await.expect("load"));
    }
    ids
}

/// The loop callgrind counts: every load polled inside this function's frame.
#[inline(never)]
fn measured(
    runtime: &tokio::runtime::Runtime,
    store: &impl SessionStore,
    ids: &[Id],
    order: &[usize],
) -> usize {
    runtime.block_on(async {
        let mut found = 0;
        for &i in order {
            let record = store.load(&ids[i]).await.expect("load");
            found += usize::from(black_box(record).is_some());
        }
        found
    })
}

/// The loop callgrind counts in the `-write` modes: requests that change a value.
#[inline(never)]
fn measured_writes(
    runtime: &tokio::runtime::Runtime,
    store: &impl SessionStore,
    ids: &[Id],
    order: &[usize],
) -> usize {
    runtime.block_on(async {
        for (step, &i) in order.iter().enumerate() {
            let mut record = store.load(&ids[i]).await.expect("load").expect("live");
            record
                .data
                .insert("flash".to_owned(), serde_json::json!(step));
            // As tower-sessions' `Expiry::OnInactivity` sets it at every save.
            record.expiry_date = OffsetDateTime::now_utc() + Duration::hours(1);
            store.save(&record).await.expect("save");
        }
        order.len()
    })
}
