//! Whole-store listing, export and import of records, for operators and migrations.

mod file;

pub use self::file::check_dump;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::engine::commit::Contents;
use crate::error::{Error, Result};
use crate::expiry::{Lifetime, Timeouts};
use crate::id::{Digest, SessionHandle};
use crate::record::StoredRecord;
use crate::record::codec::Header;
use crate::record::values::ValueMap;
use crate::store::Store;

/// One stored session as plain data: what [`Store::dump`] yields and [`Store::restore`]
/// writes back. A dump restored into a store with the same settings gives the same
/// record (restore brings times from the future back to now and cuts timeouts to the
/// store's ceilings).
///
/// `key` is the digest the record is stored under (URL-safe base64), not the token: a
/// dump can move sessions to another folder, where the same cookies keep working, but it
/// cannot be replayed as cookies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionDump {
    /// The storage key: 32-byte digest of the token, URL-safe base64 without padding.
    pub key: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Last save or touch, milliseconds since the Unix epoch.
    pub last_seen: u64,
    /// Stored expiry, milliseconds since the Unix epoch.
    pub expires_at: u64,
    /// Write counter of the record.
    pub version: u64,
    /// The user the session belongs to.
    pub user: Option<String>,
    /// The values, as the bytes stored for each key.
    pub values: BTreeMap<String, Vec<u8>>,
    /// The session's own idle timeout in milliseconds ([`Lifetime`]); `None`: the
    /// store's. Absent in dumps of format-1 stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// The session's own absolute timeout in milliseconds; `None`: the store's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_timeout_ms: Option<u64>,
}

impl SessionDump {
    /// An empty dump of the session stored under `key` (a digest in URL-safe base64, as
    /// dumps name sessions): no user, no values, every time 0, the store's timeouts. Set
    /// the public fields, then [`restore`](Store::restore) it.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), sessile::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessile::Store::open(dir.path().join("sessions"))?;
    /// let now = std::time::SystemTime::now()
    ///     .duration_since(std::time::UNIX_EPOCH)
    ///     .expect("after 1970")
    ///     .as_millis() as u64;
    /// let mut dump = sessile::SessionDump::new("A".repeat(43))?;
    /// dump.created_at = now;
    /// dump.last_seen = now;
    /// dump.expires_at = now + 60_000;
    /// dump.user = Some("alice".into());
    /// store.restore(&dump)?;
    /// assert_eq!(store.sessions_of("alice")?.len(), 1);
    /// assert!(sessile::SessionDump::new("not a key").is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDump`] if `key` is not a base64 32-byte digest.
    pub fn new(key: impl Into<String>) -> Result<SessionDump> {
        let key = key.into();
        parse_key(&key)?;
        Ok(SessionDump {
            key,
            created_at: 0,
            last_seen: 0,
            expires_at: 0,
            version: 0,
            user: None,
            values: BTreeMap::new(),
            idle_timeout_ms: None,
            absolute_timeout_ms: None,
        })
    }

    fn of(digest: &Digest, record: StoredRecord) -> SessionDump {
        SessionDump {
            key: URL_SAFE_NO_PAD.encode(digest.0),
            created_at: record.header.created_at,
            last_seen: record.header.last_seen,
            expires_at: record.header.expires_at,
            version: record.header.version,
            user: record.user,
            values: record
                .values
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_vec()))
                .collect(),
            idle_timeout_ms: (record.header.own.idle_ms > 0).then_some(record.header.own.idle_ms),
            absolute_timeout_ms: (record.header.own.absolute_ms > 0)
                .then_some(record.header.own.absolute_ms),
        }
    }

    /// The session's own timeouts, as stored (unset: the store's).
    pub fn lifetime(&self) -> Lifetime {
        let d = |ms: Option<u64>| ms.filter(|ms| *ms > 0).map(Duration::from_millis);
        let mut lifetime = Lifetime::default();
        if let Some(idle) = d(self.idle_timeout_ms) {
            lifetime = lifetime.with_idle(idle);
        }
        if let Some(absolute) = d(self.absolute_timeout_ms) {
            lifetime = lifetime.with_absolute(absolute);
        }
        lifetime
    }

    /// The session's handle.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDump`] if `key` is not a base64 32-byte digest.
    pub fn handle(&self) -> Result<SessionHandle> {
        Ok(parse_key(&self.key)?.handle())
    }

    /// Whether the stored expiry is after `now_ms`.
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        self.expires_at > now_ms
    }
}

