//! The builder that opens a [`Store`](crate::Store).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::{Clock, duration_ms};
use crate::codec::DECODE_LIMIT;
use crate::error::{Error, Result};
use crate::store::Store;

/// How hard the store works to get each write onto disk before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// sled's background flush (every few hundred milliseconds) carries ordinary writes to
    /// disk; operations that revoke access (`destroy`, `regenerate`, `destroy_user`,
    /// `destroy_by_handle`) flush before they return, so a crash can lose a recent
    /// `create` or `save` but never brings back a logged-out session.
    #[default]
    Background,
    /// Every write flushes before it returns. A write that returned survives a crash.
    /// Each write then costs a disk sync.
    EveryWrite,
}

/// Settings for a [`Store`], checked when [`Config::open`] is called.
///
/// Every setting has a default chosen to be safe for a web application; `Config::new(path)
/// .open()` is the same as [`Store::open`].
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), sessile::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// use std::time::Duration;
/// let store = sessile::Config::new(dir.path().join("sessions"))
///     .idle_timeout(Duration::from_secs(30 * 60))
///     .absolute_timeout(Duration::from_secs(12 * 3600))
///     .cleanup_interval(Duration::from_secs(60))
///     .open()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Config does nothing until `open` is called"]
pub struct Config {
    pub(crate) path: PathBuf,
    pub(crate) idle_ms: u64,
    pub(crate) absolute_ms: Option<u64>,
    pub(crate) touch_granularity_ms: Option<u64>,
    pub(crate) cleanup_interval: Duration,
    pub(crate) cleanup_batch: usize,
    pub(crate) cleanup_thread: bool,
    pub(crate) durability: Durability,
    pub(crate) clock: Clock,
    pub(crate) max_record_size: usize,
    pub(crate) max_key_len: usize,
    pub(crate) cache_entries: usize,
    pub(crate) storage_cache_bytes: u64,
    pub(crate) max_sessions_per_user: Option<usize>,
    pub(crate) event_capacity: usize,
}

/// Default idle timeout: 30 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default absolute timeout: 12 hours from creation.
pub const DEFAULT_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// The largest user name a session can carry, in bytes.
pub const MAX_USER_LEN: usize = 1024;

impl Config {
    /// Settings with every default, for a store in the folder `path` (created on open if
    /// missing, with mode 0700 on Unix).
    pub fn new(path: impl AsRef<Path>) -> Config {
        Config {
            path: path.as_ref().to_path_buf(),
            idle_ms: duration_ms(DEFAULT_IDLE_TIMEOUT),
            absolute_ms: Some(duration_ms(DEFAULT_ABSOLUTE_TIMEOUT)),
            touch_granularity_ms: None,
            cleanup_interval: Duration::from_secs(60),
            cleanup_batch: 1024,
            cleanup_thread: true,
            durability: Durability::Background,
            clock: Clock::system(),
            max_record_size: 256 * 1024,
            max_key_len: 256,
            cache_entries: 16 * 1024,
            storage_cache_bytes: 64 * 1024 * 1024,
            max_sessions_per_user: None,
            event_capacity: 1024,
        }
    }

    /// A session expires this long after it was last saved or touched. Default 30 minutes.
    ///
    /// Both timeouts also apply to sessions already stored: shortening one takes effect at
    /// once for every session, including those written under a longer setting. Tools that
    /// open a server's folder should use the server's timeouts.
    pub fn idle_timeout(mut self, idle: Duration) -> Config {
        self.idle_ms = duration_ms(idle);
        self
    }

    /// A session expires this long after it was created, however active it is. Default 12
    /// hours. OWASP recommends both an idle and an absolute timeout.
    pub fn absolute_timeout(mut self, absolute: Duration) -> Config {
        self.absolute_ms = Some(duration_ms(absolute));
        self
    }

    /// Removes the absolute timeout: an active session can then live forever.
    pub fn no_absolute_timeout(mut self) -> Config {
        self.absolute_ms = None;
        self
    }

