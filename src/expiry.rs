//! Idle and absolute timeouts: when a session expires, and whether it is still live.

use crate::codec::Header;
use crate::config::Config;

/// The expiry of a session active at `now` and created at `created_at`: the idle timeout
/// from now, capped by the absolute timeout from creation.
pub(crate) fn expires_at(config: &Config, now: u64, created_at: u64) -> u64 {
    let idle = now.saturating_add(config.idle_ms);
    match config.absolute_ms {
        Some(absolute) => idle.min(created_at.saturating_add(absolute)),
        None => idle,
    }
}

/// Whether a record is live at `now`. Besides its stored expiry, the current timeouts are
/// applied to its times, so shortening a timeout in the config takes effect at once for
/// sessions written under the old one.
pub(crate) fn is_live(config: &Config, header: &Header, now: u64) -> bool {
    live_until(config, header) > now
}

/// When a record stops being live: its stored expiry, or earlier if the current timeouts
/// applied to its times say so.
pub(crate) fn live_until(config: &Config, header: &Header) -> u64 {
    let idle = header
        .expires_at
        .min(header.last_seen.saturating_add(config.idle_ms));
    match config.absolute_ms {
        Some(absolute) => idle.min(header.created_at.saturating_add(absolute)),
        None => idle,
    }
}

/// The expiry a write at `now` gives a session created at `created_at`: [`expires_at`],
/// capped by an expiry the caller asked for (an adapter's framework TTL), if any.
pub(crate) fn next_expiry(
    config: &Config,
    now: u64,
    created_at: u64,
    requested: Option<u64>,
) -> u64 {
    let own = expires_at(config, now, created_at);
    requested.map_or(own, |r| r.min(own))
}

/// Whether a write at `now` that would move the expiry from `old` to `new` can be skipped.
/// The step is the touch granularity, but never more than 1/20 of the lifetime left, so a
/// lifetime much shorter than the idle timeout still gets its expiry moved.
pub(crate) fn within_granularity(config: &Config, now: u64, old: u64, new: u64) -> bool {
    let step = config.granularity_ms().min(new.saturating_sub(now) / 20);
    new >= old && new - old < step
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> Config {
        Config::new("unused")
            .idle_timeout(Duration::from_secs(10))
            .absolute_timeout(Duration::from_secs(25))
    }

    #[test]
    fn idle_is_capped_by_absolute() {
        let c = config();
        assert_eq!(expires_at(&c, 1_000, 1_000), 11_000);
        assert_eq!(expires_at(&c, 20_000, 1_000), 26_000);
        assert_eq!(
            expires_at(&c.clone().no_absolute_timeout(), 20_000, 1_000),
            30_000
        );
    }

    #[test]
    fn liveness_uses_stored_expiry_and_current_timeouts() {
        let c = config();
        let h = Header {
            expires_at: 11_000,
            last_seen: 1_000,
            created_at: 1_000,
            version: 1,
        };
        assert!(is_live(&c, &h, 10_999));
        assert!(!is_live(&c, &h, 11_000));
        let shorter = c.idle_timeout(Duration::from_secs(5));
        assert!(!is_live(&shorter, &h, 6_000));
    }

    #[test]
    fn granularity_skips_small_forward_moves_only() {
        let c = config(); // granularity 500 ms
        assert!(within_granularity(&c, 0, 20_000, 20_499));
        assert!(!within_granularity(&c, 0, 20_000, 20_500));
        assert!(!within_granularity(&c, 0, 20_000, 19_999));
        // A short remaining lifetime shrinks the step: 2 s left -> 100 ms.
        assert!(!within_granularity(&c, 18_600, 20_000, 20_300));
        assert_eq!(next_expiry(&c, 1_000, 1_000, Some(5_000)), 5_000);
        assert_eq!(next_expiry(&c, 1_000, 1_000, None), 11_000);
    }
}
