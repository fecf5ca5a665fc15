//! The builder that opens a [`Store`](crate::Store).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::{Clock, duration_ms};
use crate::error::{Error, Result};
use crate::record::codec::DECODE_LIMIT;

/// How hard the store works to get each write onto disk before returning. On Redis both
/// modes mean the same: the server's persistence (`appendonly`, `appendfsync`) decides.
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

/// Settings for a [`Store`](crate::Store), checked when [`Config::open`] is called.
///
/// Every setting has a default chosen to be safe for a web application; `Config::new(path)
/// .open()` is the same as [`Store::open`](crate::Store::open).
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
///     .purge_interval(Duration::from_secs(60))
///     .open()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Config does nothing until `open` is called"]
pub struct Config {
    pub(crate) path: PathBuf,
    pub(crate) idle_ms: u64,
    pub(crate) absolute_ms: Option<u64>,
    /// Set by [`Config::max_idle_timeout`]; unset, the default rises to the idle timeout.
    max_idle_ms: Option<u64>,
    /// Set by [`Config::max_absolute_timeout`]; unset, the default rises to the absolute
    /// timeout.
    max_absolute_ms: Option<u64>,
    touch_granularity_ms: Option<u64>,
    pub(crate) purge_interval: Duration,
    pub(crate) purge_batch: usize,
    pub(crate) purge_thread: bool,
    pub(crate) durability: Durability,
    pub(crate) clock: Clock,
    pub(crate) max_record_size: usize,
    pub(crate) max_key_len: usize,
    pub(crate) cache_entries: usize,
    pub(crate) cache_bytes: usize,
    pub(crate) storage_cache_bytes: u64,
    pub(crate) max_sessions_per_user: Option<usize>,
    pub(crate) event_capacity: usize,
    /// Set by [`Config::redis`]: the server the store lives on, instead of `path`.
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<RedisTarget>,
}

/// Default idle timeout: 30 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default absolute timeout: 12 hours from creation.
pub const DEFAULT_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// Default ceiling on a session's own idle timeout: 90 days, or the store's idle timeout if
/// that is longer.
pub const DEFAULT_MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(90 * 86_400);
/// Default ceiling on a session's own absolute timeout: 400 days (the longest cookie
/// lifetime browsers accept), or the store's absolute timeout if that is longer.
pub const DEFAULT_MAX_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(400 * 86_400);
/// The largest user name a session can carry, in bytes.
pub const MAX_USER_LEN: usize = 1024;
/// The longest idle or absolute timeout a [`Config`] accepts: 10 years of 365 days.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

const MAX_PURGE_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_PURGE_BATCH: usize = 1_000_000;
const MAX_CACHE_ENTRIES: usize = 1 << 24;
/// Default of [`Config::cache_bytes`].
const DEFAULT_CACHE_BYTES: usize = 64 << 20;
const STORAGE_CACHE_BYTES: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 40);
const MAX_SESSIONS_PER_USER: usize = 1_000_000;
const MAX_EVENT_CAPACITY: usize = 1 << 20;

