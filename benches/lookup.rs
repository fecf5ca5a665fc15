//! Lookup throughput: `Store::load` against raw sled `Tree::get` of the same record bytes.
//!
//! For each size and key distribution, one sessile store is populated, then its folder is
//! copied twice: one copy is opened as a second store with the read cache off
//! (`Config::cache_entries(0)`), the other with plain sled (same page-cache size as
//! sessile's default) to read the `sessions` tree directly. All three are open in the same
//! process, and criterion reports elements per second, so ratios compare like with like.
//! sessile's loads start from the token's 43-character text, as a server's do.
//!
//! `cargo bench --bench lookup` (100k and 1M sessions), `SESSILE_BENCH_SIZES=100000` to
//! pick sizes, `SESSILE_BENCH_QUICK=1` for the small CI run. See BENCHMARKS.md.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use sessile::{Config, SessionId, Store};

use common::{Dist, copy_dir, picks, populate, sizes, smoke};

const STORAGE_CACHE: u64 = 64 * 1024 * 1024;

struct Fixture {
    _dir: tempfile::TempDir,
    ids: Vec<SessionId>,
    tokens: Vec<String>,
    store: Store,
    nocache: Store,
    raw: sled::Tree,
    _raw_db: sled::Db,
    raw_keys: Vec<[u8; 32]>,
}

fn fixture(n: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = dir.path().join("sessile");
    let t = Instant::now();
    let ids = {
        let store = Store::open(&main).expect("open");
        populate(&store, n)
    };
    eprintln!("populated {n} sessions in {:.1?}", t.elapsed());
    copy_dir(&main, &dir.path().join("nocache"));
    copy_dir(&main, &dir.path().join("raw"));
    let store = Store::open(&main).expect("reopen");
    let nocache = Config::new(dir.path().join("nocache"))
        .cache_entries(0)
        .open()
        .expect("open nocache");
    let raw_db = sled::Config::new()
        .path(dir.path().join("raw"))
        .cache_capacity(STORAGE_CACHE)
        .open()
        .expect("sled open");
    let raw = raw_db.open_tree("sessions").expect("tree");
    let mut raw_keys = Vec::with_capacity(n);
    let mut bytes = 0usize;
    for kv in raw.iter() {
        let (k, v) = kv.expect("iter");
        bytes += v.len();
        raw_keys.push(k.as_ref().try_into().expect("32-byte key"));
    }
    assert_eq!(raw_keys.len(), n);
    eprintln!("record size: {} bytes on average", bytes / n.max(1));
    Fixture {
        _dir: dir,
        tokens: ids.iter().map(ToString::to_string).collect(),
        ids,
        store,
        nocache,
        raw,
        _raw_db: raw_db,
        raw_keys,
    }
}

/// Runs `op(i)` `iters` times on each of `threads` threads (each walking its own part of
/// the pick sequence) and returns the wall time. Throughput is set to `threads` elements
/// per iteration, so criterion's elem/s is the total rate.
fn run_threads<F>(threads: usize, iters: u64, seq: &[u32], op: F) -> Duration
where
    F: Fn(usize) + Sync,
{
    static CURSOR: AtomicUsize = AtomicUsize::new(0);
    let mask = seq.len() - 1;
    if threads == 1 {
        let base = CURSOR.fetch_add(7919, Ordering::Relaxed);
        let start = Instant::now();
        for i in 0..iters as usize {
            op(seq[(base + i) & mask] as usize);
        }
        return start.elapsed();
    }
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let op = &op;
            let base = CURSOR.fetch_add(
                seq.len() / threads.max(1) + 7919 * (t + 1),
                Ordering::Relaxed,
            );
            s.spawn(move || {
                for i in 0..iters as usize {
                    op(seq[(base + i) & mask] as usize);
                }
            });
        }
    });
    start.elapsed()
}

fn bench_size(c: &mut Criterion, n: usize) {
    let f = fixture(n);
    for dist in [Dist::Hot, Dist::Zipf, Dist::Uniform] {
        // A power of two; long enough that a uniform walk over 1M sessions stays cold.
        let len = (n * 2).next_power_of_two().clamp(1 << 12, 1 << 21);
        let seq = picks(n, len, dist, 42);
        if let Dist::Zipf = dist {
            eprintln!(
                "zipf s={}: top 1% of {n} gets {:.0}% of lookups",
                common::ZIPF_S,
                100.0 * common::zipf_top1_share(n)
            );
        }
        let mut g = c.benchmark_group(format!("lookup/{n}/{}", dist.name()));
        for threads in [1usize, 2] {
            g.throughput(Throughput::Elements(threads as u64));
            g.bench_function(
                BenchmarkId::new("raw_sled_get", format!("{threads}t")),
                |b| {
                    b.iter_custom(|iters| {
                        run_threads(threads, iters, &seq, |i| {
                            black_box(f.raw.get(f.raw_keys[i]).expect("get"));
                        })
                    })
                },
            );
            g.bench_function(BenchmarkId::new("store_load", format!("{threads}t")), |b| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters, &seq, |i| {
                        let id: SessionId = f.tokens[i].parse().expect("token");
                        black_box(f.store.load(&id).expect("load"));
                    })
                })
            });
            g.bench_function(
                BenchmarkId::new("store_load_nocache", format!("{threads}t")),
                |b| {
                    b.iter_custom(|iters| {
                        run_threads(threads, iters, &seq, |i| {
                            let id: SessionId = f.tokens[i].parse().expect("token");
                            black_box(f.nocache.load(&id).expect("load"));
                        })
                    })
                },
            );
        }
        g.finish();
    }
    // A lookup of a token that has no session (a stale or forged cookie).
    let mut g = c.benchmark_group(format!("lookup/{n}/miss"));
    g.throughput(Throughput::Elements(1));
    let unknown: SessionId = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        .parse()
        .expect("token");
    g.bench_function("store_load", |b| {
        b.iter(|| black_box(f.store.load(&unknown).expect("load")))
    });
    g.finish();
    if !smoke() {
        // Sanity: every session is there.
        assert!(f.store.load(&f.ids[n / 2]).expect("load").is_some());
    }
}

fn main() {
    let mut c = common::criterion();
    for n in sizes(&[100_000, 1_000_000], &[2_000]) {
        bench_size(&mut c, n);
    }
    c.final_summary();
}
