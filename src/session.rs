//! A session as the application sees it: an ID, times, an optional user and typed values.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::changes::Changes;
use crate::clock::from_ms;
use crate::config::Config;
use crate::error::{Error, Oversized, Result};
use crate::expiry::Lifetime;
use crate::id::{Digest, SessionHandle, SessionId};
use crate::record::StoredRecord;
use crate::record::codec::{self, Header};
use crate::record::values::Values;

/// Size limits copied from the store's config into each session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    max_record_size: usize,
    max_key_len: usize,
}

impl Limits {
    /// The limits `config` sets.
    pub(crate) fn of(config: &Config) -> Limits {
        Limits {
            max_record_size: config.max_record_size,
            max_key_len: config.max_key_len,
        }
    }

    /// Rejects a value key longer than the limit.
    pub(crate) fn check_key(&self, key: &str) -> Result<()> {
        if key.len() > self.max_key_len {
            return Err(Error::TooLarge {
                what: Oversized::Key,
                size: key.len(),
                limit: self.max_key_len,
            });
        }
        Ok(())
    }
}

/// A session: its token, its times, an optional user and a map of named values.
///
/// A `Session` is a copy of the stored record taken at [`Store::load`](crate::Store::load)
/// or [`Store::create`](crate::Store::create). Changing it changes nothing on disk until
/// [`Store::save`](crate::Store::save) (or use [`Store::update`](crate::Store::update) for
/// an atomic read-modify-write). Values are any `serde` type, each stored on its own with
/// bincode, so one value that no longer matches its type leaves the others readable.
///
/// The copy remembers what was changed on it since it was read: the keys inserted,
/// replaced or removed, a [`clear`](Self::clear), the user, the lifetime. A save writes
/// exactly those changes onto the version stored at that moment, so two copies of one
/// session (two tabs, two overlapping requests) saved in turn keep each other's changes;
/// see [`Store::save`](crate::Store::save).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), sessile::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = sessile::Store::open(dir.path().join("sessions"))?;
/// let mut session = store.create()?;
/// session.insert("cart", &vec![1u32, 2])?;
/// assert_eq!(session.get::<Vec<u32>>("cart")?, Some(vec![1, 2]));
/// store.save(&session)?;
///
/// let loaded = store.load(session.id())?.expect("live session");
/// assert_eq!(loaded.keys().collect::<Vec<_>>(), ["cart"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    pub(crate) id: SessionId,
    pub(crate) digest: Digest,
    pub(crate) header: Header,
    pub(crate) user: Option<String>,
    pub(crate) values: Values,
    pub(crate) lifetime: Lifetime,
    pub(crate) limits: Limits,
    /// What was changed since the session was read: what a save applies.
    pub(crate) changes: Changes,
    /// Where other processes share the storage (Redis): the stored record the next save
    /// expects. Empty on sled.
    pub(crate) expected: Expected,
}

/// Where other processes share the storage (Redis): the record a session was read from,
/// created as, or last saved as by this copy, which its next save compares against, so
/// the save is one round trip while nobody else wrote. Empty on sled, and after a save
/// that took the locked path.
#[derive(Default)]
pub(crate) struct Expected(parking_lot::Mutex<Option<Arc<StoredRecord>>>);

impl Expected {
    pub(crate) fn new(record: Option<Arc<StoredRecord>>) -> Expected {
        Expected(parking_lot::Mutex::new(record))
    }

    /// The record the next save expects, if known.
    pub(crate) fn get(&self) -> Option<Arc<StoredRecord>> {
        self.0.lock().clone()
    }

    /// What the next save expects from now on.
    pub(crate) fn set(&self, record: Option<Arc<StoredRecord>>) {
        *self.0.lock() = record;
    }
}

// The record is swapped whole under the lock: a panic elsewhere cannot leave it half made.
impl std::panic::UnwindSafe for Expected {}
impl std::panic::RefUnwindSafe for Expected {}

impl Clone for Expected {
    fn clone(&self) -> Expected {
        Expected::new(self.get())
    }
}

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = self.0.lock().as_ref().map(|r| r.header.version);
        f.debug_tuple("Expected").field(&version).finish()
    }
}

impl Session {
    /// The session's token. `id().to_string()` is what goes in the cookie.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The session's public handle, for lists, logs and "revoke this device".
    pub fn handle(&self) -> SessionHandle {
        self.digest.handle()
    }

    /// When the session was created.
    pub fn created_at(&self) -> SystemTime {
        from_ms(self.header.created_at)
    }

