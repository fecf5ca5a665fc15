//! Where the store gets the time from: the system clock, or a manual clock in tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time source of a store, in milliseconds since the Unix epoch.
///
/// [`Clock::system`] is the default. [`ManualClock`] gives tests a clock they move
/// themselves, so expiry can be tested without sleeping.
#[derive(Clone, Debug, Default)]
pub struct Clock(Source);

#[derive(Clone, Debug, Default)]
enum Source {
    #[default]
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The operating system's wall clock.
    pub fn system() -> Clock {
        Clock(Source::System)
    }

    /// Milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        match &self.0 {
            Source::System => system_ms(SystemTime::now()),
            Source::Manual(ms) => ms.load(Ordering::Acquire),
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

    /// Moves the clock forward by `by` (rounded down to whole milliseconds).
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(duration_ms(by), Ordering::AcqRel);
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

pub(crate) fn system_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(duration_ms).unwrap_or(0)
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}
