//! Where the store gets the time from: the system clock, or a manual clock in tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time source of a store, in milliseconds since the Unix epoch.
///
/// [`Clock::system`] is the default. [`ManualClock`] gives tests a clock they move
/// themselves, so expiry can be tested without sleeping.
///
/// # Stepping clocks
///
/// Expiry is wall-clock time, stored as milliseconds since the Unix epoch. If the clock
/// steps forward, sessions whose idle or absolute deadline the new time has passed are dead
/// at once (reads check the clock on every call). If it steps back, sessions live longer
/// by the size of the step: deadlines already written do not move, and the purge
/// re-reads the clock under each session's lock before deleting, so a session that is live
/// at the new time is never purged. Run servers with a clock that slews (NTP) rather than
/// steps.
#[derive(Clone, Default)]
pub struct Clock(Source);

#[derive(Clone, Default)]
enum Source {
    #[default]
    System,
    Manual(Arc<AtomicU64>),
    Custom(Arc<dyn Fn() -> SystemTime + Send + Sync>),
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock::system"),
            Source::Manual(ms) => write!(f, "Clock::manual({})", ms.load(Ordering::Relaxed)),
            Source::Custom(_) => f.write_str("Clock::from_fn"),
        }
    }
}

impl Clock {
    /// The operating system's wall clock.
    pub fn system() -> Clock {
        Clock(Source::System)
    }

    /// A clock that asks `now` for the time on every read: for a time source of your own
    /// (a clock shared with the rest of your application, or a test that steps time at a
    /// chosen moment). Times before the Unix epoch read as the epoch.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let skewed = sessile::Clock::from_fn(|| SystemTime::now() + Duration::from_secs(5));
    /// # let _ = skewed;
    /// ```
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Clock {
        Clock(Source::Custom(Arc::new(now)))
    }

    /// Milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        match &self.0 {
            Source::System => system_ms(SystemTime::now()),
            Source::Manual(ms) => ms.load(Ordering::Acquire),
            Source::Custom(now) => system_ms(now()),
        }
    }
}

/// A clock that only moves when told to. Clone it freely: all clones share one time.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), sessile::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::time::Duration;
/// let clock = sessile::ManualClock::new();
/// let store = sessile::Config::new(dir.path().join("sessions"))
///     .idle_timeout(Duration::from_secs(60))
///     .clock(clock.clock())
///     .open()?;
/// let session = store.create()?;
/// clock.advance(Duration::from_secs(61));
/// assert!(store.load(session.id())?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A manual clock that starts at the current system time.
    pub fn new() -> ManualClock {
        ManualClock::starting_at(SystemTime::now())
    }

    /// A manual clock that starts at `time`.
    pub fn starting_at(time: SystemTime) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(system_ms(time))))
    }

    /// Moves the clock forward by `by` (rounded down to whole milliseconds). The clock
    /// stops at the largest time it can show instead of wrapping around.
    pub fn advance(&self, by: Duration) {
        let by = duration_ms(by);
        // The closure always returns `Some`, so the update cannot fail.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |ms| {
                Some(ms.saturating_add(by))
            });
    }

    /// Sets the clock to `time`. Moving it backwards is allowed.
    pub fn set(&self, time: SystemTime) {
        self.0.store(system_ms(time), Ordering::Release);
    }

    /// The current time of this clock.
    pub fn now(&self) -> SystemTime {
        from_ms(self.0.load(Ordering::Acquire))
    }

    /// A [`Clock`] that reads this manual clock, for [`Config::clock`](crate::Config::clock).
    pub fn clock(&self) -> Clock {
        Clock(Source::Manual(Arc::clone(&self.0)))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

fn system_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(duration_ms).unwrap_or(0)
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The time `ms` milliseconds after the Unix epoch, or the latest time the platform can
/// represent if that is earlier.
pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or_else(latest_time)
}

/// The latest `SystemTime` this platform represents, found by halving steps (never panics).
fn latest_time() -> SystemTime {
    let mut t = UNIX_EPOCH;
    let mut step = Duration::from_secs(u64::MAX / 2);
    while step > Duration::ZERO {
        if let Some(next) = t.checked_add(step) {
            t = next;
        } else {
            step /= 2;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_saturates_instead_of_wrapping() {
        let clock = ManualClock::new();
        let before = clock.now();
        clock.advance(Duration::MAX);
        assert!(clock.now() >= before);
        clock.advance(Duration::from_secs(1));
        assert!(clock.now() >= before);
        assert_eq!(clock.clock().now_ms(), u64::MAX);
    }

    #[test]
    fn far_future_milliseconds_clamp_to_the_latest_time() {
        assert!(from_ms(u64::MAX) > from_ms(u64::MAX / 2));
        assert_eq!(system_ms(from_ms(1_234)), 1_234);
    }
}
