//! Counts the instructions of one uniform `load` of tower-sessions-sled-store with
//! callgrind, in the shape of the root crate's `tower_probe sessile-uniform` (the same
//! records, the same order), and of the floor a record kept as one JSON document would
//! have (a sled `get` and one parse into tower's map):
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/sessile-peers cargo build --release \
//!     --manifest-path benches/peers/Cargo.toml --example sled_probe
//! valgrind --tool=callgrind --toggle-collect='*measured*' \
//!     /tmp/sessile-peers/release/examples/sled_probe sled-store 100000 50000
//! ```
//!
//! Modes: `sled-store`, `json-doc` (the floor above).

use std::collections::HashMap;
use std::hint::black_box;

use tower_sessions_core_014::SessionStore;
use tower_sessions_core_014::session::{Id, Record};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("sled-store", String::as_str).to_owned();
    // At least one record and one lookup (the order is taken modulo `n`).
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000).max(1);
    let lookups: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(50_000).max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path().join("sled")).expect("sled");
    let tree = db.open_tree("sessions").expect("tree");
    let store = tower_sessions_sled_store::SledStore::new(tree.clone());
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut ids = Vec::with_capacity(n);
    runtime.block_on(async {
        for i in 0..n {
            let record = Record {
                id: Id::default(),
                data: data(i as u64),
                expiry_date: expiry,
            };
            if mode == "json-doc" {
                let doc = serde_json::to_vec(&record.data).expect("json");
                tree.insert(record.id.0.to_le_bytes(), doc).expect("insert");
            } else {
                store.save(&record).await.expect("save");
            }
            ids.push(record.id);
        }
    });
    let spread = |i: usize| (i * 7919 + i / n) % n;
    let order: Vec<usize> = (0..lookups).map(spread).collect();
    let started = std::time::Instant::now();
    let found = measured(&runtime, &store, &tree, &ids, &order, mode == "json-doc");
    eprintln!("{mode}: {:?} per step", started.elapsed().div_f64(lookups as f64));
    println!("{mode}: {found} of {lookups} found");
}

#[inline(never)]
fn measured(
    runtime: &tokio::runtime::Runtime,
    store: &tower_sessions_sled_store::SledStore,
    tree: &sled::Tree,
    ids: &[Id],
    order: &[usize],
    doc: bool,
) -> usize {
    runtime.block_on(async {
        let mut found = 0;
        for &i in order {
            if doc {
                let bytes = tree.get(ids[i].0.to_le_bytes()).expect("get");
                let data = bytes.map(|b| {
                    serde_json::from_slice::<HashMap<String, serde_json::Value>>(&b).expect("doc")
                });
                found += usize::from(black_box(data).is_some());
            } else {
                let record = store.load(&ids[i]).await.expect("load");
                found += usize::from(black_box(record).is_some());
            }
        }
        found
    })
}

fn data(i: u64) -> HashMap<String, serde_json::Value> {
    HashMap::from([
        ("user_id".to_owned(), serde_json::json!(1_000_000 + i)),
        (
            "csrf".to_owned(),
            serde_json::json!("p8yJ1bQm4Xw0n3zVt7uKcE2sLd9hRa5fGi6oYj-MNkW"),
        ),
        ("locale".to_owned(), serde_json::json!("en-GB")),
        (
            "cart".to_owned(),
            serde_json::json!([100_001, 100_002, 100_003, 250_000]),
        ),
        (
            "flash".to_owned(),
            serde_json::json!("Your changes were saved."),
        ),
    ])
}
