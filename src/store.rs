//! The public handle: open a folder, then create, load, save, touch, update and destroy.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::engine::Engine;
use crate::engine::purge::{self, PurgeThread};
use crate::engine::verify::VerifyReport;
use crate::error::{Error, Result};
use crate::events::Subscription;
use crate::id::SessionId;
use crate::session::Session;
use crate::stats::Stats;

/// A persistent session store: in one folder, or on a Redis server
/// ([`Config::redis`](crate::Config::redis)).
///
/// `Store` is a cheap handle: clone it into every request handler or thread. The folder is
/// locked while any handle is alive; when the last one is dropped, the purge thread is
/// stopped and joined and everything is flushed to disk.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), sessile::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("sessions");
/// let store = sessile::Store::open(&path)?;
/// let mut session = store.create()?;
/// session.insert("visits", &1u32)?;
/// store.save(&session)?;
/// let token = session.id().to_string(); // goes in the cookie
/// drop(store);
///
/// // After a restart, the cookie's token finds the session again.
/// let store = sessile::Store::open(&path)?;
/// let id: sessile::SessionId = token.parse()?;
/// let session = store.load(&id)?.expect("still there");
/// assert_eq!(session.get::<u32>("visits")?, Some(1));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    pub(crate) engine: Arc<Engine>,
    owner: Arc<Owner>,
}