impl Config {
    /// Settings with every default, for a store in the folder `path` (created on open if
    /// missing, with mode 0700 on Unix; an existing folder open to other users is made
    /// 0700, since sled's files take the process's umask).
    pub fn new(path: impl AsRef<Path>) -> Config {
        Config {
            path: path.as_ref().to_path_buf(),
            idle_ms: duration_ms(DEFAULT_IDLE_TIMEOUT),
            absolute_ms: Some(duration_ms(DEFAULT_ABSOLUTE_TIMEOUT)),
            max_idle_ms: None,
            max_absolute_ms: None,
            touch_granularity_ms: None,
            purge_interval: Duration::from_secs(60),
            purge_batch: 1024,
            purge_thread: true,
            durability: Durability::Background,
            clock: Clock::system(),
            max_record_size: 256 * 1024,
            max_key_len: 256,
            cache_entries: 16 * 1024,
            cache_bytes: DEFAULT_CACHE_BYTES,
            storage_cache_bytes: 64 * 1024 * 1024,
            max_sessions_per_user: None,
            event_capacity: 1024,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// Where the store will be: the folder, or for [`Config::redis`] the URL with anything
    /// that may hold a password replaced by `***` (what [`Store::path`](crate::Store::path) reports, and what
    /// to print).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Settings with every default, for a store on the Redis or Valkey server at `url`
    /// (`redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS). Every other
    /// setting works as for
    /// [`Config::new`], and
    /// [`open`](Config::open) returns the same [`Store`](crate::Store).
    ///
    /// Any number of stores, in any number of processes, may open the same server and
    /// namespace: they are one store. What changes from a folder (see the README's
    /// "Scaling out"): there is no read cache ([`cache_entries`](Config::cache_entries)
    /// and [`cache_bytes`](Config::cache_bytes) size the token memo and, for the tower
    /// adapter, the versions its next saves expect, never served to a read),
    /// [`Store::flush`](crate::Store::flush) and [`Durability`] promise what the
    /// server's own persistence settings promise, events reach only the subscribers of the
    /// store that made the change, and [`Store::path`](crate::Store::path) is the URL without its password.
    /// A `rediss://` URL connects over TLS (see
    /// [`redis_tls_root_ca`](Config::redis_tls_root_ca) and
    /// [`redis_tls_client_auth`](Config::redis_tls_client_auth)). For a primary found
    /// through Sentinel see [`Config::redis_sentinel`]; for Redis Cluster,
    /// [`Config::redis_cluster`].
    ///
    /// ```no_run
    /// # fn main() -> sessile::Result<()> {
    /// let store = sessile::Config::redis("redis://127.0.0.1:6379/")
    ///     .max_sessions_per_user(5)
    ///     .open()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(url: impl Into<String>) -> Config {
        let target = RedisTarget::new(url.into());
        let mut config = Config::new(target.redacted());
        config.redis = Some(target);
        config
    }

    /// Settings with every default, for a store on the Redis primary that the Sentinels at
    /// `sentinel_urls` (`redis://[user:password@]host:port`, usually port 26379) monitor
    /// under `master_name`. Each new connection asks the Sentinels, in order, where the
    /// primary is and checks that the server it reaches is one (`ROLE`), so after a
    /// failover the store finds the promoted replica by itself: calls in flight when the
    /// primary dies fail, calls made before Sentinel has promoted a replica fail within a
    /// few seconds, and calls after it succeed.
    ///
    /// Each Sentinel is reached with the user and password of its own URL. The primary is
    /// reached with the scheme (`rediss://` for TLS, with the same
    /// [`redis_tls_root_ca`](Config::redis_tls_root_ca) and
    /// [`redis_tls_client_auth`](Config::redis_tls_client_auth)) and database of the first
    /// URL, and its user and password unless
    /// [`redis_primary_auth`](Config::redis_primary_auth) gives the primary's own (the
    /// usual setup: a password on the data nodes, none or another on the Sentinels).
    ///
    /// Writes are acknowledged by the primary alone unless
    /// [`redis_min_replicas`](Config::redis_min_replicas) is set: a failover right after a
    /// write may promote a replica that never saw it, so a logout could come back and a
    /// save could be lost. With `redis_min_replicas(1)`, every revocation (destroy,
    /// revoke-all, the cap, a regeneration) returns only once a connected replica has it
    /// (at once if none is connected: set the server's `min-replicas-to-write` too);
    /// ordinary saves under the default [`Durability`] still risk the last moments before
    /// the failover.
    ///
    /// ```no_run
    /// # fn main() -> sessile::Result<()> {
    /// let store = sessile::Config::redis_sentinel(
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///     "mymaster",
    /// )
    /// .redis_min_replicas(1)
    /// .open()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis_sentinel(
        sentinel_urls: impl IntoIterator<Item = impl Into<String>>,
        master_name: impl Into<String>,
    ) -> Config {
        let urls: Vec<String> = sentinel_urls.into_iter().map(Into::into).collect();
        let mut target = RedisTarget::new(urls.first().cloned().unwrap_or_default());
        target.sentinel = Some(SentinelTarget {
            urls,
            master: master_name.into(),
            auth: None,
        });
        let mut config = Config::new(target.redacted());
        config.redis = Some(target);
        config
    }

