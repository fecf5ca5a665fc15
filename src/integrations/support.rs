//! What both adapters share: the session key of the user, the helpers they offer next to
//! their framework's trait, and the hand-off of blocking work off the async executor. The
//! writes themselves are the engine's (its `framework` module).

use std::fmt;

use crate::engine::commit::Contents;
use crate::error::{Error, Result};
use crate::id::Digest;
use crate::store::Store;

/// The session key whose string value is the logged-in user, in both adapters.
///
/// Saving a session with a string under this key puts it in sessile's per-user index
/// (see [`Store::sessions_of`]); setting it to `null` takes it out. Without the key, the
/// tower adapter indexes an axum-login session by its user id (see
/// [`tower`](crate::tower)); removing the key then puts the session under that id.
pub const USER_KEY: &str = "sessile.user";

pub use super::base::BASE_KEY;

/// The error type of the adapters' async helpers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The helpers both adapters offer next to their framework's trait.
pub(super) mod helpers {
    use std::sync::Arc;

    use super::{BoxError, OffExecutorError, Work, run};
    #[cfg(feature = "actix")]
    use crate::id::SessionId;
    use crate::id::{Digest, SessionHandle};
    use crate::record::StoredRecord;
    use crate::store::Store;
    use crate::users::SessionInfo;

    /// See the adapters' `sessions_of`: reads every record of the user (as many as the
    /// user has), so on the blocking pool.
    pub(crate) async fn sessions_of(
        store: &Store,
        user: &str,
    ) -> Result<Vec<SessionInfo>, BoxError> {
        let user = user.to_owned();
        Ok(run(store, Work::Long, move |s| s.sessions_of(&user)).await?)
    }

    /// See the adapters' `destroy_user`: flushes, on the blocking pool.
    pub(crate) async fn destroy_user(
        store: &Store,
        user: &str,
        except: Option<SessionHandle>,
    ) -> Result<usize, BoxError> {
        let user = user.to_owned();
        let destroy = move |s: &Store| s.engine.destroy_user(&user, except);
        Ok(run(store, Work::Long, destroy).await?)
    }

    /// Destroys the record of `digest` and flushes (a logout: a crash cannot bring it
    /// back), on the blocking pool.
    pub(crate) async fn destroy(store: &Store, digest: Digest) -> Result<(), OffExecutorError> {
        run(store, Work::Long, move |s| {
            s.engine.framework_delete(&digest)
        })
        .await?;
        Ok(())
    }

    /// See the adapters' `flush`: on the blocking pool.
    pub(crate) async fn flush(store: &Store) -> Result<(), BoxError> {
        Ok(run(store, Work::Long, Store::flush).await?)
    }

    /// The live record of `digest`: from the cache, else read from sled, in place: a cache
    /// hit is well under a microsecond and a sled read of a cached page a few, while a
    /// hand-off to the blocking pool costs tens. (On Redis the adapters hand the whole
    /// lookup to the blocking pool instead.)
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    pub(crate) fn load(
        store: &Store,
        digest: Digest,
    ) -> Result<Option<Arc<StoredRecord>>, OffExecutorError> {
        Ok(store.engine.live(&digest)?)
    }

    /// [`load`] of the session `id` (of the core's tokens), through the store's memo of
    /// token digests. On Redis (a network round trip) on the blocking pool.
    #[cfg(feature = "actix")]
    pub(crate) async fn load_session(
        store: &Store,
        id: &SessionId,
    ) -> Result<Option<(Digest, Arc<StoredRecord>)>, OffExecutorError> {
        if store.engine.on_network() {
            let id = id.clone();
            return super::off_executor(store, move |s| s.engine.live_of(&id)).await;
        }
        Ok(store.engine.live_of(id)?)
    }
}

/// Why a store call made from async code failed.
#[derive(Debug)]
pub(super) enum OffExecutorError {
    /// The store reported an error.
    Store(Error),
    /// The blocking task panicked or was cancelled with its runtime.
    Task(String),
}

impl fmt::Display for OffExecutorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffExecutorError::Store(e) => write!(f, "sessile: {e}"),
            OffExecutorError::Task(e) => write!(f, "sessile: blocking task failed: {e}"),
        }
    }
}

