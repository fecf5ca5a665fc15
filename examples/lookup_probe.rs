//! A probe for counting the instructions of one lookup with callgrind (see BENCHMARKS.md):
//! fills a store, copies its folder for raw sled, then runs one lookup loop that callgrind
//! counts alone (`--toggle-collect='*measured*'`).
//!
//! ```text
//! cargo build --release --example lookup_probe
//! valgrind --tool=callgrind --toggle-collect='*measured*' \
//!     target/release/examples/lookup_probe hot 2000 200000
//! ```
//!
//! Modes: `hot` (`Store::load` of cached sessions), `raw-hot` (sled `Tree::get` of the same
//! records, all in sled's cache), `cold` (`Store::load` of 20x more sessions than the read
//! cache holds, in shuffled order), `raw-cold` (sled `get` of them in the same order).
//! Instructions per lookup = the loop's Ir / lookups.

use std::hint::black_box;

use sessile::{Config, SessionId, Store};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("hot", String::as_str).to_owned();
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let lookups: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let cold = mode.ends_with("cold");
    let cache = if cold { n / 20 } else { n };
    let store = Config::new(dir.path().join("store"))
        .cache_entries(cache.max(1))
        .open()
        .expect("open");
    let ids = fill(&store, n);
    let tokens: Vec<String> = ids.iter().map(ToString::to_string).collect();
    // A fixed pseudo-random order, the same for sessile and raw sled.
    let order: Vec<usize> = (0..lookups).map(|i| (i * 7919 + i / n) % n).collect();
    if mode.starts_with("raw") {
        drop(store);
        let db = open_raw(dir.path());
        let tree = db.open_tree("sessions").expect("tree");
        let keys: Vec<sled::IVec> = tree.iter().keys().map(|k| k.expect("key")).collect();
        for k in &keys {
            black_box(tree.get(k).expect("get"));
        }
        let found = measured_raw(&tree, &keys, &order);
        println!("{mode}: {found} of {lookups} found");
    } else {
        for t in &tokens {
            black_box(store.load(&t.parse().expect("token")).expect("load"));
        }
        let found = measured_load(&store, &tokens, &order);
        println!("{mode}: {found} of {lookups} found");
    }
}

fn fill(store: &Store, n: usize) -> Vec<SessionId> {
    (0..n)
        .map(|i| {
            let mut s = store.create().expect("create");
            s.insert("user_id", &(1_000_000 + i as u64))
                .expect("insert");
            s.insert("csrf", "p8yJ1bQm4Xw0n3zVt7uKcE2sLd9hRa5fGi6oYj-MNkW")
                .expect("insert");
            s.insert("locale", "en-GB").expect("insert");
            s.insert("cart", &[100_001u32, 100_002, 100_003, 250_000])
                .expect("insert");
            s.insert("flash", "Your changes were saved.")
                .expect("insert");
            store.save(&s).expect("save");
            s.id().clone()
        })
        .collect()
}

/// sled on the store's folder, after the store is closed (retrying while its lock lasts).
fn open_raw(dir: &std::path::Path) -> sled::Db {
    for _ in 0..1000 {
        if let Ok(db) = sled::Config::new()
            .path(dir.join("store"))
            .cache_capacity(64 << 20)
            .open()
        {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the store's folder stayed locked");
}

#[inline(never)]
fn measured_load(store: &Store, tokens: &[String], order: &[usize]) -> usize {
    let mut found = 0;
    for &i in order {
        let id: SessionId = tokens[i].parse().expect("token");
        found += usize::from(black_box(store.load(&id).expect("load")).is_some());
    }
    found
}

#[inline(never)]
fn measured_raw(tree: &sled::Tree, keys: &[sled::IVec], order: &[usize]) -> usize {
    let mut found = 0;
    for &i in order {
        found += usize::from(black_box(tree.get(&keys[i]).expect("get")).is_some());
    }
    found
}
