//! The time rules: idle and absolute timeouts (the store's, or a session's own within the
//! store's ceilings), when a session expires, whether it is still live, and the touch
//! granularity.

use std::time::Duration;

use crate::clock::duration_ms;
use crate::config::Config;
use crate::record::codec::{Header, OwnTimeouts};

/// How long one session may live, when it should not follow the store's timeouts: a
/// "remember me" login that idles out after 30 days instead of 30 minutes, or a
/// password-reset session that dies after 10.
///
/// Each timeout left unset follows the store's ([`Config::idle_timeout`],
/// [`Config::absolute_timeout`]). A timeout longer than the store's ceiling
/// ([`Config::max_idle_timeout`], [`Config::max_absolute_timeout`]) is cut to the ceiling,
/// so a bug or a hostile value cannot make a session immortal. The lifetime is saved with
/// the session, carried over by [`Store::regenerate`](crate::Store::regenerate), and
/// honoured by every read, touch and the purge.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), sessile::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::time::Duration;
/// use sessile::Lifetime;
/// let store = sessile::Store::open(dir.path().join("sessions"))?; // 30 min idle
/// let mut session = store.create()?;
/// let remember_me = Lifetime::default()
///     .with_idle(Duration::from_secs(30 * 86_400))
///     .with_absolute(Duration::from_secs(90 * 86_400));
/// session.set_lifetime(remember_me);
/// store.save(&session)?;
/// let loaded = store.load(session.id())?.expect("live");
/// assert_eq!(loaded.lifetime(), remember_me);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Lifetime {
    idle: Option<Duration>,
    absolute: Option<Duration>,
}

impl Lifetime {
    /// This session expires `idle` after it was last saved or touched (at least 1 ms). The
    /// absolute timeout (the store's, unless [`with_absolute`](Self::with_absolute) sets
    /// one) still applies: a 30-day idle timeout on a store with a 12-hour absolute one
    /// ends after 12 hours, so set both for "remember me".
    #[must_use]
    pub fn with_idle(mut self, idle: Duration) -> Lifetime {
        self.idle = Some(idle.max(Duration::from_millis(1)));
        self
    }

    /// This session expires `absolute` after it was created, however active it is (at
    /// least 1 ms).
    #[must_use]
    pub fn with_absolute(mut self, absolute: Duration) -> Lifetime {
        self.absolute = Some(absolute.max(Duration::from_millis(1)));
        self
    }

    /// The session's own idle timeout, or `None` for the store's.
    pub fn idle(&self) -> Option<Duration> {
        self.idle
    }

    /// The session's own absolute timeout, or `None` for the store's.
    pub fn absolute(&self) -> Option<Duration> {
        self.absolute
    }

    /// The stored form, cut to the store's ceilings.
    pub(crate) fn to_own(self, config: &Config) -> OwnTimeouts {
        let ms =
            |d: Option<Duration>, ceiling: u64| d.map_or(0, |d| duration_ms(d).clamp(1, ceiling));
        OwnTimeouts {
            idle_ms: ms(self.idle, config.max_idle_ms()),
            absolute_ms: ms(self.absolute, config.max_absolute_ms()),
        }
    }

    /// The lifetime a stored record asks for, cut to the ceilings in force now (as the
    /// timeouts applied to it are).
    pub(crate) fn from_own(own: OwnTimeouts, config: &Config) -> Lifetime {
        let d = |ms: u64, ceiling: u64| (ms > 0).then(|| Duration::from_millis(ms.min(ceiling)));
        Lifetime {
            idle: d(own.idle_ms, config.max_idle_ms()),
            absolute: d(own.absolute_ms, config.max_absolute_ms()),
        }
    }
}

/// The timeouts in force for one session: its own within the ceilings, else the store's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    idle_ms: u64,
    absolute_ms: Option<u64>,
}

impl Timeouts {
    pub(crate) fn of(config: &Config, own: OwnTimeouts) -> Timeouts {
        Timeouts {
            idle_ms: match own.idle_ms {
                0 => config.idle_ms,
                own => own.min(config.max_idle_ms()),
            },
            absolute_ms: match own.absolute_ms {
                0 => config.absolute_ms,
                own => Some(own.min(config.max_absolute_ms())),
            },
        }
    }

    /// The expiry of a session active at `now` and created at `created_at`: the idle
    /// timeout from now, capped by the absolute timeout from creation.
    pub(crate) fn expires_at(&self, now: u64, created_at: u64) -> u64 {
        let idle = now.saturating_add(self.idle_ms);
        match self.absolute_ms {
            Some(absolute) => idle.min(created_at.saturating_add(absolute)),
            None => idle,
        }
    }

