//! Writing a new version of a live record: the one routine behind `save`, `update`,
//! `touch` and the adapters' saves, with or without an expiry asked for by the caller.

use std::sync::Arc;

use crate::codec::{self, Data, Header};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::expiry;
use crate::id::Digest;
use crate::shared::{CAS_ATTEMPTS, NewRecord, Shared, Swap};

/// What a commit did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Committed {
    /// A new version was written; `assigned` is the user if this write gave the session
    /// to a (new) user, for the per-user limit.
    Written { assigned: Option<String> },
    /// Nothing changed enough to be worth a write.
    Unchanged,
    /// The session was destroyed or has expired: nothing was written, it stays gone.
    Gone,
    /// The caller asked for an expiry that has already passed: nothing was written; the
    /// caller deletes the record.
    Lapsed,
}

/// What [`Shared::insert_record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// The record was stored with this header.
    Written(Header),
    /// A record (live or not) already has this key: nothing was written.
    Taken,
    /// The requested expiry has already passed: nothing was written.
    Lapsed,
}

/// A record that is the same as before except for times and version.
pub(crate) fn unchanged_record() -> NewRecord {
    NewRecord {
        bytes: Vec::new(),
        header: Header {
            expires_at: 0,
            last_seen: 0,
            created_at: 0,
            version: 0,
        },
        user: None,
        data: None,
    }
}

pub(crate) fn conflict() -> Error {
    Error::Corrupt(
        "the record kept changing under a locked write; is another process writing the folder?"
            .into(),
    )
}

impl Shared {
    /// Stores a new session under `digest` unless a record is already there. Its expiry is
    /// the idle timeout from now, capped by `requested` if given. Emits `Created` and
    /// applies the per-user limit.
    pub(crate) fn insert_record(
        &self,
        digest: &Digest,
        user: Option<String>,
        data: Arc<Data>,
        requested: Option<u64>,
    ) -> Result<Inserted> {
        let mut bytes = self.encode(user.as_deref(), &data)?;
        let header = {
            let _guard = self.lock(digest);
            let now = self.now();
            let header = Header {
                expires_at: expiry::next_expiry(&self.config, now, now, requested),
                last_seen: now,
                created_at: now,
                version: 1,
            };
            if header.expires_at <= now {
                return Ok(Inserted::Lapsed);
            }
            codec::set_header(&mut bytes, &header);
            let record = NewRecord {
                bytes,
                header,
                user: user.clone(),
                data: Some(data),
            };
            // The compare-and-swap against "absent" is the check that the key is free.
            if let Swap::Conflict(_) = self.write(digest, None, record)? {
                return Ok(Inserted::Taken);
            }
            header
        };
        self.events.emit(&self.counters, || Event::Created {
            handle: digest.handle(),
        });
        if let Some(user) = user {
            self.enforce_user_limit(&user, digest)?;
        }
        Ok(Inserted::Written(header))
    }

    /// Writes `record` (user and data, encoded with a placeholder header) as the new
    /// version of the live record of `digest`, or, with `record.bytes` empty, only moves
    /// its expiry. The expiry is the idle timeout from now, capped by the absolute timeout
    /// and by `requested` if given. Caller holds the stripe lock.
    pub(crate) fn commit_locked(
        &self,
        digest: &Digest,
        mut record: NewRecord,
        requested: Option<u64>,
    ) -> Result<Committed> {
        let touch_only = record.bytes.is_empty();
        for _ in 0..CAS_ATTEMPTS {
            let now = self.now();
            let Some((old, old_header)) = self.raw_locked(digest)? else {
                return Ok(Committed::Gone);
            };
            if !expiry::is_live(&self.config, &old_header, now) {
                return Ok(Committed::Gone);
            }
            let expires_at =
                expiry::next_expiry(&self.config, now, old_header.created_at, requested);
            if expires_at <= now {
                return Ok(Committed::Lapsed);
            }
            let same_contents = touch_only || codec::tail(&old) == codec::tail(&record.bytes);
            if same_contents
                && expiry::within_granularity(&self.config, now, old_header.expires_at, expires_at)
            {
                return Ok(Committed::Unchanged);
            }
            record.header = Header {
                expires_at,
                last_seen: now,
                created_at: old_header.created_at,
                version: old_header.version.wrapping_add(1),
            };
            let old_user = codec::parse_user_only(&old)
                .ok()
                .flatten()
                .map(str::to_owned);
            if touch_only {
                record.bytes = codec::with_header(&old, &record.header);
                record.user = old_user.clone();
                record.data = self
                    .cached(digest)
                    .filter(|e| e.bytes == old)
                    .map(|e| Arc::clone(&e.data));
            } else {
                codec::set_header(&mut record.bytes, &record.header);
            }
            let assigned = record.user.clone().filter(|u| Some(u) != old_user.as_ref());
            let old_ref = Some((&old, &old_header, old_user.as_deref()));
            match self.write(digest, old_ref, record)? {
                Swap::Done => return Ok(Committed::Written { assigned }),
                Swap::Conflict(mut back) => {
                    if touch_only {
                        back.bytes.clear();
                    }
                    record = back;
                }
            }
        }
        Err(conflict())
    }

    /// Whether a touch of `digest` can be answered without a write or a lock: `Some(false)`
    /// if the session is dead, `Some(true)` if the expiry would move too little, `None` if
    /// the caller must take the lock and commit. Reads the cache, or sled without a lock.
    pub(crate) fn touch_without_write(
        &self,
        digest: &Digest,
        requested: Option<u64>,
    ) -> Result<Option<bool>> {
        if let Some(answer) = self.touch_from_cache(digest, requested) {
            return Ok(answer);
        }
        match self.sessions.get(digest.0)? {
            None => Ok(Some(false)),
            // Undecodable: the locked path quarantines it.
            Some(bytes) => Ok(codec::parse_header(&bytes)
                .ok()
                .and_then(|h| self.touch_needs_no_write(&h, requested))),
        }
    }

    /// [`touch_without_write`](Self::touch_without_write) from the read cache alone: no
    /// I/O at all (for async callers). `None` if the session is not cached.
    pub(crate) fn touch_from_cache(
        &self,
        digest: &Digest,
        requested: Option<u64>,
    ) -> Option<Option<bool>> {
        let entry = self.cached(digest)?;
        Some(self.touch_needs_no_write(&entry.header, requested))
    }

    fn touch_needs_no_write(&self, header: &Header, requested: Option<u64>) -> Option<bool> {
        let now = self.now();
        if !expiry::is_live(&self.config, header, now) {
            return Some(false);
        }
        let target = expiry::next_expiry(&self.config, now, header.created_at, requested);
        let skip = target > now
            && expiry::within_granularity(&self.config, now, header.expires_at, target);
        skip.then_some(true)
    }
}