fn parse_key(key: &str) -> Result<Digest> {
    URL_SAFE_NO_PAD
        .decode(key)
        .ok()
        .and_then(|b| Digest::from_slice(&b))
        .ok_or_else(|| Error::InvalidDump {
            detail: format!("{key:?} is not a session key"),
        })
}

impl Store {
    /// Every stored session, live or expired, in storage order. Records that do not decode
    /// are skipped (see [`verify`](Self::verify)).
    pub fn dump(&self) -> impl Iterator<Item = Result<SessionDump>> + '_ {
        self.engine
            .records()
            .map(|item| item.map(|(digest, record)| SessionDump::of(&digest, record)))
    }

    /// The stored session with this handle, live or expired.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] on a storage failure.
    pub fn inspect(&self, handle: &SessionHandle) -> Result<Option<SessionDump>> {
        for (digest, bytes) in self.engine.records_of(handle)? {
            if let Ok(record) = StoredRecord::decode(bytes) {
                return Ok(Some(SessionDump::of(&digest, record)));
            }
        }
        Ok(None)
    }

    /// Writes a dumped session into this store, replacing any record under the same key,
    /// with its index entries. Times are kept as dumped (an expired session stays expired),
    /// except that times in the future are brought back to now and the expiry is cut to
    /// what the store's timeouts allow from the dumped last activity.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDump`] for a malformed key; [`Error::TooLarge`] if the record is over
    /// this store's limits; [`Error::WriteInsideUpdate`] inside an
    /// [`update`](Store::update) closure; [`Error::Storage`] on a storage failure.
    pub fn restore(&self, dump: &SessionDump) -> Result<()> {
        let (digest, contents, header) = self.prepare(dump)?;
        self.engine.put_record(&digest, &contents, header)
    }

    /// What [`restore`](Store::restore) writes for `dump`: its digest, contents and
    /// header, checked against this store's limits.
    fn prepare(&self, dump: &SessionDump) -> Result<(Digest, Contents, Header)> {
        let digest = parse_key(&dump.key)?;
        let data: ValueMap = dump
            .values
            .iter()
            .map(|(k, v)| (k.clone(), ByteBuf::from(v.clone())))
            .collect();
        let contents = Contents::new(
            &self.engine,
            dump.user.clone(),
            data.into(),
            dump.lifetime(),
        )?;
        // Times from the future (a damaged or hostile dump, or a clock far ahead) are
        // brought back to now, and the expiry to what the timeouts allow, so no restored
        // session outlives what it could have been given here.
        let now = self.engine.now();
        let own = contents.own();
        let created_at = dump.created_at.min(now);
        let last_seen = dump.last_seen.clamp(created_at, now);
        let allowed = Timeouts::of(self.engine.config(), own).expires_at(last_seen, created_at);
        let header = Header {
            expires_at: dump.expires_at.min(allowed),
            last_seen,
            created_at,
            version: dump.version,
            own,
        };
        Ok((digest, contents, header))
    }
    /// The format version of the store on disk (`meta/format`). Opening refuses formats
    /// newer than this build understands; an older one (format 1) is read as it is and
    /// upgraded to the current format (2) by the first write, its records rewritten in
    /// format 2 as they are written.
    pub fn format_version(&self) -> u32 {
        self.engine.format()
    }
}
