//! What the two callgrind probes share, so they count the same work: their arguments and
//! the records they load. Included by path from `examples/tower_probe.rs` and
//! `benches/peers/examples/sled_probe.rs` (two crates), not part of `common`'s module.

use std::collections::HashMap;

/// The mode (argument 1, else `mode`), the records (argument 2, else `records`) and the
/// lookups (argument 3, else 50,000). At least one record and one lookup: the order is
/// taken modulo the records.
pub fn args(mode: &str, records: usize) -> (String, usize, usize) {
    let args: Vec<String> = std::env::args().collect();
    let number = |at: usize, default: usize| {
        args.get(at)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
            .max(1)
    };
    let mode = args.get(1).map_or(mode, String::as_str).to_owned();
    (mode, number(2, records), number(3, 50_000))
}

/// What a web app keeps in a session, as tower-sessions holds it.
pub fn data(i: u64) -> HashMap<String, serde_json::Value> {
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
