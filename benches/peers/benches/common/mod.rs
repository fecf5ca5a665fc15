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

/// SplitMix64, as in the main benches.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

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