    /// With [`Config::redis_sentinel`]: the user (`None` for the default user) and password
    /// the primary takes, when they are not those of the first Sentinel URL. Ignored
    /// otherwise.
    #[cfg(feature = "redis")]
    pub fn redis_primary_auth(mut self, user: Option<&str>, password: impl Into<String>) -> Config {
        if let Some(sentinel) = self.redis.as_mut().and_then(|t| t.sentinel.as_mut()) {
            sentinel.auth = Some((user.map(str::to_owned), password.into()));
        }
        self
    }

    /// Settings with every default, for a store on the Redis Cluster that `seed_urls`
    /// (`redis://[user:password@]host:port`, any of its primaries) belong to. The client
    /// learns the slot map from them and follows `MOVED` and `ASK` redirections.
    ///
    /// Every key of a namespace carries the namespace as its hash tag
    /// (`{<namespace>}:s:<digest>` and so on), so the whole namespace lives in one slot,
    /// on one shard, and every script's keys are on the node that runs it. What that
    /// means for scale: one namespace gets one shard's memory and CPU (its replicas give
    /// it failover, not capacity); namespaces spread over the shards, so several
    /// applications, or one split into namespaces, use them all.
    ///
    /// A namespace on a single server uses untagged keys (`<namespace>:s:<digest>`): to
    /// move it to a Cluster, `sessile export` from the server and `sessile import` into
    /// the Cluster (the README's "Running Redis for sessile").
    ///
    /// ```no_run
    /// # fn main() -> sessile::Result<()> {
    /// let store = sessile::Config::redis_cluster([
    ///     "redis://10.0.0.1:6379",
    ///     "redis://10.0.0.2:6379",
    ///     "redis://10.0.0.3:6379",
    /// ])
    /// .redis_namespace("shop")
    /// .open()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis_cluster(seed_urls: impl IntoIterator<Item = impl Into<String>>) -> Config {
        let urls: Vec<String> = seed_urls.into_iter().map(Into::into).collect();
        let mut target = RedisTarget::new(urls.first().cloned().unwrap_or_default());
        target.cluster = Some(urls);
        let mut config = Config::new(target.redacted());
        config.redis = Some(target);
        config
    }

    /// The prefix of every key this store writes on Redis (`<namespace>:s:<digest>` and so
    /// on), so several applications can share one server. Default `sessile`; 1 to 64
    /// ASCII letters, digits, `-`, `_` or `.` (checked at [`open`](Config::open)), so no
    /// namespace's keys can match another's. Stores that share a namespace are one store.
    /// Ignored for a folder.
    #[cfg(feature = "redis")]
    pub fn redis_namespace(mut self, namespace: impl Into<String>) -> Config {
        if let Some(target) = &mut self.redis {
            target.namespace = namespace.into();
        }
        self
    }

    /// How many connections to the Redis server this store keeps at most (default 16;
    /// from 1 to 1024). An operation waits up to 2 s for a free one, then fails with
    /// [`Error::Storage`]. Ignored for a folder.
    #[cfg(feature = "redis")]
    pub fn redis_pool_size(mut self, connections: u32) -> Config {
        if let Some(target) = &mut self.redis {
            target.pool_size = connections;
        }
        self
    }

    /// Makes every change that must be durable (a destroy, a revoke-all, the per-user cap,
    /// a regeneration, [`Store::flush`](crate::Store::flush), and every write under
    /// [`Durability::EveryWrite`]) wait until `n` replicas have it (Redis `WAIT`), or every
    /// connected replica when fewer than `n` are connected, so a failover to a replica
    /// that was connected cannot bring the session back. If they do not confirm within
    /// 2 s the call fails with [`Error::NotReplicated`](crate::Error::NotReplicated) (the
    /// change is on the primary; a regeneration has moved the session, which then holds
    /// its new token). A primary cut off from every replica confirms at once: set the
    /// server's `min-replicas-to-write` too, so it refuses writes then. Default 0: writes are acknowledged by the primary alone, and a
    /// failover may lose the last ones. Ignored for a folder.
    #[cfg(feature = "redis")]
    pub fn redis_min_replicas(mut self, n: usize) -> Config {
        if let Some(target) = &mut self.redis {
            target.min_replicas = n;
        }
        self
    }

    /// Trusts the CA in the PEM file `path` (a private CA) for the server's certificate
    /// on a `rediss://` URL, instead of the platform's roots. Read at
    /// [`open`](Config::open). Ignored for a folder.
    #[cfg(feature = "redis")]
    pub fn redis_tls_root_ca(mut self, path: impl AsRef<Path>) -> Config {
        if let Some(target) = &mut self.redis {
            target.tls_root_ca = Some(path.as_ref().to_path_buf());
        }
        self
    }

    /// Presents the client certificate and key in the PEM files `cert` and `key` to a
    /// server that asks for one (mutual TLS, `rediss://` URLs). Read at
    /// [`open`](Config::open). Ignored for a folder.
    #[cfg(feature = "redis")]
    pub fn redis_tls_client_auth(
        mut self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Config {
        if let Some(target) = &mut self.redis {
            target.tls_client_auth =
                Some((cert.as_ref().to_path_buf(), key.as_ref().to_path_buf()));
        }
        self
    }

    /// A session expires this long after it was last saved or touched. Default 30 minutes;
    /// from 1 ms to [`MAX_TIMEOUT`].
    ///
    /// Both timeouts also apply to sessions already stored: shortening one takes effect at
    /// once for every session, including those written under a longer setting. Tools that
    /// open a server's folder should use the server's timeouts.
    pub fn idle_timeout(mut self, idle: Duration) -> Config {
        self.idle_ms = duration_ms(idle);
        self
    }

    /// A session expires this long after it was created, however active it is. Default 12
    /// hours; from 1 ms to [`MAX_TIMEOUT`]. OWASP recommends both an idle and an absolute
    /// timeout.
    pub fn absolute_timeout(mut self, absolute: Duration) -> Config {
        self.absolute_ms = Some(duration_ms(absolute));
        self
    }

    /// Removes the absolute timeout: an active session can then live forever (unless it
    /// sets its own, see [`Lifetime`](crate::Lifetime)).
    pub fn no_absolute_timeout(mut self) -> Config {
        self.absolute_ms = None;
        self
    }

    /// The longest idle timeout a session may set for itself with
    /// [`Session::set_lifetime`](crate::Session::set_lifetime) (or get from an adapter's
    /// framework expiry); longer ones are cut to it. Default 90 days, or the store's idle
    /// timeout if that is longer; set, from the store's idle timeout to [`MAX_TIMEOUT`].
    /// Lowering it applies at once to stored sessions.
    pub fn max_idle_timeout(mut self, ceiling: Duration) -> Config {
        self.max_idle_ms = Some(duration_ms(ceiling));
        self
    }

    /// The longest absolute timeout a session may set for itself; longer ones are cut to
    /// it. Default 400 days, or the store's absolute timeout if that is longer; set, from
    /// the store's absolute timeout (if any) to [`MAX_TIMEOUT`]. Lowering it applies at
    /// once to stored sessions.
    pub fn max_absolute_timeout(mut self, ceiling: Duration) -> Config {
        self.max_absolute_ms = Some(duration_ms(ceiling));
        self
    }

    /// `touch` and unchanged saves skip the disk write when they would move the expiry by
    /// less than this, and changed saves then keep the stored expiry (no index writes). Default: 1/20 of the idle timeout (90 s for 30 minutes), so a session
    /// may expire up to that much earlier than `last activity + idle`. At most the idle
    /// timeout; zero writes on every touch. A session with its own idle timeout
    /// ([`Lifetime`](crate::Lifetime)) gets the same fraction of it (36 hours for 30
    /// days), and no step is ever more than 1/20 of the lifetime left.
    pub fn touch_granularity(mut self, granularity: Duration) -> Config {
        self.touch_granularity_ms = Some(duration_ms(granularity));
        self
    }

    /// How often the purge thread deletes expired sessions. Default 60 seconds; from 1 ms
    /// to 7 days.
    pub fn purge_interval(mut self, interval: Duration) -> Config {
        self.purge_interval = interval;
        self
    }

    /// How many expired sessions the purge deletes per batch before letting other work
    /// through. Default 1024; from 1 to 1,000,000.
    pub fn purge_batch(mut self, batch: usize) -> Config {
        self.purge_batch = batch;
        self
    }

    /// Whether `open` starts the background purge thread. Default `true`. Without it,
    /// call [`Store::purge_expired`](crate::Store::purge_expired) yourself; expired sessions are never returned either way.
    pub fn purge_thread(mut self, enabled: bool) -> Config {
        self.purge_thread = enabled;
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

    /// How many decoded sessions the in-memory read cache holds at most (fewer when they
    /// are large: see [`cache_bytes`](Config::cache_bytes)). Default 16384; 0 turns the
    /// cache off; at most 16,777,216.
    ///
    /// Two smaller structures follow it (and are off with it): a memo of the tokens of
    /// sessions found live, so a hot load skips the token's digest (twice this many
    /// slots, at most 65,536, 72 bytes each), and, in each thread that loads sessions,
    /// private copies of up to 2,048 hot records of at most 4 KiB each (about 1 MiB per
    /// thread with records of a few hundred bytes, 8 MiB at most), so two cores reading the
    /// same sessions do not contend. Each tower-sessions adapter on the store
    /// (`sessile::tower::TowerStore`) also keeps its hot sessions as tower
    /// wants them, keyed by tower's ID (twice this many slots, at most 8,192, of records of
    /// at most 4 KiB asked for at least three times).
    pub fn cache_entries(mut self, entries: usize) -> Config {
        self.cache_entries = entries;
        self
    }

    /// How many bytes of records the shared read cache holds: each record counts its
    /// stored size, and at least `cache_bytes / cache_entries` (so small records are
    /// bounded by [`cache_entries`](Config::cache_entries), large ones by this). Default
    /// 64 MiB; from 64 KiB to 1 TiB. Without it, 16,384 records of 256 KiB would be
    /// 4 GiB. It bounds the cached records' bytes, not all the memory around them: their
    /// decoded form, the adapters' parsed values and each thread's copies (at most 8 MiB
    /// per thread, see [`cache_entries`](Config::cache_entries)) come on top.
    pub fn cache_bytes(mut self, bytes: usize) -> Config {
        self.cache_bytes = bytes;
        self
    }

    /// Memory sled may use for its page cache, in bytes. Default 64 MiB (sled's own
    /// default is 1 GiB); from 1 MiB to 1 TiB.
    pub fn storage_cache_bytes(mut self, bytes: u64) -> Config {
        self.storage_cache_bytes = bytes;
        self
    }

    /// When a save gives a session to a user who already has `n` live sessions, that
    /// user's oldest sessions (by creation time) are destroyed to keep `n`, never the
    /// session being saved. Default: no limit; `n` from 1 to 1,000,000.
    ///
    /// Two logins of one user at the same moment leave exactly `n` sessions (the caps are
    /// applied one after the other under a per-user lock), never fewer.
    pub fn max_sessions_per_user(mut self, n: usize) -> Config {
        self.max_sessions_per_user = Some(n);
        self
    }

    /// Capacity of each [`Store::subscribe`](crate::Store::subscribe) channel. Default 1024; from 1 to 1,048,576
    /// (the channel's buffer is allocated when subscribing). Events that do not fit are
    /// dropped and counted, never waited for.
    pub fn event_capacity(mut self, capacity: usize) -> Config {
        self.event_capacity = capacity;
        self
    }

    /// Checks every setting against its range.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for the first setting out of range.
    pub(crate) fn validate(&self) -> Result<()> {
        fn check(ok: bool, setting: &'static str, reason: impl FnOnce() -> String) -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidConfig {
                    setting,
                    reason: reason(),
                })
            }
        }
        let max_timeout = duration_ms(MAX_TIMEOUT);
        check(
            (1..=max_timeout).contains(&self.idle_ms),
            "idle_timeout",
            || format!("must be from 1 ms to {MAX_TIMEOUT:?}"),
        )?;
        check(
            self.absolute_ms
                .is_none_or(|a| (1..=max_timeout).contains(&a)),
            "absolute_timeout",
            || format!("must be from 1 ms to {MAX_TIMEOUT:?}"),
        )?;
        check(
            (self.idle_ms..=max_timeout).contains(&self.max_idle_ms()),
            "max_idle_timeout",
            || {
                format!(
                    "must be from idle_timeout ({:?}) to {MAX_TIMEOUT:?}: raise \
                     max_idle_timeout or lower idle_timeout",
                    Duration::from_millis(self.idle_ms)
                )
            },
        )?;
        check(
            (self.absolute_ms.unwrap_or(1)..=max_timeout).contains(&self.max_absolute_ms()),
            "max_absolute_timeout",
            || {
                format!(
                    "must be from absolute_timeout ({:?}) to {MAX_TIMEOUT:?}: raise \
                     max_absolute_timeout or lower absolute_timeout",
                    Duration::from_millis(self.absolute_ms.unwrap_or(1))
                )
            },
        )?;
        check(
            self.touch_granularity_ms.is_none_or(|g| g <= self.idle_ms),
            "touch_granularity",
            || "must not exceed idle_timeout".into(),
        )?;
        check(
            !self.purge_interval.is_zero() && self.purge_interval <= MAX_PURGE_INTERVAL,
            "purge_interval",
            || format!("must be from 1 ms to {MAX_PURGE_INTERVAL:?}"),
        )?;
        check(
            (1..=MAX_PURGE_BATCH).contains(&self.purge_batch),
            "purge_batch",
            || format!("must be from 1 to {MAX_PURGE_BATCH}"),
        )?;
        check(
            (128..=DECODE_LIMIT).contains(&self.max_record_size),
            "max_record_size",
            || format!("must be from 128 to {DECODE_LIMIT} bytes"),
        )?;
        check(
            (64u64 << 10..=1u64 << 40)
                .contains(&u64::try_from(self.cache_bytes).unwrap_or(u64::MAX)),
            "cache_bytes",
            || "must be from 64 KiB to 1 TiB".into(),
        )?;
        check(
            self.cache_entries <= MAX_CACHE_ENTRIES,
            "cache_entries",
            || format!("must be at most {MAX_CACHE_ENTRIES}"),
        )?;
        check(
            STORAGE_CACHE_BYTES.contains(&self.storage_cache_bytes),
            "storage_cache_bytes",
            || {
                format!(
                    "must be from {} to {} bytes",
                    STORAGE_CACHE_BYTES.start(),
                    STORAGE_CACHE_BYTES.end()
                )
            },
        )?;
        check(
            self.max_sessions_per_user
                .is_none_or(|n| (1..=MAX_SESSIONS_PER_USER).contains(&n)),
            "max_sessions_per_user",
            || format!("must be from 1 to {MAX_SESSIONS_PER_USER}"),
        )?;
        #[cfg(feature = "redis")]
        if let Some(target) = &self.redis {
            target.validate()?;
        }
        check(
            (1..=MAX_EVENT_CAPACITY).contains(&self.event_capacity),
            "event_capacity",
            || format!("must be from 1 to {MAX_EVENT_CAPACITY}"),
        )
    }

    /// The longest idle timeout a session may carry, in milliseconds: as set, or the
    /// default raised to the store's own idle timeout.
    pub(crate) fn max_idle_ms(&self) -> u64 {
        self.max_idle_ms
            .unwrap_or_else(|| duration_ms(DEFAULT_MAX_IDLE_TIMEOUT).max(self.idle_ms))
    }

    /// The longest absolute timeout a session may carry, in milliseconds: as set, or the
    /// default raised to the store's own absolute timeout.
    pub(crate) fn max_absolute_ms(&self) -> u64 {
        self.max_absolute_ms.unwrap_or_else(|| {
            duration_ms(DEFAULT_MAX_ABSOLUTE_TIMEOUT).max(self.absolute_ms.unwrap_or(0))
        })
    }

    /// The granularity in milliseconds, defaulted from the idle timeout.
    pub(crate) fn granularity_ms(&self) -> u64 {
        self.touch_granularity_ms.unwrap_or(self.idle_ms / 20)
    }
}

