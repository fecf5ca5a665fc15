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
//! Modes:
//! - `sled-store`: tower-sessions-sled-store's `load`;
//! - `json-doc`: the floor above;
//! - `guarded-doc`: a prototype of sessile's adapter with its records in tower's shape,
//!   keeping sessile's guarantees: the key is a keyed blake3 digest of the ID (the folder
//!   holds no cookie value), the record a 16-byte header (version, expiry) checked against
//!   the clock before one JSON document, each value parsed from its raw text and
//!   fingerprinted with keyed SipHash-2-4 (what lets overlapping requests keep both
//!   changes), and the base entry (version and fingerprints) added to the map as text;
//! - `keyed-doc`: `guarded-doc` without the fingerprints and the base entry (the digest
//!   and the header only, the document parsed straight into tower's map).

use std::collections::HashMap;
use std::hint::black_box;

use tower_sessions_core_014::SessionStore;
use tower_sessions_core_014::session::{Id, Record};

#[path = "../../../examples/common/probe.rs"]
mod probe;

fn main() {
    let (mode, n, lookups) = probe::args("sled-store", 100_000);
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
                data: probe::data(i as u64),
                expiry_date: expiry,
            };
            if mode == "json-doc" {
                let doc = serde_json::to_vec(&record.data).expect("json");
                tree.insert(record.id.0.to_le_bytes(), doc).expect("insert");
            } else if mode.ends_with("ed-doc") {
                let mut bytes = Vec::with_capacity(256);
                bytes.extend_from_slice(&1u64.to_le_bytes());
                bytes.extend_from_slice(&(now_ms() + 3_600_000).to_le_bytes());
                serde_json::to_writer(&mut bytes, &record.data).expect("json");
                tree.insert(guarded_key(record.id.0), bytes)
                    .expect("insert");
            } else {
                store.save(&record).await.expect("save");
            }
            ids.push(record.id);
        }
    });
    let spread = |i: usize| (i * 7919 + i / n) % n;
    let order: Vec<usize> = (0..lookups).map(spread).collect();
    let started = std::time::Instant::now();
    let found = if mode.ends_with("ed-doc") {
        measured_guarded(&tree, &ids, &order, mode == "guarded-doc")
    } else {
        measured(&runtime, &store, &tree, &ids, &order, mode == "json-doc")
    };
    eprintln!(
        "{mode}: {:?} per step",
        started.elapsed().div_f64(lookups as f64)
    );
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

/// The keys of the secret sessile keeps in its folder (fixed here).
const DIGEST_KEY: [u8; 32] = [7; 32];
const FINGERPRINT_KEY: (u64, u64) = (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn guarded_key(id: i128) -> [u8; 32] {
    *blake3::keyed_hash(&DIGEST_KEY, &id.to_le_bytes()).as_bytes()
}

fn fingerprint(key: &str, raw: &str) -> (u64, u64) {
    use std::hash::Hasher as _;
    let mut h = siphasher::sip::SipHasher24::new_with_keys(FINGERPRINT_KEY.0, FINGERPRINT_KEY.1);
    h.write(key.as_bytes());
    let of_key = h.clone().finish();
    h.write_u8(0xff);
    h.write(raw.as_bytes());
    (of_key, h.finish())
}

/// Appends `n` as 16 hex digits.
fn hex(out: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(DIGITS[(n >> (shift * 4)) as usize & 15]);
    }
}

/// A JSON object's entries in document order, each value as its raw text.
struct RawPairs<'a>(Vec<(&'a str, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for RawPairs<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = RawPairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(RawPairs(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// One load of the `guarded-doc` prototype (see the module docs).
#[inline(never)]
fn measured_guarded(tree: &sled::Tree, ids: &[Id], order: &[usize], base: bool) -> usize {
    let mut found = 0;
    for &i in order {
        let Some(bytes) = tree.get(guarded_key(ids[i].0)).expect("get") else {
            continue;
        };
        let (Some(version), Some(expires)) = (bytes.get(..8), bytes.get(8..16)) else {
            continue;
        };
        let version = u64::from_le_bytes(version.try_into().expect("8 bytes"));
        let expires = u64::from_le_bytes(expires.try_into().expect("8 bytes"));
        if expires <= now_ms() {
            continue;
        }
        if !base {
            let data: HashMap<String, serde_json::Value> =
                serde_json::from_slice(&bytes[16..]).expect("doc");
            found += usize::from(black_box(data).len() > 1);
            continue;
        }
        let RawPairs(raw) = serde_json::from_slice(&bytes[16..]).expect("doc");
        let mut data = HashMap::with_capacity(raw.len() + 1);
        let mut base = Vec::with_capacity(32 + 32 * raw.len());
        hex(&mut base, version);
        hex(&mut base, expires);
        for (key, value) in raw {
            let (of_key, of_value) = fingerprint(key, value.get());
            hex(&mut base, of_key);
            hex(&mut base, of_value);
            let value: serde_json::Value = serde_json::from_str(value.get()).expect("value");
            data.insert(key.to_owned(), value);
        }
        let base = String::from_utf8(base).expect("hex digits");
        data.insert("sessile.base".to_owned(), serde_json::Value::String(base));
        found += usize::from(black_box(data).len() > 1);
    }
    found
}