    /// When the session was last saved or touched, as of the moment it was read.
    pub fn last_seen(&self) -> SystemTime {
        from_ms(self.header.last_seen)
    }

    /// When the session expires, as of the moment it was read. A later `save` or `touch`
    /// moves the stored expiry; load the session again to see it.
    pub fn expires_at(&self) -> SystemTime {
        from_ms(self.header.expires_at)
    }

    /// The user this session belongs to, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Gives the session to a user (or to nobody). Saved by the next
    /// [`Store::save`](crate::Store::save), which also updates the per-user index; a
    /// name over [`MAX_USER_LEN`](crate::MAX_USER_LEN) bytes makes that save fail with
    /// [`Error::TooLarge`].
    pub fn set_user(&mut self, user: Option<&str>) {
        self.user = user.map(str::to_owned);
        self.changes.set_user();
    }

    /// The session's own timeouts, as set with [`set_lifetime`](Self::set_lifetime) (or
    /// as stored, cut to the store's ceilings). Unset parts follow the store's timeouts.
    pub fn lifetime(&self) -> Lifetime {
        self.lifetime
    }

    /// Gives the session its own idle and absolute timeouts ("remember me", or a
    /// short-lived session), saved by the next [`Store::save`](crate::Store::save) (or
    /// [`regenerate`](crate::Store::regenerate)) and honoured from then on. Timeouts over
    /// the store's ceilings ([`Config::max_idle_timeout`](crate::Config::max_idle_timeout),
    /// [`Config::max_absolute_timeout`](crate::Config::max_absolute_timeout)) are cut to
    /// them. `Lifetime::default()` returns the session to the store's timeouts.
    ///
    /// The absolute timeout still counts from the session's creation: a lifetime set
    /// later does not restart it.
    pub fn set_lifetime(&mut self, lifetime: Lifetime) {
        self.lifetime = lifetime;
        self.changes.set_lifetime();
    }

    /// Reads the value stored under `key` as a `T`. `Ok(None)` if there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] if the stored bytes are not a `T` (for example after the type
    /// changed between releases). Other values are unaffected.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let Some(bytes) = self.values.get(key) else {
            return Ok(None);
        };
        codec::decode_value(bytes)
            .map(Some)
            .map_err(|source| Error::Decode {
                key: key.to_owned(),
                source,
            })
    }

    /// The raw bytes stored under `key`, as written by [`insert`](Self::insert) (bincode)
    /// or [`insert_bytes`](Self::insert_bytes).
    pub fn get_bytes(&self, key: &str) -> Option<&[u8]> {
        self.values.get(key)
    }

    /// Stores `value` under `key`, replacing what was there.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if `value` cannot be serialized; [`Error::TooLarge`] if the key or
    /// the encoded value is over its limit. On error the session is unchanged.
    pub fn insert<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        let bytes = codec::encode_value(value).map_err(|e| Error::Encode {
            key: key.to_owned(),
            source: Box::new(e),
        })?;
        self.insert_bytes(key, bytes)
    }

    /// Stores raw bytes under `key`. [`get`](Self::get) reads them only if they are bincode
    /// of the requested type; [`get_bytes`](Self::get_bytes) returns them as they are.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] if the key or the value is over its limit; the session is then
    /// unchanged.
    pub fn insert_bytes(&mut self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.limits.check_key(key)?;
        if bytes.len() > self.limits.max_record_size {
            return Err(Error::TooLarge {
                what: Oversized::Value,
                size: bytes.len(),
                limit: self.limits.max_record_size,
            });
        }
        self.values
            .make_mut()
            .insert(key.to_owned(), ByteBuf::from(bytes));
        self.changes.touch_key(key);
        Ok(())
    }

    /// Removes the value under `key`; returns whether there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        if !self.values.contains_key(key) {
            return false;
        }
        self.changes.touch_key(key);
        self.values.make_mut().remove(key).is_some()
    }

    /// Removes every value. The user and the times are kept.
    pub fn clear(&mut self) {
        if !self.values.is_empty() {
            self.values = Values::default();
        }
        self.changes.clear();
    }

    /// Whether the session holds no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// How many values the session holds.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether a value is stored under `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// The keys of the session's values, in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(|(key, _)| key)
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{RefUnwindSafe, UnwindSafe};

    /// What callers may do with a session: send it, share it, clone it, and keep it
    /// across `catch_unwind` (`Expected`'s lock must not take that away).
    #[test]
    fn a_session_is_send_sync_clone_and_unwind_safe() {
        fn check<T: Send + Sync + Clone + UnwindSafe + RefUnwindSafe>() {}
        check::<super::Session>();
    }
}
