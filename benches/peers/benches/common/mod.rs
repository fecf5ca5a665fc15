//! What the peer benches share: run size, criterion settings, and how lookups pick
//! sessions.
#![allow(dead_code, reason = "each bench uses what it needs")]

use std::time::Duration;

use criterion::Criterion;

/// True for a small run: `SESSILE_BENCH_QUICK=1`, or under `cargo test`.
pub fn smoke() -> bool {
    std::env::var_os("SESSILE_BENCH_QUICK").is_some_and(|v| v != "0")
        || !std::env::args().any(|a| a == "--bench")
}

/// Criterion with this repository's timings (shorter for a small run).
pub fn criterion() -> Criterion {
    let c = Criterion::default().configure_from_args();
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

/// The main benches' generator (SplitMix64).
#[path = "../../../common/rng.rs"]
#[allow(dead_code, reason = "not every helper is used here")]
mod rng;
pub use rng::Rng;

/// `len` picks into `0..n`: uniform, or (`hot`) 99% of them on the first 1%.
pub fn picks(rng: &mut Rng, n: usize, len: usize, hot: bool) -> Vec<usize> {
    let few = (n / 100).max(1);
    (0..len)
        .map(|_| match hot {
            false => rng.below(n),
            true if rng.below(100) < 99 => rng.below(few),
            true => few + rng.below(n - few),
        })
        .collect()
}
