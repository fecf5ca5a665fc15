//! The public handle: open a folder, then create, load, save, touch, update and destroy.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::backend::Backend;
use crate::backend::sled::SledBackend;
use crate::cleanup::{self, CleanupThread};
use crate::codec::STORE_FORMAT;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{DestroyReason, Event};
use crate::expiry::Lifetime;
use crate::id::SessionId;
use crate::registry::Registration;
use crate::session::Session;
use crate::state::StoreState;
use crate::stats::Stats;
use crate::values::Values;
use crate::write::commit::{Change, Committed, Contents};

/// A persistent session store in one folder.
///
/// `Store` is a cheap handle: clone it into every request handler or thread. The folder is
/// locked while any handle is alive; when the last one is dropped, the cleanup thread is
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
    pub(crate) state: Arc<StoreState>,
    owner: Arc<Owner>,
}

/// Dropped with the last `Store` handle: stops the cleanup thread, then flushes.
struct Owner {
    state: Arc<StoreState>,
    cleanup: Option<CleanupThread>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(thread) = self.cleanup.take() {
            thread.stop();
        }
        if let Err(e) = self.state.backend.flush() {
            tracing::error!(error = %e, "flush on close failed");
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.state.config.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store in `path` with the default [`Config`], creating the folder (mode
    /// 0700 on Unix) if it does not exist.
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

    pub(crate) fn open_with(config: Config) -> Result<Store> {
        #[cfg(feature = "redis")]
        if let Some(target) = &config.redis {
            let redis = crate::backend::redis::RedisBackend::connect(target, config.clock.clone())?;
            let backend = Backend::Redis(Box::new(redis));
            let format = check_format(&backend, &config.path)?;
            let state = StoreState::new(backend, config, None, format);
            return Store::start(state);
        }
        let path = config.path.clone();
        prepare_folder(&path)?;
        let registration = Registration::new(&path)?;
        let sled_config = sled::Config::new()
            .path(&path)
            .cache_capacity(config.storage_cache_bytes);
        let db = match sled_config.open().map_err(|e| open_error(e, &path)) {
            // No store of this process has the folder (the registration says so), but a
            // sled handle dropped a moment ago may still hold its lock: wait, once.
            Err(Error::Locked { .. }) => {
                crate::registry::wait_for_unlock(&path.join("db"), crate::registry::OPEN_LINGER);
                sled_config.open().map_err(|e| open_error(e, &path))?
            }
            other => other?,
        };
        let registration = registration.opened();
        let checked = SledBackend::new(db).map(Backend::Sled).and_then(|backend| {
            let format = check_format(&backend, &path)?;
            Ok((backend, format))
        });
        let (backend, format) = match checked {
            Ok(opened) => opened,
            Err(e) => {
                // The database is dropped by now, so the registration's wait for sled's
                // file lock (on drop) does not wait for our own handle.
                drop(registration);
                return Err(e);
            }
        };
        let state = StoreState::new(backend, config, Some(registration), format);
        Store::start(state)
    }

    /// Starts the cleanup thread (if configured) of a freshly opened store.
    fn start(state: StoreState) -> Result<Store> {
        let state = Arc::new(state);
        let cleanup = if state.config.cleanup_thread {
            let thread =
                CleanupThread::spawn(Arc::clone(&state)).map_err(|source| Error::Folder {
                    path: state.config.path.clone(),
                    source,
                })?;
            Some(thread)
        } else {
            None
        };
        Ok(Store {
            owner: Arc::new(Owner {
                state: Arc::clone(&state),
                cleanup,
            }),
            state,
        })
    }

    /// The folder this store lives in; for a store on Redis, the server's URL with any
    /// password replaced by `***`.
    pub fn path(&self) -> &Path {
        &self.state.config.path
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
        let state = &self.state;
        let lifetime = Lifetime::default();
        let contents = Contents::new(state, None, Values::default(), lifetime)?;
        let fresh = || {
            SessionId::generate().map(|id| {
                let digest = id.digest();
                (id, digest)
            })
        };
        let (id, digest, header) = state.insert_fresh(fresh, &contents)?;
        Ok(Session {
            id,
            digest,
            header,
            user: None,
            values: Values::default(),
            lifetime,
            limits: state.limits(),
        })
    }

    /// Reads the session with token `id`. `None` if there is none or it has expired, even
    /// when the cleanup thread has not deleted it yet. Reading does not extend the expiry
    /// (see [`touch`](Self::touch)).
    ///
    /// A record that cannot be decoded is moved to the quarantine tree and reported as
    /// absent; other sessions are unaffected.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure.
    pub fn load(&self, id: &SessionId) -> Result<Option<Session>> {
        let found = self.state.live_entry_of(id)?;
        Ok(found.map(|(digest, e)| self.state.session(id.clone(), digest, &e)))
    }

    /// Writes `session`'s values and user, and extends its idle expiry.
    ///
    /// The last save wins over concurrent saves of the same session (use
    /// [`update`](Self::update) for read-modify-write). A save whose values and user are
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
    /// - [`Error::Contended`] on Redis, if another store's update held the session for
    ///   the whole 5 s lease (nothing is written);
    /// - [`Error::Storage`] on a storage failure.
    pub fn save(&self, session: &Session) -> Result<()> {
        let state = &self.state;
        let contents = Contents::of(state, session)?;
        match state.commit(&session.digest, &Change::Replace(&contents))? {
            Committed::Written | Committed::Unchanged => Ok(()),
            Committed::Gone | Committed::Expired(_) => Err(Error::NotFound),
        }
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
        self.state.touch(&self.state.digest_of(id), None)
    }

    /// Atomically reads, changes and writes a live session.
    ///
    /// `f` runs exactly once if the session is live (and not at all otherwise), with the
    /// session locked against other writers (on Redis, those of every store on the
    /// namespace, by a lease of up to 5 s), so concurrent updates never lose each other's
    /// changes. A destroy, revoke-all or cap does not wait for `f`: the update then fails
    /// with [`Error::NotFound`] and the session stays gone. The write counts as activity, like [`save`](Self::save). Returns
    /// `f`'s result, or `None` if the session does not exist or has expired.
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
    /// - [`Error::Contended`] if `f` gave the session to another user while a revoke-all
    ///   or cap of its previous user was running, and the session was written meanwhile
    ///   (`f` is not run twice; nothing is written); on Redis also if another store's
    ///   update held the session for the whole 5 s lease;
    /// - [`Error::Storage`] on a storage failure.
    pub fn update<R>(
        &self,
        id: &SessionId,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Result<Option<R>> {
        self.state.update_with(id, f)
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
        let digest = self.state.digest_of(id);
        self.state.tokens.forgetting(&id.words(), || {
            self.state.destroy_durably(&digest, DestroyReason::Destroy)
        })
    }

    /// Deletes every expired session now, in bounded batches, and drops stale index
    /// entries: the same work the cleanup thread does each interval. Returns how many
    /// sessions were deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure; [`Error::WriteInsideUpdate`] inside an
    /// [`update`](Self::update) closure.
    pub fn purge_expired(&self) -> Result<usize> {
        cleanup::purge(&self.state)
    }

    /// Asks the cleanup thread to run a pass now, without waiting for it. Does nothing if
    /// the thread is turned off.
    pub fn schedule_purge(&self) {
        if let Some(thread) = &self.owner.cleanup {
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
        self.state.count_live(false)
    }

    /// Whether the store holds no live session. Same cost as [`len`](Self::len) at worst.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.state.count_live(true)? == 0)
    }

    /// Writes everything to disk now and returns when it is there. On Redis this does
    /// nothing: what a write survives is what the server's persistence settings promise
    /// (see the README, "Scaling out").
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the flush fails.
    pub fn flush(&self) -> Result<()> {
        self.state.backend.flush()?;
        Ok(())
    }

    /// Counters of background work since the store was opened.
    pub fn stats(&self) -> Stats {
        self.state.counters.snapshot()
    }

    /// Subscribes to lifecycle [`Event`]s, for audit logs.
    ///
    /// Each subscriber gets a bounded channel ([`Config::event_capacity`]). Events are sent
    /// before the call that caused them returns; when a channel is full the event is
    /// dropped for that subscriber and counted in [`Stats::events_dropped`], so a slow or
    /// absent reader never slows the store. Dropping the receiver unsubscribes.
    pub fn subscribe(&self) -> Receiver<Event> {
        self.state.events.subscribe()
    }
}

fn prepare_folder(path: &Path) -> Result<()> {
    let folder_error = |source| Error::Folder {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(folder_error(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "the path exists and is not a directory",
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(path).map_err(folder_error)
        }
        Err(e) => Err(folder_error(e)),
    }
}

fn open_error(e: sled::Error, path: &Path) -> Error {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => Error::Locked {
            path: path.to_path_buf(),
        },
        sled::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            Error::Folder {
                path: path.to_path_buf(),
                source: io,
            }
        }
        other => other.into(),
    }
}

/// Reads (or, in a new store, writes) the store format and returns it. An older
/// supported format is upgraded by the first write ([`StoreState::upgrade_before_write`]),
/// so looking at an old store leaves it as it is.
fn check_format(backend: &Backend, path: &Path) -> Result<u32> {
    match backend.format()? {
        None => {
            backend.set_format(STORE_FORMAT)?;
            Ok(STORE_FORMAT)
        }
        Some(0) => Err(Error::Corrupt("meta/format is 0".into())),
        Some(found) if found > STORE_FORMAT => Err(Error::UnsupportedFormat {
            path: path.to_path_buf(),
            found,
            supported: STORE_FORMAT,
        }),
        Some(found) => Ok(found),
    }
}