#[cfg(feature = "redis")]
/// Where a Redis store lives, as given to [`Config::redis`](crate::Config::redis).
#[derive(Clone)]
pub(crate) struct RedisTarget {
    pub(crate) url: String,
    pub(crate) namespace: String,
    pub(crate) pool_size: u32,
    /// A PEM file of the CA that signed the server's certificate, instead of the
    /// platform's roots.
    pub(crate) tls_root_ca: Option<PathBuf>,
    /// PEM files of the client's certificate and key (mutual TLS).
    pub(crate) tls_client_auth: Option<(PathBuf, PathBuf)>,
    /// Replicas a durable change waits for (`WAIT`).
    pub(crate) min_replicas: usize,
    /// Set by [`Config::redis_sentinel`]: the primary is found through these Sentinels
    /// (`url` is then the first of them).
    pub(crate) sentinel: Option<SentinelTarget>,
    /// Set by [`Config::redis_cluster`]: the seed nodes of a Redis Cluster (`url` is then
    /// the first of them).
    pub(crate) cluster: Option<Vec<String>>,
}

#[cfg(feature = "redis")]
/// The Sentinels of [`Config::redis_sentinel`] and the name they know the primary by.
#[derive(Clone)]
pub(crate) struct SentinelTarget {
    pub(crate) urls: Vec<String>,
    pub(crate) master: String,
    /// [`Config::redis_primary_auth`]: the primary's user and password.
    pub(crate) auth: Option<(Option<String>, String)>,
}