impl std::error::Error for OffExecutorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OffExecutorError::Store(e) => Some(e),
            OffExecutorError::Task(_) => None,
        }
    }
}

impl OffExecutorError {
    /// Whether the store refused what it was given (too large, not encodable), as
    /// opposed to failing to store it: the frameworks report these as encoding errors.
    pub(super) fn is_encoding(&self) -> bool {
        matches!(self, OffExecutorError::Store(e) if is_encoding(e))
    }
}

/// Whether `e` means the store refused what it was given (too large, not encodable).
pub(super) fn is_encoding(e: &Error) -> bool {
    matches!(
        e,
        Error::TooLarge { .. } | Error::Encode { .. } | Error::EncodeRecord(_)
    )
}

impl From<Error> for OffExecutorError {
    fn from(e: Error) -> Self {
        OffExecutorError::Store(e)
    }
}

impl Work {
    /// How long writing `contents` over `digest`'s record (or as a new one, `None`) can
    /// take: a write that may apply the per-user cap (which destroys sessions and
    /// flushes) is [`Work::Long`], any other a [`Work::Write`].
    pub(super) fn of_write(store: &Store, digest: Option<&Digest>, contents: &Contents) -> Work {
        if store.engine.may_apply_cap(digest, contents) {
            Work::Long
        } else {
            Work::Write
        }
    }
}

/// How long a piece of adapter work can hold the thread that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Work {
    /// A write without a flush: a few sled inserts, tens of microseconds. Runs in place,
    /// unless the store flushes every write ([`Durability::EveryWrite`]). (A write that may
    /// apply the per-user cap is [`Work::Long`]: see [`Work::of_write`].)
    Write,
    /// Anything that flushes to disk (deletes, revocations) or scans: milliseconds. Runs
    /// on the blocking pool.
    Long,
}

/// Runs `f` where `work` says: in place when it is short, else on tokio's blocking pool,
/// so flushes and scans never stall an async worker thread. In place, `f` never waits for
/// a lock: if one is busy (a revoke-all of the user, an `update` closure of the session),
/// it gives up and runs again on the blocking pool.
pub(super) async fn run<T, F>(
    store: &Store,
    work: Work,
    f: F,
) -> std::result::Result<T, OffExecutorError>
where
    T: Send + 'static,
    F: Fn(&Store) -> Result<T> + Send + 'static,
{
    let in_place = match work {
        Work::Write => store.engine.writes_quickly(),
        Work::Long => false,
    };
    if in_place && let Some(result) = crate::engine::locks::without_waiting(|| f(store)) {
        return Ok(result?);
    }
    off_executor(store, f).await
}

