//! The sled backend: four trees in one folder, and the only code that calls sled.
//!
//! - `sessions`: digest (32 bytes) -> record;
//! - `expiry`: `expires_at` (8 bytes, big-endian) ++ digest -> empty, so a range scan
//!   walks sessions in expiry order;
//! - `users`: length of the user (2 bytes, big-endian) ++ user ++ digest -> empty;
//! - `quarantine`: digest -> the bytes of a record that did not decode;
//! - `meta`: `format` -> the store format (4 bytes, big-endian), and the revocation
//!   marks and the fingerprint secret (see `marks.rs`).
//!
//! A write is not atomic across trees; its order is: new index entries, the record by
//! compare-and-swap, then the old entries. A crash in between leaves only stale index
//! entries, which every reader tolerates (invariants I1 and I2 in ARCHITECTURE.md). The
//! stripe lock (held by every caller of a write) makes the compare-and-swap a check,
//! not a race. Regeneration is one transaction over three trees.

mod keys;
mod marks;
mod registry;

use std::ops::Bound;
use std::path::Path;

use sled::transaction::ConflictableTransactionError;
use sled::{IVec, Transactional, Tree};

use crate::backend::Swap;
use crate::backend::{Cursor, ExpiryEntry, RecordKey, UserEntry, corrupt};
use crate::error::{Error, Result};
use crate::id::Digest;
use crate::record::StoredRecord;

use self::registry::Registration;

pub(super) struct SledBackend {
    pub(super) db: sled::Db,
    pub(super) sessions: Tree,
    pub(super) expiry: Tree,
    pub(super) users: Tree,
    pub(super) quarantine: Tree,
    meta: Tree,
    /// Declared last, so it is dropped after every handle on the database: the folder
    /// counts as open in this process until sled has let go of it.
    _registration: Registration,
}

impl SledBackend {
    /// Opens (creating it if needed, mode 0700 on Unix) the folder `path` with a page
    /// cache of `cache_bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if the folder is open in this or another process,
    /// [`Error::Folder`] if it cannot be created or written, [`Error::Storage`].
    pub(super) fn open(path: &Path, cache_bytes: u64) -> Result<SledBackend> {
        prepare_folder(path)?;
        let registration = Registration::new(path)?;
        let sled_config = sled::Config::new().path(path).cache_capacity(cache_bytes);
        let db = match sled_config.open().map_err(|e| open_error(e, path)) {
            // No store of this process has the folder (the registration says so), but a
            // sled handle dropped a moment ago may still hold its lock: wait, once.
            Err(Error::Locked { .. }) => {
                registry::wait_for_unlock(&path.join("db"), registry::OPEN_LINGER);
                sled_config.open().map_err(|e| open_error(e, path))?
            }
            other => other?,
        };
        let registration = registration.opened();
        let trees = (|| {
            Ok::<_, Error>([
                db.open_tree("sessions")?,
                db.open_tree("expiry")?,
                db.open_tree("users")?,
                db.open_tree("quarantine")?,
                db.open_tree("meta")?,
            ])
        })();
        match trees {
            Ok([sessions, expiry, users, quarantine, meta]) => Ok(SledBackend {
                db,
                sessions,
                expiry,
                users,
                quarantine,
                meta,
                _registration: registration,
            }),
            Err(e) => {
                // The database first: the registration's drop waits for sled's lock.
                drop(db);
                drop(registration);
                Err(e)
            }
        }
    }

    pub(super) fn get(&self, digest: &Digest) -> Result<Option<IVec>> {
        Ok(self.sessions.get(digest.0)?)
    }

    pub(super) fn write(
        &self,
        digest: &Digest,
        old: Option<&StoredRecord>,
        new: &StoredRecord,
    ) -> Result<Swap> {
        let old_expiry = old.map(|e| e.header.expires_at);
        let old_user = old.and_then(|e| e.user.as_deref());
        if old_expiry != Some(new.header.expires_at) {
            self.expiry
                .insert(keys::expiry_key(new.header.expires_at, digest), &[])?;
        }
        let user_changed = old_user != new.user.as_deref();
        if let Some(user) = new.user.as_deref().filter(|_| user_changed) {
            self.users.insert(keys::user_key(user, digest), &[])?;
        }
        let swapped = self.sessions.compare_and_swap(
            digest.0,
            old.map(|e| &e.bytes),
            Some(new.bytes.clone()),
        )?;
        if swapped.is_err() {
            return Ok(Swap::Conflict);
        }
        self.drop_stale_entries(
            digest,
            old_expiry.filter(|e| *e != new.header.expires_at),
            old_user.filter(|_| user_changed),
        );
        Ok(Swap::Done)
    }

    /// Removes the index entries a write has just made stale. Stale entries are allowed
    /// (readers skip them, the purge and readers of the user index drop them), so a
    /// failure here is logged, not returned: the write itself is done and the caller must
    /// not retry it.
    fn drop_stale_entries(&self, digest: &Digest, expiry: Option<u64>, user: Option<&str>) {
        let removed = (|| -> Result<()> {
            #[cfg(test)]
            crate::failpoint::check("write: removing stale index entries")?;
            if let Some(expires_at) = expiry {
                self.expiry.remove(keys::expiry_key(expires_at, digest))?;
            }
            if let Some(user) = user {
                self.users.remove(keys::user_key(user, digest))?;
            }
            Ok(())
        })();
        if let Err(e) = removed {
            tracing::warn!(handle = %digest.handle(), error = %e, "left stale index entries behind");
        }
    }