    /// `touch` and unchanged saves skip the disk write when they would move the expiry by
    /// less than this. Default: 1/20 of the idle timeout (90 s for 30 minutes), so a session
    /// may expire up to that much earlier than `last activity + idle`.
    pub fn touch_granularity(mut self, granularity: Duration) -> Config {
        self.touch_granularity_ms = Some(duration_ms(granularity));
        self
    }

    /// How often the cleanup thread deletes expired sessions. Default 60 seconds.
    pub fn cleanup_interval(mut self, interval: Duration) -> Config {
        self.cleanup_interval = interval;
        self
    }

    /// How many expired sessions the cleanup deletes per batch before letting other work
    /// through. Default 1024.
    pub fn cleanup_batch(mut self, batch: usize) -> Config {
        self.cleanup_batch = batch;
        self
    }

    /// Whether `open` starts the background cleanup thread. Default `true`. Without it,
    /// call [`Store::purge_expired`] yourself; expired sessions are never returned either way.
    pub fn cleanup_thread(mut self, enabled: bool) -> Config {
        self.cleanup_thread = enabled;
        self
    }

    /// When writes reach the disk. Default [`Durability::Background`].
    pub fn durability(mut self, durability: Durability) -> Config {
        self.durability = durability;
        self
    }

    /// The time source. Default [`Clock::system`]; tests use a
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: Clock) -> Config {
        self.clock = clock;
        self
    }

    /// The largest encoded session record, in bytes. Default 256 KiB, at most 4 MiB. A save
    /// or insert over it fails with [`Error::TooLarge`].
    pub fn max_record_size(mut self, bytes: usize) -> Config {
        self.max_record_size = bytes;
        self
    }

    /// How many decoded sessions the in-memory read cache holds. Default 16384; 0 turns
    /// the cache off.
    pub fn cache_entries(mut self, entries: usize) -> Config {
        self.cache_entries = entries;
        self
    }

    /// Memory sled may use for its page cache, in bytes. Default 64 MiB (sled's own
    /// default is 1 GiB).
    pub fn storage_cache_bytes(mut self, bytes: u64) -> Config {
        self.storage_cache_bytes = bytes;
        self
    }

    /// When a save gives a session to a user who already has `n` live sessions, that
    /// user's oldest sessions (by creation time) are destroyed to keep `n`. Default: no
    /// limit.
    pub fn max_sessions_per_user(mut self, n: usize) -> Config {
        self.max_sessions_per_user = Some(n);
        self
    }

    /// Capacity of each [`Store::subscribe`] channel. Default 1024. Events that do not fit
    /// are dropped and counted, never waited for.
    pub fn event_capacity(mut self, capacity: usize) -> Config {
        self.event_capacity = capacity;
        self
    }

    /// Checks the settings and opens the store.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a setting out of range; otherwise the errors of
    /// [`Store::open`].
    pub fn open(self) -> Result<Store> {
        self.validate()?;
        Store::open_with(self)
    }

    fn validate(&self) -> Result<()> {
        let invalid = |msg: &str| Err(Error::InvalidConfig(msg.to_string()));
        if self.idle_ms == 0 {
            return invalid("idle_timeout must be at least 1 ms");
        }
        if self.absolute_ms == Some(0) {
            return invalid("absolute_timeout must be at least 1 ms");
        }
        if self.cleanup_interval.is_zero() {
            return invalid("cleanup_interval must be positive");
        }
        if self.cleanup_batch == 0 {
            return invalid("cleanup_batch must be at least 1");
        }
        if self.max_record_size < 128 || self.max_record_size > DECODE_LIMIT {
            return Err(Error::InvalidConfig(format!(
                "max_record_size must be between 128 and {DECODE_LIMIT} bytes"
            )));
        }
        if self.max_sessions_per_user == Some(0) {
            return invalid("max_sessions_per_user must be at least 1");
        }
        if self.event_capacity == 0 {
            return invalid("event_capacity must be at least 1");
        }
        Ok(())
    }

    /// The granularity in milliseconds, defaulted from the idle timeout.
    pub(crate) fn granularity_ms(&self) -> u64 {
        self.touch_granularity_ms.unwrap_or(self.idle_ms / 20)
    }
}
