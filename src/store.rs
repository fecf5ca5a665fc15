//! The public handle: open a folder, then create, load, save, touch, update and destroy.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use sled::IVec;

use crate::cleanup::{self, CleanupThread};
use crate::codec::{self, Data, Header, STORE_FORMAT};
use crate::commit::{self, Committed, Inserted, conflict};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{DestroyReason, Event};
use crate::expiry;
use crate::id::{Digest, SessionId};
use crate::registry::Registration;
use crate::session::Session;
use crate::shared::{CAS_ATTEMPTS, NewRecord, Shared, Swap};
use crate::stats::Stats;

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
    pub(crate) shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Dropped with the last `Store` handle: stops the cleanup thread, then flushes.
struct Owner {
    shared: Arc<Shared>,
    cleanup: Option<CleanupThread>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(thread) = self.cleanup.take() {
            thread.stop();
        }
        if let Err(e) = self.shared.db.flush() {
            tracing::error!(error = %e, "flush on close failed");
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.config.path)
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
        let path = config.path.clone();
        prepare_folder(&path)?;
        let registration = Registration::new(&path)?;
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(config.storage_cache_bytes)
            .open()
            .map_err(|e| open_error(e, &path))?;
        let registration = registration.opened();
        let format = check_format(&db, &path)?;
        let shared = Arc::new(Shared::new(db, config, registration, format)?);
        let cleanup = if shared.config.cleanup_thread {
            let thread = CleanupThread::spawn(Arc::clone(&shared))
                .map_err(|source| Error::Folder { path, source })?;
            Some(thread)
        } else {
            None
        };
        Ok(Store {
            _owner: Arc::new(Owner {
                shared: Arc::clone(&shared),
                cleanup,
            }),
            shared,
        })
    }

    /// The folder this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.config.path
    }

    /// Creates a new, empty session with a fresh token and stores it.
    ///
    /// The token comes from the operating system's random number generator; a token sent by
    /// a client is never adopted.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure, [`Error::Entropy`] if no random token
    /// could be made.
    pub fn create(&self) -> Result<Session> {
        let sh = &self.shared;
        for _ in 0..CAS_ATTEMPTS {
            let id = SessionId::generate()?;
            let digest = id.digest();
            let data = Arc::new(Data::new());
            if let Inserted::Written(header) =
                sh.insert_record(&digest, None, Arc::clone(&data), None)?
            {
                return Ok(Session {
                    id,
                    digest,
                    header,
                    user: None,
                    data,
                    limits: sh.limits(),
                });
            }
        }
        Err(Error::Entropy(
            "every generated token was already in use".to_string(),
        ))
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
        let digest = id.digest();
        let entry = self.shared.live_entry(&digest)?;
        Ok(entry.map(|e| self.shared.session(id.clone(), digest, &e)))
    }

    /// Writes `session`'s values and user, and extends its idle expiry.
    ///
    /// The last save wins over concurrent saves of the same session (use
    /// [`update`](Self::update) for read-modify-write). A save whose values and user are
    /// unchanged and which would move the expiry by less than the touch granularity writes
    /// nothing. The absolute timeout still counts from creation.
    ///
    /// # Errors
    ///
    /// - [`Error::NotFound`] if the session was destroyed or has expired: a save never
    ///   brings a session back;
    /// - [`Error::TooLarge`] if the record or the user name is over its limit (nothing is
    ///   written);
    /// - [`Error::Storage`] on a storage failure.
    pub fn save(&self, session: &Session) -> Result<()> {
        let record = NewRecord {
            bytes: self.shared.encode(session.user(), &session.data)?,
            user: session.user.clone(),
            data: Some(Arc::clone(&session.data)),
            ..commit::unchanged_record()
        };
        let committed = {
            let _guard = self.shared.lock(&session.digest);
            self.shared.commit_locked(&session.digest, record, None)?
        };
        self.after_commit(&session.digest, committed)
    }

    /// Applies the per-user limit after a write that gave the session to a user; maps a
    /// session that is gone to [`Error::NotFound`].
    fn after_commit(&self, digest: &Digest, committed: Committed) -> Result<()> {
        match committed {
            Committed::Written {
                assigned: Some(user),
            } => self.shared.enforce_user_limit(&user, digest),
            Committed::Written { assigned: None } | Committed::Unchanged => Ok(()),
            Committed::Gone | Committed::Lapsed => Err(Error::NotFound),
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
    /// [`Error::Storage`] on a storage failure.
    pub fn touch(&self, id: &SessionId) -> Result<bool> {
        let sh = &self.shared;
        let digest = id.digest();
        if let Some(live) = sh.touch_without_write(&digest, None)? {
            return Ok(live);
        }
        let _guard = sh.lock(&digest);
        let committed = sh.commit_locked(&digest, commit::unchanged_record(), None)?;
        Ok(matches!(
            committed,
            Committed::Written { .. } | Committed::Unchanged
        ))
    }

    /// Atomically reads, changes and writes a live session.
    ///
    /// `f` runs exactly once if the session is live (and not at all otherwise), with the
    /// session locked against other writers, so concurrent updates never lose each
    /// other's changes. The write counts as activity, like [`save`](Self::save). Returns
    /// `f`'s result, or `None` if the session does not exist or has expired.
    ///
    /// `f` must not call this store for the same session (it would wait for itself).
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
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] if the changed record is over its limit (nothing is written);
    /// [`Error::Storage`] on a storage failure.
    pub fn update<R>(
        &self,
        id: &SessionId,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Result<Option<R>> {
        let sh = &self.shared;
        let digest = id.digest();
        let (result, committed) = {
            let _guard = sh.lock(&digest);
            let Some(entry) = sh.entry_locked(&digest)? else {
                return Ok(None);
            };
            if !expiry::is_live(&sh.config, &entry.header, sh.now()) {
                return Ok(None);
            }
            let mut session = sh.session(id.clone(), digest, &entry);
            let result = f(&mut session);
            let record = NewRecord {
                bytes: sh.encode(session.user(), &session.data)?,
                user: session.user,
                data: Some(session.data),
                ..commit::unchanged_record()
            };
            (result, sh.commit_locked(&digest, record, None)?)
        };
        self.after_commit(&digest, committed)?;
        Ok(Some(result))
    }

    /// Destroys a session (logout). Returns `true` if it existed and was live; an expired
    /// session not yet purged is removed too, but reported as `false`.
    ///
    /// The removal is flushed to disk before this returns, so a crash cannot bring the
    /// session back.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure.
    pub fn destroy(&self, id: &SessionId) -> Result<bool> {
        let live = self
            .shared
            .destroy_digest(&id.digest(), DestroyReason::Destroy)?;
        self.shared.db.flush()?;
        Ok(live == Some(true))
    }

    /// Deletes every expired session now, in bounded batches, and drops stale index
    /// entries: the same work the cleanup thread does each interval. Returns how many
    /// sessions were deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure.
    pub fn purge_expired(&self) -> Result<usize> {
        cleanup::purge(&self.shared)
    }

    /// Asks the cleanup thread to run a pass now, without waiting for it. Does nothing if
    /// the thread is turned off.
    pub fn schedule_purge(&self) {
        if let Some(thread) = &self._owner.cleanup {
            thread.wake();
        }
    }

    /// How many live sessions the store holds. This reads every record's header, so it
    /// takes time proportional to the number of stored sessions.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure.
    pub fn len(&self) -> Result<usize> {
        let sh = &self.shared;
        let now = sh.now();
        let mut n = 0;
        for item in sh.sessions.iter() {
            let (_, bytes) = item?;
            if codec::parse_header(&bytes).is_ok_and(|h| expiry::is_live(&sh.config, &h, now)) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether the store holds no live session. Same cost as [`len`](Self::len) at worst.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure.
    pub fn is_empty(&self) -> Result<bool> {
        let sh = &self.shared;
        let now = sh.now();
        for item in sh.sessions.iter() {
            let (_, bytes) = item?;
            if codec::parse_header(&bytes).is_ok_and(|h| expiry::is_live(&sh.config, &h, now)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes everything to disk now and returns when it is there.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the flush fails.
    pub fn flush(&self) -> Result<()> {
        self.shared.db.flush()?;
        Ok(())
    }

    /// Counters of background work since the store was opened.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Subscribes to lifecycle [`Event`]s, for audit logs.
    ///
    /// Each subscriber gets a bounded channel ([`Config::event_capacity`]). Events are sent
    /// before the call that caused them returns; when a channel is full the event is
    /// dropped for that subscriber and counted in [`Stats::events_dropped`], so a slow or
    /// absent reader never slows the store. Dropping the receiver unsubscribes.
    pub fn subscribe(&self) -> Receiver<Event> {
        self.shared.events.subscribe()
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

/// Reads (or, in a new store, writes) `meta/format` and returns it.
fn check_format(db: &sled::Db, path: &Path) -> Result<u32> {
    let meta = db.open_tree("meta")?;
    match meta.get("format")? {
        None => {
            meta.insert("format", &STORE_FORMAT.to_be_bytes())?;
            Ok(STORE_FORMAT)
        }
        Some(v) => {
            let bytes: [u8; 4] = v.as_ref().try_into().map_err(|_| {
                Error::Corrupt(format!("meta/format is {} bytes, expected 4", v.len()))
            })?;
            match u32::from_be_bytes(bytes) {
                0 => Err(Error::Corrupt("meta/format is 0".into())),
                found if found > STORE_FORMAT => Err(Error::UnsupportedFormat {
                    path: path.to_path_buf(),
                    found,
                    supported: STORE_FORMAT,
                }),
                found => Ok(found),
            }
        }
    }
}

impl Shared {
    /// Removes the record of `digest` and its index entries. `Some(live)` if there was a
    /// record, `None` if not. Does not flush.
    pub(crate) fn destroy_digest(
        &self,
        digest: &Digest,
        reason: DestroyReason,
    ) -> Result<Option<bool>> {
        let (live, user) = {
            let _guard = self.lock(digest);
            let mut outcome = None;
            for _ in 0..CAS_ATTEMPTS {
                let Some((bytes, header)) = self.raw_locked(digest)? else {
                    return Ok(None);
                };
                if let Swap::Done = self.delete(digest, &bytes, &header, true)? {
                    outcome = Some((bytes, header));
                    break;
                }
            }
            let (bytes, header): (IVec, Header) = outcome.ok_or_else(conflict)?;
            let user = codec::parse_user_only(&bytes)
                .ok()
                .flatten()
                .map(str::to_owned);
            (expiry::is_live(&self.config, &header, self.now()), user)
        };
        self.events.emit(&self.counters, || Event::Destroyed {
            handle: digest.handle(),
            user,
            reason,
        });
        Ok(Some(live))
    }
}