#[cfg(feature = "redis")]
impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &self.redacted())
            .field("namespace", &self.namespace)
            .field("pool_size", &self.pool_size)
            .field("tls_root_ca", &self.tls_root_ca)
            .field(
                "tls_client_auth",
                &self.tls_client_auth.as_ref().map(|(c, _)| c),
            )
            .field("min_replicas", &self.min_replicas)
            .field(
                "sentinel",
                &self.sentinel.as_ref().map(|s| {
                    (
                        s.urls.iter().map(|u| redact(u)).collect::<Vec<_>>(),
                        &s.master,
                    )
                }),
            )
            .field(
                "cluster",
                &self
                    .cluster
                    .as_ref()
                    .map(|urls| urls.iter().map(|u| redact(u)).collect::<Vec<_>>()),
            )
            .finish()
    }
}

#[cfg(feature = "redis")]
impl RedisTarget {
    pub(crate) fn new(url: String) -> RedisTarget {
        RedisTarget {
            url,
            namespace: "sessile".into(),
            pool_size: 16,
            tls_root_ca: None,
            tls_client_auth: None,
            min_replicas: 0,
            sentinel: None,
            cluster: None,
        }
    }

    /// The URL with anything that may hold a password replaced by `***`: the user
    /// information before the `@`, and the query string (`redis+unix:///s?pass=...`).
    ///
    /// A password need not be escaped to be accepted by some clients, so it may hold `/`,
    /// `?` or `@`: everything up to the last `@` goes, and after that any query.
    pub(crate) fn redacted(&self) -> String {
        redact(&self.url)
    }