    pub(super) fn delete(&self, digest: &Digest, old: &StoredRecord) -> Result<Swap> {
        let swapped = self
            .sessions
            .compare_and_swap(digest.0, Some(&old.bytes), None::<IVec>)?;
        if swapped.is_err() {
            return Ok(Swap::Conflict);
        }
        self.drop_stale_entries(digest, Some(old.header.expires_at), old.user.as_deref());
        Ok(Swap::Done)
    }

    pub(super) fn move_record(
        &self,
        old: &Digest,
        entry: &StoredRecord,
        new: &Digest,
        record: &StoredRecord,
    ) -> Result<Swap> {
        let moved = (&self.sessions, &self.expiry, &self.users).transaction(|(s, e, u)| {
            if s.get(old.0)?.as_ref() != Some(&entry.bytes) {
                return Ok(Swap::Conflict);
            }
            if s.get(new.0)?.is_some() {
                return Err(ConflictableTransactionError::Abort(Error::TokenCollision));
            }
            e.insert(
                &keys::expiry_key(record.header.expires_at, new)[..],
                &[][..],
            )?;
            if let Some(user) = &record.user {
                u.insert(keys::user_key(user, new), &[][..])?;
            }
            s.insert(&new.0[..], record.bytes.clone())?;
            s.remove(&old.0[..])?;
            e.remove(&keys::expiry_key(entry.header.expires_at, old)[..])?;
            if let Some(user) = &entry.user {
                u.remove(keys::user_key(user, old))?;
            }
            Ok(Swap::Done)
        })?;
        Ok(moved)
    }

    pub(super) fn quarantine(&self, digest: &Digest, bytes: &[u8]) -> Result<bool> {
        self.quarantine.insert(digest.0, bytes)?;
        Ok(self
            .sessions
            .compare_and_swap(digest.0, Some(bytes), None::<IVec>)?
            .is_ok())
    }

    pub(super) fn user_digests(&self, user: &str) -> Result<(Vec<Digest>, u64)> {
        let mut digests = Vec::new();
        let mut dropped = 0;
        for item in self.users.scan_prefix(keys::user_prefix(user)) {
            let (key, _) = item?;
            match keys::parse_user_key(&key) {
                Some((_, digest)) => digests.push(digest),
                None => {
                    self.users.remove(&key)?;
                    dropped += 1;
                }
            }
        }
        Ok((digests, dropped))
    }

    pub(super) fn drop_user_entry(&self, user: &str, digest: &Digest) -> Result<()> {
        self.users.remove(keys::user_key(user, digest))?;
        Ok(())
    }

    pub(super) fn due(
        &self,
        now: u64,
        after: &mut Cursor,
        limit: usize,
    ) -> Result<Vec<ExpiryEntry>> {
        let end = keys::expiry_key(now, &Digest([0xff; 32]));
        let start = match &after.last_key {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        };
        let keys: Vec<IVec> = self
            .expiry
            .range::<&[u8], _>((start, Bound::Included(&end[..])))
            .keys()
            .take(limit)
            .collect::<std::result::Result<_, _>>()?;
        if let Some(last) = keys.last() {
            after.last_key = Some(last.to_vec());
        }
        Ok(keys
            .into_iter()
            .map(|key| match keys::parse_expiry_key(&key) {
                Some((expires_at, digest)) => ExpiryEntry::Due(expires_at, digest),
                None => ExpiryEntry::Bad(key.to_vec()),
            })
            .collect())
    }

    pub(super) fn drop_expiry_entry(&self, entry: &ExpiryEntry) -> Result<bool> {
        let removed = match entry {
            ExpiryEntry::Due(expires_at, digest) => {
                self.expiry.remove(keys::expiry_key(*expires_at, digest))?
            }
            ExpiryEntry::Bad(key) => self.expiry.remove(key)?,
        };
        Ok(removed.is_some())
    }

    pub(super) fn has_expiry_entry(&self, digest: &Digest, expires_at: u64) -> Result<bool> {
        Ok(self
            .expiry
            .contains_key(keys::expiry_key(expires_at, digest))?)
    }

    pub(super) fn has_user_entry(&self, user: &str, digest: &Digest) -> Result<bool> {
        Ok(self.users.contains_key(keys::user_key(user, digest))?)
    }

    pub(super) fn add_index_entries(
        &self,
        digest: &Digest,
        record: &StoredRecord,
        expiry: bool,
        user: bool,
    ) -> Result<()> {
        // The caller holds the stripe lock: the record cannot change meanwhile.
        if self.sessions.get(digest.0)?.as_ref() != Some(&record.bytes) {
            return Ok(());
        }
        if expiry {
            self.expiry
                .insert(keys::expiry_key(record.header.expires_at, digest), &[])?;
        }
        if let Some(name) = record.user.as_deref().filter(|_| user) {
            self.users.insert(keys::user_key(name, digest), &[])?;
        }
        Ok(())
    }