/// Dropped with the last `Store` handle: stops the purge thread, then flushes.
struct Owner {
    state: Arc<Engine>,
    purge: Option<PurgeThread>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(thread) = self.purge.take() {
            thread.stop();
        }
        if let Err(e) = self.state.flush() {
            tracing::error!(error = %e, "flush on close failed");
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.engine.config().path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store in `path` with the default [`Config`], creating the folder (mode
    /// 0700 on Unix) if it does not exist, and closing an existing one to other users.
    ///
    /// # Errors
    ///
    /// - [`Error::Locked`] if the folder is open in another `Store` or process;
    /// - [`Error::Folder`] if `path` is a file or cannot be created or written;
    /// - [`Error::UnsupportedFormat`] if a newer sessile wrote the store;
    /// - [`Error::Corrupt`] or [`Error::Storage`] if the files are damaged.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Config::new(path).open()
    }

    fn open_with(config: Config) -> Result<Store> {
        Store::start(Engine::open(config)?)
    }

    /// Starts the purge thread (if configured) of a freshly opened store.
    fn start(state: Engine) -> Result<Store> {
        let state = Arc::new(state);
        let purge = if state.config().purge_thread {
            let thread = PurgeThread::spawn(Arc::clone(&state)).map_err(Error::PurgeThread)?;
            Some(thread)
        } else {
            None
        };
        Ok(Store {
            owner: Arc::new(Owner {
                state: Arc::clone(&state),
                purge,
            }),
            engine: state,
        })
    }

    /// The folder this store lives in; for a store on Redis, the server's URL with any
    /// password replaced by `***`.
    pub fn path(&self) -> &Path {
        &self.engine.config().path
    }

    /// Creates a new, empty session with a fresh token and stores it.
    ///
    /// The token comes from the operating system's random number generator; a token sent by
    /// a client is never adopted.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure, [`Error::Entropy`] if no random token
    /// could be made, [`Error::TokenCollision`] if every fresh token was taken (a broken
    /// random number generator), [`Error::WriteInsideUpdate`] inside an
    /// [`update`](Self::update) closure.
    pub fn create(&self) -> Result<Session> {
        self.engine.create()
    }

    /// Reads the session with token `id`. `None` if there is none or it has expired, even
    /// when the purge thread has not deleted it yet. Reading does not extend the expiry
    /// (see [`touch`](Self::touch)).
    ///
    /// A record that cannot be decoded is moved to the quarantine tree and reported as
    /// absent; other sessions are unaffected.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure.
    pub fn load(&self, id: &SessionId) -> Result<Option<Session>> {
        self.engine.load(id)
    }

    /// Writes what `session` changed since it was read, and extends its idle expiry.
    ///
    /// A save applies `session`'s changes (values inserted, replaced or removed, a
    /// [`clear`](Session::clear), [`set_user`](Session::set_user),
    /// [`set_lifetime`](Session::set_lifetime)) onto the version stored at that moment:
    /// keys it did not touch keep what is stored now, whoever wrote them. So two
    /// overlapping requests of one session (two tabs, a page's parallel XHRs) that change
    /// different keys keep both changes, whether they run in one process or on two
    /// servers sharing Redis, and a request that loaded the session before a logout does
    /// not log it back in. The same key changed by two overlapping saves ends with the
    /// later save's value; a `clear` removes every value stored when it is saved. Use
    /// [`update`](Self::update) for read-modify-write of one value (a counter). The
    /// changes accumulate on the copy: saving it again applies all of them again.
    ///
    /// ```
    /// # fn main() -> Result<(), sessile::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = sessile::Store::open(dir.path().join("s"))?;
    /// # let id = store.create()?.id().clone();
    /// let mut tab1 = store.load(&id)?.expect("live");
    /// let mut tab2 = store.load(&id)?.expect("live");
    /// tab1.insert("cart", &vec![42u32])?;
    /// tab2.insert("theme", "dark")?;
    /// store.save(&tab1)?;
    /// store.save(&tab2)?; // keeps the cart tab 1 saved
    /// let now = store.load(&id)?.expect("live");
    /// assert_eq!(now.get::<Vec<u32>>("cart")?, Some(vec![42]));
    /// assert_eq!(now.get::<String>("theme")?.as_deref(), Some("dark"));
    /// # Ok(()) }
    /// ```
    ///
    /// A save whose values and user are
    /// unchanged and which would move the expiry by less than the touch granularity writes
    /// nothing; one that changes them but would move the expiry that little keeps the
    /// stored expiry (one write instead of three). The absolute timeout still counts from
    /// creation.
    ///
    /// # Errors
    ///
    /// - [`Error::NotFound`] if the session was destroyed or has expired: a save never
    ///   brings a session back;
    /// - [`Error::TooLarge`] if the record or the user name is over its limit (nothing is
    ///   written);
    /// - [`Error::WriteInsideUpdate`] inside an [`update`](Self::update) closure;
    /// - [`Error::SessionBusy`] on Redis, if another store's update held the session for
    ///   the whole 5 s lease (nothing is written);
    /// - [`Error::Storage`] on a storage failure.
    pub fn save(&self, session: &Session) -> Result<()> {
        self.engine.save(session)
    }

    /// Extends the idle expiry of a live session without reading or writing its values.
    ///
    /// Returns `true` if the session exists and is live, whether or not a write was needed:
    /// when the expiry would move by less than the touch granularity, nothing is written,
    /// so read-mostly traffic costs no disk writes.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure; [`Error::WriteInsideUpdate`] inside an
    /// [`update`](Self::update) closure when a write is needed.
    pub fn touch(&self, id: &SessionId) -> Result<bool> {
        self.engine.touch(&self.engine.digest_of(id), None)
    }

    /// Atomically reads, changes and writes a live session.
    ///
    /// `f` runs exactly once if the session is live (and not at all otherwise), with the
    /// session locked against other writers (on Redis, those of every store on the
    /// namespace, by a lease of up to 5 s), so concurrent updates never lose each other's
    /// changes. A destroy, revoke-all or cap of the session made through this store (or,
    /// on a folder, through any handle of it) waits for `f` to return, since it takes the
    /// session's lock, and then ends the session. One made through another store on
    /// Redis does not wait for the lease (an attacker updating a stolen session in a loop
    /// must not hold off "log out everywhere"): the update then fails with
    /// [`Error::NotFound`] and the session stays gone. The write counts as activity, like
    /// [`save`](Self::save). Returns `f`'s result, or `None` if the session does not exist
    /// or has expired.
    ///
    /// # Calling the store from `f`
    ///
    /// Reads work inside `f`: [`load`](Self::load), [`sessions_of`](Self::sessions_of),
    /// [`len`](Self::len), [`stats`](Self::stats) and the other read-only methods never
    /// wait for a lock, so they cannot deadlock with this update or with updates on other
    /// threads. A read of the session being updated sees the stored version, without
    /// `f`'s changes. Writes to any sessile store inside `f` (`save`, `touch`, `create`,
    /// `destroy`, a nested `update`, ...) fail at once with [`Error::WriteInsideUpdate`]
    /// instead of waiting: do them after `update` returns (a `touch` that needs no write
    /// still answers). Do not make `f` wait for
    /// another thread that writes to this store.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), sessile::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessile::Store::open(dir.path().join("sessions"))?;
    /// let id = store.create()?.id().clone();
    /// let n = store.update(&id, |s| {
    ///     let n = s.get::<u64>("n")?.unwrap_or(0) + 1;
    ///     s.insert("n", &n)?;
    ///     Ok::<_, sessile::Error>(n)
    /// })?;
    /// assert_eq!(n.transpose()?, Some(1));
    ///
    /// // Reads inside the closure work; writes are refused instead of deadlocking.
    /// let other = store.create()?;
    /// let inner = store.update(&id, |_| {
    ///     assert!(store.load(other.id()).unwrap().is_some());
    ///     store.save(&other)
    /// })?;
    /// assert!(matches!(inner, Some(Err(sessile::Error::WriteInsideUpdate))));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`Error::TooLarge`] if the changed record is over its limit (nothing is written);
    /// - [`Error::NotFound`] if the session expired while `f` ran, or was destroyed,
    ///   revoked or evicted meanwhile (by another store on Redis; nothing is written);
    /// - [`Error::WriteInsideUpdate`] if this call itself is made inside an `update`
    ///   closure;
    /// - [`Error::UpdateConflict`] if the session was written while `f` ran by a write
    ///   the update could not hold off: `f` gave the session to another user while a
    ///   revoke-all or cap of its previous user was running, or (on Redis) another
    ///   store's revoke-all or cap changed it (`f` is not run twice; nothing is written);
    /// - [`Error::SessionBusy`] on Redis, if another store's update held the session for
    ///   the whole 5 s lease;
    /// - [`Error::Storage`] on a storage failure.
    pub fn update<R>(
        &self,
        id: &SessionId,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Result<Option<R>> {
        self.engine.update_with(id, f)
    }

    /// Destroys a session (logout). Returns `true` if it existed and was live; an expired
    /// session not yet purged is removed too, but reported as `false`.
    ///
    /// The removal is flushed to disk before this returns, so a crash cannot bring the
    /// session back.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure; [`Error::WriteInsideUpdate`] inside an
    /// [`update`](Self::update) closure.
    pub fn destroy(&self, id: &SessionId) -> Result<bool> {
        self.engine.destroy(id)
    }

    /// Gives `session` a fresh token (do this on login and on every privilege change).
    ///
    /// The record moves to the new token in one atomic step (a sled transaction, or one
    /// script on Redis), carrying the stored session with `session`'s changes applied
    /// (unsaved ones included, as a [`save`](Self::save) applies them) and its creation
    /// time, so the absolute timeout still counts from the original creation. `session`'s
    /// own values are not refreshed: load it again to see what others saved. The old token stops
    /// working at once. After a crash, either the old token works with the old record or
    /// only the new one exists. Flushed to disk before it returns; `session` then holds
    /// the new token.
    ///
    /// A regeneration and a [`destroy_user`](Store::destroy_user) of the session's user never
    /// overlap: either the regeneration completes first (and the revoke destroys the session
    /// under its new token) or the revoke does (and the regeneration fails with
    /// [`Error::NotFound`](crate::Error::NotFound)).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), sessile::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessile::Store::open(dir.path().join("sessions"))?;
    /// let mut session = store.create()?;
    /// let old = session.id().clone();
    /// session.set_user(Some("alice")); // logging in
    /// store.regenerate(&mut session)?;
    /// assert!(store.load(&old)?.is_none());
    /// assert_eq!(store.load(session.id())?.expect("live").user(), Some("alice"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`Error::NotFound`](crate::Error::NotFound) if the session was destroyed or has
    ///   expired (nothing is written), or if its lifetime has already ended (then it is
    ///   deleted, durably);
    /// - [`Error::TooLarge`](crate::Error::TooLarge) if the record is over its limit;
    /// - [`Error::TokenCollision`](crate::Error::TokenCollision) if the fresh token was
    ///   taken (a broken random number generator);
    /// - [`Error::WriteInsideUpdate`](crate::Error::WriteInsideUpdate) inside an
    ///   [`update`](Store::update) closure;
    /// - [`Error::Contended`](crate::Error::Contended) if the session kept changing under
    ///   the regeneration (on Redis, other stores' writes);
    /// - [`Error::SessionBusy`](crate::Error::SessionBusy) on Redis, if another store's
    ///   update held the session for the whole 5 s lease;
    /// - [`Error::Storage`](crate::Error::Storage) on a storage failure.
    pub fn regenerate(&self, session: &mut Session) -> Result<()> {
        self.engine.regenerate(session)
    }

    /// Checks every record against the index trees (DESIGN invariants I1 and I2) and
    /// counts what is wrong. With `repair`, adds missing index entries, removes stale ones
    /// and quarantines undecodable records; no readable session is ever deleted.
    ///
    /// Safe to run while the store is in use; counts may then include changes made during
    /// the scan.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), sessile::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessile::Store::open(dir.path().join("sessions"))?;
    /// store.create()?;
    /// let report = store.verify(false)?;
    /// assert!(report.is_consistent());
    /// assert_eq!(report.records, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Storage`](crate::Error::Storage) on a storage failure;
    /// [`Error::WriteInsideUpdate`](crate::Error::WriteInsideUpdate) for a repair inside an
    /// [`update`](Store::update) closure.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport> {
        self.engine.verify(repair)
    }

    /// Deletes every expired session now, in bounded batches, and drops stale index
    /// entries: the same work the purge thread does each interval. Returns how many
    /// sessions were deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure; [`Error::WriteInsideUpdate`] inside an
    /// [`update`](Self::update) closure.
    pub fn purge_expired(&self) -> Result<usize> {
        purge::purge(&self.engine)
    }

    /// Asks the purge thread to run a pass now, without waiting for it. Does nothing if
    /// the thread is turned off.
    pub fn schedule_purge(&self) {
        if let Some(thread) = &self.owner.purge {
            thread.wake();
        }
    }

    /// How many live sessions the store holds. This reads every record not in the read
    /// cache, so it takes time proportional to the number of stored sessions. A record
    /// that does not decode is not counted (a [`load`](Self::load) of it quarantines it).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure.
    pub fn len(&self) -> Result<usize> {
        self.engine.count_live(false)
    }

    /// Whether the store holds no live session. Same cost as [`len`](Self::len) at worst.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.engine.count_live(true)? == 0)
    }

