//! Checking (and repairing) the invariants between records and their index entries.

use std::collections::HashMap;

use crate::backend::Backend;
use crate::codec;
use crate::error::Result;
use crate::id::Digest;
use crate::store::Store;

/// What [`Store::verify`] found. All counts are of problems except `records`,
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
    /// `expiry` entries that match no record (harmless; the cleanup drops them).
    pub stale_expiry_entries: u64,
    /// `users` entries that match no record of that user (harmless; readers skip them).
    pub stale_user_entries: u64,
    /// Records kept in the quarantine tree.
    pub quarantined: u64,
    /// Whether problems found were repaired.
    pub repaired: bool,
}

impl VerifyReport {
    /// Whether the invariants hold: every record decodes and has its index entries.
    /// Stale index entries are allowed by design and do not count.
    pub fn is_consistent(&self) -> bool {
        self.undecodable == 0 && self.missing_expiry_entries == 0 && self.missing_user_entries == 0
    }
}

impl Store {
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
    #[cfg_attr(
        not(feature = "redis"),
        allow(
            clippy::infallible_destructuring_match,
            reason = "one backend in this build"
        )
    )]
    pub fn verify(&self, repair: bool) -> Result<VerifyReport> {
        let sh = &self.state;
        let trees = match &sh.backend {
            Backend::Sled(trees) => trees,
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => return redis.verify(sh, repair),
        };
        let now = sh.now();
        let mut report = VerifyReport {
            repaired: repair,
            ..VerifyReport::default()
        };
        // digest -> (expires_at, user) of every decodable record
        let mut index: HashMap<Digest, (u64, Option<String>)> = HashMap::new();
        for item in trees.sessions.iter() {
            let (key, bytes) = item?;
            report.records += 1;
            let Some(digest) = Digest::from_slice(&key) else {
                report.undecodable += 1;
                if repair {
                    // Copy first: a crash in between leaves the bytes in both trees.
                    trees.quarantine.insert(&key, bytes)?;
                    #[cfg(test)]
                    crate::failpoint::check("verify: between copy and remove")?;
                    trees.sessions.remove(&key)?;
                }
                continue;
            };
            let record = match codec::decode_record(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    report.undecodable += 1;
                    if repair {
                        let held = sh.locks.stripe(&digest)?;
                        sh.quarantine(&digest, &bytes, &e, &held)?;
                    }
                    continue;
                }
            };
            let h = record.header;
            if h.expires_at > now {
                report.live += 1;
            } else {
                report.expired += 1;
            }
            let expiry_key = codec::expiry_key(h.expires_at, &digest);
            if !trees.expiry.contains_key(expiry_key)? {
                report.missing_expiry_entries += 1;
                if repair {
                    trees.expiry.insert(expiry_key, &[])?;
                }
            }
            if let Some(user) = &record.user {
                let user_key = codec::user_key(user, &digest);
                if !trees.users.contains_key(&user_key)? {
                    report.missing_user_entries += 1;
                    if repair {
                        trees.users.insert(user_key, &[])?;
                    }
                }
            }
            index.insert(digest, (h.expires_at, record.user));
        }
        for item in trees.expiry.iter().keys() {
            let key = item?;
            let parsed = codec::parse_expiry_key(&key);
            let ok = parsed.is_some_and(|(e, d)| index.get(&d).is_some_and(|(exp, _)| *exp == e));
            if !ok {
                report.stale_expiry_entries += 1;
                if repair {
                    // Re-check under the lock: a write may have landed since the scan.
                    let held = parsed.map(|(_, d)| sh.locks.stripe(&d)).transpose()?;
                    let current = match (parsed, &held) {
                        (Some((e, d)), Some(held)) => sh
                            .record_locked(&d, held)?
                            .is_some_and(|r| r.header.expires_at == e),
                        _ => false,
                    };
                    if !current {
                        trees.expiry.remove(&key)?;
                    }
                }
            }
        }
        for item in trees.users.iter().keys() {
            let key = item?;
            let parsed = codec::parse_user_key(&key);
            let ok = parsed.is_some_and(|(u, d)| {
                index
                    .get(&d)
                    .is_some_and(|(_, user)| user.as_deref() == Some(u))
            });
            if !ok {
                report.stale_user_entries += 1;
                if repair {
                    let held = parsed.map(|(_, d)| sh.locks.stripe(&d)).transpose()?;
                    let current = match (parsed, &held) {
                        (Some((u, d)), Some(held)) => sh
                            .record_locked(&d, held)?
                            .is_some_and(|r| r.user.as_deref() == Some(u)),
                        _ => false,
                    };
                    if !current {
                        trees.users.remove(&key)?;
                    }
                }
            }
        }
        report.quarantined = trees.quarantine.len() as u64;
        if repair {
            trees.db.flush()?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::failpoint;

    #[test]
    fn repair_copies_a_record_to_quarantine_before_removing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Config::new(dir.path().join("s"))
            .cleanup_thread(false)
            .open()
            .expect("open");
        // A record under a key that is not a digest: repair moves it to quarantine.
        let sessions = &store.state.backend.sled().expect("sled").sessions;
        sessions.insert(b"short", &b"junk"[..]).expect("insert");
        failpoint::arm("verify: between copy and remove");
        assert!(
            store.verify(true).is_err(),
            "the failpoint interrupts the repair"
        );
        let kept = store
            .state
            .backend
            .sled()
            .expect("sled")
            .quarantine
            .get(b"short")
            .expect("read");
        assert_eq!(
            kept.as_deref(),
            Some(&b"junk"[..]),
            "the bytes are never lost"
        );
        let report = store.verify(true).expect("repair");
        assert_eq!(report.undecodable, 1);
        assert!(sessions.get(b"short").expect("read").is_none());
        assert!(store.verify(false).expect("verify").is_consistent());
    }
}