/// Runs `f` on tokio's blocking thread pool, so disk reads, writes and flushes never stall
/// an async worker thread. Outside a tokio runtime it runs `f` in place.
pub(super) async fn off_executor<T, F>(
    store: &Store,
    f: F,
) -> std::result::Result<T, OffExecutorError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T> + Send + 'static,
{
    let store = store.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => match runtime.spawn_blocking(move || f(&store)).await {
            Ok(result) => Ok(result?),
            Err(e) => Err(OffExecutorError::Task(e.to_string())),
        },
        Err(_) => Ok(f(&store)?),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::engine::commit::Committed;
    use crate::events::DestroyReason;

    const IDLE: Duration = Duration::from_secs(100);
    const ABSOLUTE: Duration = Duration::from_secs(1000);

    fn open(dir: &std::path::Path, clock: &ManualClock) -> Store {
        Config::new(dir.join("s"))
            .idle_timeout(IDLE)
            .absolute_timeout(ABSOLUTE)
            .max_idle_timeout(Duration::from_secs(5_000))
            .max_absolute_timeout(Duration::from_secs(20_000))
            .purge_thread(false)
            .clock(clock.clock())
            .open()
            .expect("open")
    }

    /// Contents as a framework with a TTL of `ttl` would hand them over.
    fn contents(
        store: &Store,
        user: Option<&str>,
        pairs: &[(&str, &[u8])],
        ttl: Duration,
    ) -> Contents {
        let data = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_bytes::ByteBuf::from(v.to_vec())))
            .collect();
        let lifetime = store.engine.framework_lifetime(ttl);
        store
            .engine
            .contents(user.map(str::to_owned), data, lifetime)
            .expect("contents")
    }

    /// Inserts under exactly `digest`; `false` if it was taken.
    fn insert_at(sh: &crate::engine::Engine, digest: Digest, contents: &Contents) -> bool {
        let mut tries = 0;
        let next = || {
            tries += 1;
            if tries > 1 {
                return Err(Error::NotFound);
            }
            Ok(((), digest))
        };
        match sh.insert_new(next, contents) {
            Ok(()) => true,
            Err(Error::NotFound) => false,
            Err(e) => panic!("insert: {e}"),
        }
    }

    #[test]
    fn insert_new_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.engine;
        let d = Digest([7; 32]);
        assert!(insert_at(
            sh,
            d,
            &contents(&store, None, &[("a", b"1")], IDLE)
        ));
        assert!(!insert_at(
            sh,
            d,
            &contents(&store, None, &[("a", b"2")], IDLE)
        ));
        let entry = sh.live(&d).expect("read").expect("live");
        assert_eq!(entry.values.get("a"), Some(&b"1"[..]));
    }

    /// tower's `AtDateTime(t)` beyond the store's absolute timeout: every save hands over
    /// `t - now`, and the session lives to `t`, not to `t - age` (a save after the
    /// midpoint used to delete it while answering `Ok`). A later save cannot push the
    /// end later either.
    #[test]
    fn a_framework_date_past_the_absolute_timeout_ends_the_session_at_that_date() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.engine;
        let d = Digest([9; 32]);
        let start = sh.now();
        let until = start + 3_000_000; // t: 3,000 s after the login, past ABSOLUTE
        let at = |now: u64| Duration::from_millis(until - now);
        assert!(insert_at(
            sh,
            d,
            &contents(&store, None, &[("a", b"1")], at(start))
        ));
        clock.advance(Duration::from_secs(1_600));
        let saved = sh
            .save_contents(&d, &contents(&store, None, &[("a", b"2")], at(sh.now())))
            .expect("save");
        assert_eq!(
            saved,
            Committed::Written,
            "a save past the midpoint keeps it"
        );
        let record = sh.live(&d).expect("read").expect("live");
        assert_eq!(record.header.expires_at, until);
        // A framework that hands over a later date cannot move the end past `t`.
        let later = Duration::from_secs(10_000);
        let saved = sh
            .save_contents(&d, &contents(&store, None, &[("a", b"3")], later))
            .expect("save");
        assert_eq!(saved, Committed::Written);
        let record = sh.live(&d).expect("read").expect("live");
        assert_eq!(record.header.expires_at, until);
        // Once t is nearer than the store's absolute timeout, a save still keeps it to t.
        clock.advance(Duration::from_secs(900));
        let saved = sh
            .save_contents(&d, &contents(&store, None, &[("a", b"4")], at(sh.now())))
            .expect("save");
        assert_eq!(saved, Committed::Written, "a save 500 s before t keeps it");
        let record = sh.live(&d).expect("read").expect("live");
        assert_eq!(record.header.expires_at, until);
        clock.advance(Duration::from_secs(499));
        assert!(sh.live(&d).expect("read").is_some(), "live until t");
        clock.advance(Duration::from_secs(2));
        assert!(sh.live(&d).expect("read").is_none(), "over at t");
    }

    #[test]
    fn framework_ttls_become_the_sessions_own_lifetime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.engine;
        let (short, long, huge) = (Digest([1; 32]), Digest([2; 32]), Digest([3; 32]));
        insert_at(
            sh,
            short,
            &contents(&store, None, &[], Duration::from_secs(10)),
        );
        insert_at(
            sh,
            long,
            &contents(&store, None, &[], Duration::from_secs(3_000)),
        );
        insert_at(sh, huge, &contents(&store, None, &[], Duration::MAX));
        clock.advance(Duration::from_secs(11));
        assert!(
            sh.live(&short).expect("read").is_none(),
            "short TTL dies early"
        );
        // 3,000 s idle outlives the store's 100 s idle and its 1,000 s absolute timeout.
        clock.advance(Duration::from_secs(1_500));
        let entry = sh.live(&long).expect("read").expect("live");
        assert_eq!(entry.header.own.idle_ms, 3_000_000);
        assert_eq!(
            entry.header.own.absolute_ms, 3_000_000,
            "as long as its idle"
        );
        // "Never expire" is cut to the ceilings (5,000 s idle).
        let entry = sh.live(&huge).expect("read").expect("live");
        assert_eq!(entry.header.own.idle_ms, 5_000_000);
        assert_eq!(entry.header.own.absolute_ms, 20_000_000);
    }

    #[test]
    fn save_of_a_destroyed_session_does_not_bring_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.engine;
        let d = Digest([3; 32]);
        insert_at(sh, d, &contents(&store, Some("al"), &[], IDLE));
        assert!(
            sh.destroy_durably(&d, DestroyReason::Destroy)
                .expect("destroy")
        );
        let saved = sh.save_contents(&d, &contents(&store, Some("al"), &[("x", b"1")], IDLE));
        assert_eq!(saved.expect("save"), Committed::Gone);
        assert!(sh.live(&d).expect("read").is_none());
        assert!(store.sessions_of("al").expect("list").is_empty());
    }

    #[test]
    fn unchanged_save_with_a_small_expiry_move_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.engine;
        let d = Digest([4; 32]);
        let ttl = Duration::from_secs(50);
        insert_at(sh, d, &contents(&store, None, &[("k", b"v")], ttl));
        clock.advance(Duration::from_millis(100));
        let same = sh.save_contents(&d, &contents(&store, None, &[("k", b"v")], ttl));
        assert_eq!(same.expect("save"), Committed::Unchanged);
        let changed = sh.save_contents(&d, &contents(&store, None, &[("k", b"w")], ttl));
        assert_eq!(changed.expect("save"), Committed::Written);
        // A new TTL is a change even with the same values.
        let retimed = sh.save_contents(&d, &contents(&store, None, &[("k", b"w")], IDLE));
        assert_eq!(retimed.expect("save"), Committed::Written);
        // The granularity scales with the session's idle: 1/20 of 100 s is 5 s.
        clock.advance(Duration::from_secs(6));
        let moved = sh.save_contents(&d, &contents(&store, None, &[("k", b"w")], IDLE));
        assert_eq!(moved.expect("save"), Committed::Written);
    }

    /// tower's `AtDateTime(t)` recomputes the idle timeout (`t - now`) on every save; with
    /// the same values and the same end, nothing is written.
    #[test]
    fn a_fixed_end_recomputed_at_each_save_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.engine;
        let d = Digest([8; 32]);
        let end = Duration::from_secs(50);
        insert_at(sh, d, &contents(&store, None, &[("k", b"v")], end));
        for step in 1..10u64 {
            clock.advance(Duration::from_millis(3));
            let left = end - Duration::from_millis(3 * step);
            let saved = sh.save_contents(&d, &contents(&store, None, &[("k", b"v")], left));
            assert_eq!(saved.expect("save"), Committed::Unchanged, "save {step}");
        }
    }

    #[test]
    fn touch_with_extends_a_short_ttl_and_reports_dead_sessions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.engine;
        let d = Digest([5; 32]);
        let ttl = Duration::from_secs(2);
        insert_at(sh, d, &contents(&store, None, &[], ttl));
        for _ in 0..5 {
            clock.advance(Duration::from_millis(1_500));
            assert!(
                sh.touch_with(&d, sh.framework_lifetime(ttl))
                    .expect("touch")
            );
        }
        clock.advance(Duration::from_millis(2_001));
        assert!(
            !sh.touch_with(&d, sh.framework_lifetime(ttl))
                .expect("touch")
        );
        assert!(
            !sh.touch_with(&Digest([6; 32]), sh.framework_lifetime(ttl))
                .expect("touch")
        );
    }

    #[test]
    fn destroy_user_except_keeps_one_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.engine;
        for b in 10..13 {
            assert!(insert_at(
                sh,
                Digest([b; 32]),
                &contents(&store, Some("bo"), &[], IDLE)
            ));
        }
        let keep = Digest([11; 32]).handle();
        assert_eq!(sh.destroy_user("bo", Some(keep)).expect("destroy"), 2);
        let left = store.sessions_of("bo").expect("list");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].handle, keep);
    }
}