    /// Checks the namespace and pool size (the URL is checked by the client when the
    /// store opens).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a namespace or pool size out of range.
    fn validate(&self) -> Result<()> {
        let ns = &self.namespace;
        // Only characters that mean nothing to SCAN's patterns and cannot make one
        // namespace's keys look like another's (`:` would: `a` and `a:s:x`).
        if ns.is_empty()
            || ns.len() > 64
            || !ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(Error::InvalidConfig {
                setting: "redis_namespace",
                reason: "must be 1 to 64 ASCII letters, digits, '-', '_' or '.'".into(),
            });
        }
        if !(1..=1024).contains(&self.pool_size) {
            return Err(Error::InvalidConfig {
                setting: "redis_pool_size",
                reason: "must be from 1 to 1024".into(),
            });
        }
        if let Some(sentinel) = &self.sentinel
            && (sentinel.urls.is_empty() || sentinel.master.is_empty())
        {
            return Err(Error::InvalidConfig {
                setting: "redis_sentinel",
                reason: "needs at least one Sentinel URL and the primary's name".into(),
            });
        }
        if self.cluster.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::InvalidConfig {
                setting: "redis_cluster",
                reason: "needs at least one seed URL".into(),
            });
        }
        Ok(())
    }
}

/// `url` with anything that may hold a password replaced by `***` (see
/// [`RedisTarget::redacted`]).
#[cfg(feature = "redis")]
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let (hidden, rest) = match rest.rfind('@') {
        Some(at) => ("***", &rest[at..]),
        None => ("", rest),
    };
    match rest.split_once('?') {
        Some((before, _)) => format!("{scheme}{hidden}{before}?***"),
        None => format!("{scheme}{hidden}{rest}"),
    }
}
