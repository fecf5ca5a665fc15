//! Checking (and repairing) the invariants between records and their index entries.

use std::collections::HashMap;

use crate::backend::{ExpiryEntry, RecordKey, UserEntry};
use crate::engine::Engine;
use crate::engine::read::Via;
use crate::error::Result;
use crate::id::Digest;
use crate::record::StoredRecord;

/// What [`Store::verify`](crate::Store::verify) found. All counts are of problems except `records`,
/// `live` and `expired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records in the `sessions` tree.
    pub records: u64,
    /// Records whose stored expiry is in the future.
    pub live: u64,
    /// Records expired but not yet purged.
    pub expired: u64,
    /// Records that do not decode (moved to quarantine by a repair).
    pub undecodable: u64,
    /// Records with no `expiry` entry for their expiry (I1 broken).
    pub missing_expiry_entries: u64,
    /// Records with a user but no `users` entry (I2 broken).
    pub missing_user_entries: u64,
    /// `expiry` entries that match no record (harmless; the purge drops them).
    pub stale_expiry_entries: u64,
    /// `users` entries that match no record of that user (harmless; readers skip them).
    pub stale_user_entries: u64,
    /// Records kept in the quarantine tree.
    pub quarantined: u64,
    /// Whether problems found were repaired.
    pub repaired: bool,
    /// On Redis, the server's `maxmemory-policy` if it may evict sessile's keys (anything
    /// but `noeviction`): an evicted record loses a session, an evicted user set lets
    /// revoke-all miss sessions. `None` on sled, under `noeviction`, or where the server
    /// refuses `CONFIG`. Not counted by [`is_consistent`](Self::is_consistent): a risk,
    /// not damage.
    pub eviction_policy: Option<String>,
}

impl VerifyReport {
    /// Whether the invariants hold: every record decodes and has its index entries.
    /// Stale index entries are allowed by design and do not count.
    pub fn is_consistent(&self) -> bool {
        self.undecodable == 0 && self.missing_expiry_entries == 0 && self.missing_user_entries == 0
    }
}

impl Engine {
    /// Checks every record against the indexes (invariants I1 and I2) and counts what is
    /// wrong; with `repair`, adds missing entries, drops stale ones (each re-checked under
    /// the record's stripe lock) and quarantines undecodable records. The same walk on
    /// every backend, through its contract.
    pub(crate) fn verify(&self, repair: bool) -> Result<VerifyReport> {
        let backend = &self.backend;
        let now = self.now();
        let mut report = VerifyReport {
            repaired: repair,
            eviction_policy: backend.eviction_policy()?,
            ..VerifyReport::default()
        };
        // digest -> (expires_at, user) of every decodable record
        let mut index: HashMap<Digest, (u64, Option<String>)> = HashMap::new();
        for item in backend.records() {
            let (key, bytes) = item?;
            report.records += 1;
            let digest = match key {
                RecordKey::Digest(digest) => digest,
                RecordKey::Stray(key) => {
                    report.undecodable += 1;
                    if repair {
                        backend.quarantine_stray(&key, &bytes)?;
                    }
                    continue;
                }
            };
            let record = match StoredRecord::decode(bytes) {
                Ok(record) => record,
                Err((bytes, e)) => {
                    report.undecodable += 1;
                    if repair {
                        let held = self.locks.stripe(&digest)?;
                        self.quarantine(&digest, &bytes, &e, &held)?;
                    }
                    continue;
                }
            };
            let expires_at = record.header.expires_at;
            if expires_at > now {
                report.live += 1;
            } else {
                report.expired += 1;
            }
            let no_expiry = !backend.has_expiry_entry(&digest, expires_at)?;
            let no_user = match &record.user {
                Some(user) => !backend.has_user_entry(user, &digest)?,
                None => false,
            };
            report.missing_expiry_entries += u64::from(no_expiry);
            report.missing_user_entries += u64::from(no_user);
            if repair && (no_expiry || no_user) {
                let _held = self.locks.stripe(&digest)?;
                backend.add_index_entries(&digest, &record, no_expiry, no_user)?;
            }
            index.insert(digest, (expires_at, record.user));
        }
        for entry in backend.expiry_entries() {
            let entry = entry?;
            let listed = match &entry {
                ExpiryEntry::Due(expires_at, digest) => Some((*expires_at, *digest)),
                ExpiryEntry::Bad(_) => None,
            };
            let found = listed.is_some_and(|(e, d)| index.get(&d).is_some_and(|(x, _)| *x == e));
            if found {
                continue;
            }
            report.stale_expiry_entries += 1;
            if !repair {
                continue;
            }
            // Re-checked under the lock: a write may have landed since the walk.
            let held = listed.map(|(_, d)| self.locks.stripe(&d)).transpose()?;
            let current = match (listed, &held) {
                (Some((e, d)), Some(held)) => self
                    .record(&d, Via::Locked(held))?
                    .is_some_and(|r| r.header.expires_at == e),
                _ => false,
            };
            if !current {
                backend.drop_expiry_entry(&entry)?;
            }
        }
        for entry in backend.user_entries() {
            match entry? {
                UserEntry::Listed(user, digest) => {
                    let found = index
                        .get(&digest)
                        .is_some_and(|(_, u)| u.as_deref() == Some(user.as_str()));
                    if found {
                        continue;
                    }
                    report.stale_user_entries += 1;
                    if repair {
                        let held = self.locks.stripe(&digest)?;
                        let current = self
                            .record(&digest, Via::Locked(&held))?
                            .is_some_and(|r| r.user.as_deref() == Some(user.as_str()));
                        if !current {
                            backend.drop_user_entry(&user, &digest)?;
                        }
                    }
                }
                UserEntry::Bad { index, member } => {
                    report.stale_user_entries += 1;
                    if repair {
                        backend.drop_bad_user_entry(&index, &member)?;
                    }
                }
            }
        }
        report.quarantined = backend.quarantined()?;
        if repair {
            backend.flush()?;
        }
        Ok(report)
    }
}