    /// Writes everything to disk now and returns when it is there. On Redis this does
    /// nothing: what a write survives is what the server's persistence settings promise
    /// (see the README, "Scaling out").
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the flush fails.
    pub fn flush(&self) -> Result<()> {
        self.engine.flush()?;
        Ok(())
    }

    /// On Redis, the server's `maxmemory-policy` if it may evict sessile's keys (anything
    /// but `noeviction`; sessile logs a warning at open too). An evicted record loses a
    /// session; an evicted user set lets revoke-all miss sessions. `None` on sled, under
    /// `noeviction`, or where the server refuses `CONFIG` (some managed services: check
    /// their settings).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the server cannot be reached.
    pub fn eviction_policy(&self) -> Result<Option<String>> {
        self.engine.eviction_policy()
    }

    /// Counters of background work since the store was opened.
    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }

    /// Subscribes to lifecycle [`Event`](crate::Event)s, for audit logs.
    ///
    /// Each subscriber gets a bounded queue ([`Config::event_capacity`]). Events are sent
    /// before the call that caused them returns; when a queue is full the event is
    /// dropped for that subscriber and counted in [`Stats::events_dropped`], so a slow or
    /// absent reader never slows the store. Dropping the [`Subscription`] unsubscribes.
    pub fn subscribe(&self) -> Subscription {
        self.engine.subscribe()
    }
}

impl Config {
    /// Checks the settings and opens the store.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a setting out of range (or, on Redis, a URL the
    /// client does not accept); otherwise the errors of [`Store::open`]. On Redis:
    /// [`Error::Storage`] if no connection opens within 2 s, [`Error::UnsupportedFormat`]
    /// or [`Error::Corrupt`] for the namespace's format marker.
    pub fn open(self) -> Result<Store> {
        self.validate()?;
        Store::open_with(self)
    }
}
