//! Helpers shared by the benchmark binaries: sizes, the session payload every contender
//! stores, key-popularity distributions, and folder copies.
//!
//! Each bench binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use sessile::{Session, SessionId, Store};

/// True when the benches should run small: `SESSILE_BENCH_QUICK=1`, or when the binary is
/// run as a test (`cargo test --benches`, which does not pass `--bench`).
pub fn smoke() -> bool {
    std::env::var_os("SESSILE_BENCH_QUICK").is_some_and(|v| v != "0")
        || !std::env::args().any(|a| a == "--bench")
}

/// Session counts to run, from `SESSILE_BENCH_SIZES` (comma-separated) or the defaults.
pub fn sizes(default: &[usize], quick: &[usize]) -> Vec<usize> {
    if let Ok(s) = std::env::var("SESSILE_BENCH_SIZES") {
        return s
            .split(',')
            .filter_map(|n| n.trim().replace('_', "").parse().ok())
            .collect();
    }
    if smoke() {
        quick.to_vec()
    } else {
        default.to_vec()
    }
}

/// Criterion settings: short in quick mode, moderate otherwise (the machine is shared and
/// many groups run).
pub fn criterion() -> criterion::Criterion {
    let c = criterion::Criterion::default().configure_from_args();
    if smoke() {
        c.warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500))
            .sample_size(10)
    } else {
        c.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(20)
    }
}

mod rng;
pub use rng::Rng;

/// Which sessions a stream of lookups asks for.
#[derive(Clone, Copy, Debug)]
pub enum Dist {
    /// 99% of lookups on 1% of the sessions, 1% on the rest: "hot" in BENCHMARKS.md.
    Hot,
    Uniform,
    /// Zipf with exponent 1.1: about 75% of lookups hit the most popular 1% at 100k.
    Zipf,
}

impl Dist {
    pub fn name(self) -> &'static str {
        match self {
            Dist::Hot => "hot",
            Dist::Uniform => "uniform",
            Dist::Zipf => "zipf",
        }
    }
}

pub const ZIPF_S: f64 = 1.1;

/// `len` indices into `0..n` drawn from `dist`. Ranks are shuffled onto indices, so the
/// popular sessions are spread over the key space like real ones.
pub fn picks(n: usize, len: usize, dist: Dist, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    match dist {
        Dist::Uniform => (0..len).map(|_| rng.below(n) as u32).collect(),
        Dist::Hot => {
            let perm = shuffled(n, &mut rng);
            let hot = (n / 100).max(1);
            (0..len)
                .map(|_| {
                    if rng.below(100) < 99 {
                        perm[rng.below(hot)]
                    } else {
                        perm[rng.below(n)]
                    }
                })
                .collect()
        }
        Dist::Zipf => {
            let mut cdf = Vec::with_capacity(n);
            let mut sum = 0.0;
            for k in 1..=n {
                sum += (k as f64).powf(-ZIPF_S);
                cdf.push(sum);
            }
            let perm = shuffled(n, &mut rng);
            (0..len)
                .map(|_| {
                    let u = rng.unit() * sum;
                    let rank = cdf.partition_point(|c| *c < u).min(n - 1);
                    perm[rank]
                })
                .collect()
        }
    }
}

/// `0..n` in a random order: which index each popularity rank lands on.
fn shuffled(n: usize, rng: &mut Rng) -> Vec<u32> {
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        perm.swap(i, rng.below(i + 1));
    }
    perm
}

/// Share of the Zipf traffic that falls on the most popular 1% of `n` sessions.
pub fn zipf_top1_share(n: usize) -> f64 {
    let weight = |k: usize| (k as f64).powf(-ZIPF_S);
    let top: f64 = (1..=(n / 100).max(1)).map(weight).sum();
    let all: f64 = (1..=n).map(weight).sum();
    top / all
}

/// The values every sessile session in the benches holds: about 200 bytes of data, as a
/// logged-in web session might (user id, CSRF token, locale, a cart, a flash message).
pub fn fill(session: &mut Session, i: u64) {
    let r = session.insert("user_id", &(1_000_000 + i));
    let r = r.and_then(|()| session.insert("csrf", "p8yJ1bQm4Xw0n3zVt7uKcE2sLd9hRa5fGi6oYj-MNkW"));
    let r = r.and_then(|()| session.insert("locale", "en-GB"));
    let r = r.and_then(|()| {
        session.insert(
            "cart",
            &[
                100_001u32, 100_002, 100_003, 250_000, 250_001, 999_999, 123_456, 654_321,
            ],
        )
    });
    let r = r.and_then(|()| {
        session.insert(
            "flash",
            "Your changes were saved. Check your inbox to confirm your address.",
        )
    });
    r.expect("bench values fit");
}

/// Creates `n` sessions holding [`fill`]'s values; returns their tokens.
pub fn populate(store: &Store, n: usize) -> Vec<SessionId> {
    (0..n)
        .map(|i| {
            let mut s = store.create().expect("create");
            fill(&mut s, i as u64);
            store.save(&s).expect("save");
            s.id().clone()
        })
        .collect()
}

/// Copies a closed store's folder (sled files) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Bytes used on disk under `path`.
pub fn disk_bytes(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => total += disk_bytes(&entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// A line of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`); 0 where unavailable.
pub fn proc_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the peak-RSS counter (`VmHWM`) so the next phase is measured on its own.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The 50th and 99th percentile of `samples` (sorted in place).
pub fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}