    /// The touch granularity for these timeouts: the store's, scaled by this session's
    /// idle timeout against the store's (1/20 of the idle timeout by default).
    fn granularity_ms(&self, config: &Config) -> u64 {
        let scaled = u128::from(config.granularity_ms()) * u128::from(self.idle_ms)
            / u128::from(config.idle_ms.max(1));
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }
}

/// Whether a record is live at `now`. Besides its stored expiry, the timeouts in force now
/// are applied to its times, so shortening a timeout (or a ceiling) in the config takes
/// effect at once for sessions written under the old one.
pub(crate) fn is_live(config: &Config, header: &Header, now: u64) -> bool {
    live_until(config, header) > now
}

/// When a record stops being live: its stored expiry, or earlier if the timeouts in force
/// applied to its times say so.
pub(crate) fn live_until(config: &Config, header: &Header) -> u64 {
    let timeouts = Timeouts::of(config, header.own);
    let idle = header
        .expires_at
        .min(header.last_seen.saturating_add(timeouts.idle_ms));
    match timeouts.absolute_ms {
        Some(absolute) => idle.min(header.created_at.saturating_add(absolute)),
        None => idle,
    }
}

/// Whether a write at `now` that would move a session's expiry from `old` to `new` can be
/// skipped. The step is the session's touch granularity, but never more than 1/20 of the
/// lifetime left, so a lifetime much shorter than the idle timeout still gets its expiry
/// moved.
pub(crate) fn within_granularity(
    config: &Config,
    timeouts: &Timeouts,
    now: u64,
    old: u64,
    new: u64,
) -> bool {
    let step = timeouts
        .granularity_ms(config)
        .min(new.saturating_sub(now) / 20);
    new >= old && new - old < step
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new("unused")
            .idle_timeout(Duration::from_secs(10))
            .absolute_timeout(Duration::from_secs(25))
    }

    fn store_timeouts(c: &Config) -> Timeouts {
        Timeouts::of(c, OwnTimeouts::default())
    }

    #[test]
    fn idle_is_capped_by_absolute() {
        let c = config();
        let t = store_timeouts(&c);
        assert_eq!(t.expires_at(1_000, 1_000), 11_000);
        assert_eq!(t.expires_at(20_000, 1_000), 26_000);
        let open_ended = store_timeouts(&c.clone().no_absolute_timeout());
        assert_eq!(open_ended.expires_at(20_000, 1_000), 30_000);
    }

    #[test]
    fn liveness_uses_stored_expiry_and_current_timeouts() {
        let c = config();
        let h = Header {
            expires_at: 11_000,
            last_seen: 1_000,
            created_at: 1_000,
            version: 1,
            own: OwnTimeouts::default(),
        };
        assert!(is_live(&c, &h, 10_999));
        assert!(!is_live(&c, &h, 11_000));
        let shorter = c.idle_timeout(Duration::from_secs(5));
        assert!(!is_live(&shorter, &h, 6_000));
    }

    #[test]
    fn own_timeouts_apply_within_the_ceilings() {
        let c = config().max_idle_timeout(Duration::from_secs(100));
        let own = Lifetime::default()
            .with_idle(Duration::from_secs(1_000))
            .with_absolute(Duration::from_secs(5))
            .to_own(&c);
        assert_eq!(own.idle_ms, 100_000, "cut to the ceiling");
        let t = Timeouts::of(&c, own);
        assert_eq!(t.expires_at(1_000, 1_000), 6_000, "its own absolute wins");
        let remembered = Timeouts::of(
            &c,
            OwnTimeouts {
                idle_ms: 50_000,
                absolute_ms: 0,
            },
        );
        assert_eq!(
            remembered.expires_at(1_000, 1_000),
            26_000,
            "store's absolute"
        );
        // A ceiling lowered after the write applies to the stored value at once.
        let lower = c.clone().max_idle_timeout(Duration::from_secs(20));
        assert_eq!(Timeouts::of(&lower, own).idle_ms, 20_000);
    }

    #[test]
    fn granularity_skips_small_forward_moves_only() {
        let c = config(); // granularity 500 ms
        let t = store_timeouts(&c);
        assert!(within_granularity(&c, &t, 0, 20_000, 20_499));
        assert!(!within_granularity(&c, &t, 0, 20_000, 20_500));
        assert!(!within_granularity(&c, &t, 0, 20_000, 19_999));
        // A short remaining lifetime shrinks the step: 2 s left -> 100 ms.
        assert!(!within_granularity(&c, &t, 18_600, 20_000, 20_300));
        // A session idling 10x longer than the store's gets a 10x step.
        let long = Timeouts::of(
            &c,
            OwnTimeouts {
                idle_ms: 100_000,
                absolute_ms: 0,
            },
        );
        assert!(within_granularity(&c, &long, 0, 200_000, 204_999));
    }
}