    pub(super) fn expiry_entries(&self) -> Box<dyn Iterator<Item = Result<ExpiryEntry>> + '_> {
        Box::new(self.expiry.iter().keys().map(|key| {
            let key = key?;
            Ok(match keys::parse_expiry_key(&key) {
                Some((expires_at, digest)) => ExpiryEntry::Due(expires_at, digest),
                None => ExpiryEntry::Bad(key.to_vec()),
            })
        }))
    }

    pub(super) fn user_entries(&self) -> Box<dyn Iterator<Item = Result<UserEntry>> + '_> {
        Box::new(self.users.iter().keys().map(|key| {
            let key = key?;
            Ok(match keys::parse_user_key(&key) {
                Some((user, digest)) => UserEntry::Listed(user.to_owned(), digest),
                None => UserEntry::Bad {
                    index: Vec::new(),
                    member: key.to_vec(),
                },
            })
        }))
    }

    pub(super) fn drop_bad_user_entry(&self, _index: &[u8], member: &[u8]) -> Result<()> {
        self.users.remove(member)?;
        Ok(())
    }

    pub(super) fn quarantine_stray(&self, key: &[u8], bytes: &[u8]) -> Result<()> {
        // Copy first: a crash in between leaves the bytes in both trees.
        self.quarantine.insert(key, bytes)?;
        #[cfg(test)]
        crate::failpoint::check("verify: between copy and remove")?;
        self.sessions.remove(key)?;
        Ok(())
    }

    pub(super) fn quarantined(&self) -> Result<u64> {
        Ok(self.quarantine.len() as u64)
    }

    pub(super) fn records(&self) -> Box<dyn Iterator<Item = Result<(RecordKey, IVec)>> + '_> {
        Box::new(self.sessions.iter().map(|item| {
            let (key, bytes) = item?;
            let key = Digest::from_slice(&key)
                .map_or_else(|| RecordKey::Stray(key.to_vec()), RecordKey::Digest);
            Ok((key, bytes))
        }))
    }

    pub(super) fn records_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Digest, IVec)>> {
        let mut found = Vec::new();
        for item in self.sessions.scan_prefix(prefix) {
            let (key, bytes) = item?;
            if let Some(digest) = Digest::from_slice(&key) {
                found.push((digest, bytes));
            }
        }
        Ok(found)
    }

    pub(super) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    pub(super) fn set_format(&self, format: u32) -> Result<()> {
        self.meta.insert("format", &format.to_be_bytes())?;
        self.meta.flush()?;
        Ok(())
    }

    /// Reads (or, in a new store, writes) `meta/format`.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a marker of the wrong size.
    pub(super) fn format(&self) -> Result<Option<u32>> {
        match self.meta.get("format")? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 4] = v.as_ref().try_into().map_err(|_| {
                    corrupt(format!("meta/format is {} bytes, expected 4", v.len()))
                })?;
                Ok(Some(u32::from_be_bytes(bytes)))
            }
        }
    }
}

/// Closes an existing store folder to other users (mode 0700), as a new one is created:
/// sled creates its files with the process's umask (often 0644), so in a folder others
/// may enter (a 0755 volume) they could read every session. Only the folder's owner can
/// change its mode; for anyone else this is a warning, not an error.
#[cfg(unix)]
fn make_private(path: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode();
    if mode & 0o077 == 0 {
        return;
    }
    let private = std::fs::Permissions::from_mode(mode & 0o700 | 0o700);
    if let Err(e) = std::fs::set_permissions(path, private) {
        tracing::warn!(
            folder = %path.display(),
            error = %e,
            "the store's folder is open to other users and its mode cannot be changed"
        );
    }
}

#[cfg(not(unix))]
fn make_private(_: &Path, _: &std::fs::Metadata) {}

fn prepare_folder(path: &Path) -> Result<()> {
    let folder_error = |source| Error::Folder {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            make_private(path, &m);
            Ok(())
        }
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

#[cfg(test)]
mod tests {
    use super::SledBackend;
    use crate::failpoint;

    #[test]
    fn a_stray_record_is_copied_to_quarantine_before_it_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = SledBackend::open(&dir.path().join("s"), 1 << 20).expect("open");
        // A record under a key that is not a digest, as verify's repair finds it.
        backend
            .sessions
            .insert(b"short", &b"junk"[..])
            .expect("insert");
        failpoint::arm("verify: between copy and remove");
        assert!(
            backend.quarantine_stray(b"short", b"junk").is_err(),
            "the failpoint interrupts the move"
        );
        let kept = backend.quarantine.get(b"short").expect("read");
        assert_eq!(
            kept.as_deref(),
            Some(&b"junk"[..]),
            "the bytes are never lost"
        );
        assert!(backend.sessions.get(b"short").expect("read").is_some());
        backend.quarantine_stray(b"short", b"junk").expect("moved");
        assert!(backend.sessions.get(b"short").expect("read").is_none());
        assert_eq!(backend.quarantined().expect("count"), 1);
    }
}
