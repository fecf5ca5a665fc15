//! [`Store::verify`](crate::Store::verify) on Redis: every record against the expiry set
//! and its user's set, then every member of those sets against the records.

use std::collections::HashMap;

use redis::Commands;

use super::{Conn, RedisBackend, digest_of_hex, hex};
use crate::backend::ExpiryEntry;
use crate::codec;
use crate::error::Result;
use crate::id::Digest;
use crate::state::StoreState;
use crate::verify::VerifyReport;

impl RedisBackend {
    /// [`Store::verify`](crate::Store::verify) on Redis: every record against the expiry
    /// set and its user's set, then every member of those sets against the records.
    pub(crate) fn verify(&self, state: &StoreState, repair: bool) -> Result<VerifyReport> {
        let now = state.now();
        let mut report = VerifyReport {
            repaired: repair,
            ..VerifyReport::default()
        };
        let mut index: HashMap<Digest, (u64, Option<String>)> = HashMap::new();
        for item in self.records() {
            let (key, bytes) = item?;
            report.records += 1;
            let Some(digest) = Digest::from_slice(&key) else {
                report.undecodable += 1;
                continue;
            };
            let record = match codec::decode_record(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    report.undecodable += 1;
                    if repair {
                        let held = state.locks.stripe(&digest)?;
                        state.quarantine(&digest, &bytes, &e, &held)?;
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
            let member = hex(&digest.0);
            let mut conn = self.conn()?;
            let score: Option<f64> = conn.zscore(self.expiry_key(), &member)?;
            if score.map(|s| s as u64) != Some(expires_at) {
                report.missing_expiry_entries += 1;
                if repair {
                    self.repair(
                        &mut conn,
                        &digest,
                        &bytes,
                        self.expiry_key().into_bytes(),
                        expires_at,
                    )?;
                }
            }
            if let Some(user) = &record.user {
                let score: Option<f64> = conn.zscore(self.user_key(Some(user)), &member)?;
                if score.is_none() {
                    report.missing_user_entries += 1;
                    if repair {
                        let key = self.user_key(Some(user));
                        self.repair(&mut conn, &digest, &bytes, key, record.header.created_at)?;
                    }
                }
            }
            index.insert(digest, (expires_at, record.user));
        }
        let entries: Vec<(Vec<u8>, f64)> =
            self.conn()?.zrange_withscores(self.expiry_key(), 0, -1)?;
        for (member, score) in entries {
            let digest = digest_of_hex(&member);
            let ok = digest.is_some_and(|d| index.get(&d).is_some_and(|(e, _)| *e == score as u64));
            if !ok {
                report.stale_expiry_entries += 1;
                if repair {
                    self.drop_expiry_entry(&match digest {
                        Some(d) => ExpiryEntry::Due(score as u64, d),
                        None => ExpiryEntry::Bad(member),
                    })?;
                }
            }
        }
        // A set of the sets: SCAN may name a key twice.
        let user_sets: std::collections::BTreeSet<Vec<u8>> = {
            let mut conn = self.conn()?;
            let pattern = format!("{}:u:*", self.ns);
            conn.scan_match::<_, Vec<u8>>(pattern)?
                .collect::<std::result::Result<_, _>>()?
        };
        let prefix_len = format!("{}:u:", self.ns).len();
        for set in user_sets {
            let Some(user) = set.get(prefix_len..) else {
                continue;
            };
            let user = String::from_utf8_lossy(user).into_owned();
            let members: Vec<Vec<u8>> = self.conn()?.zrange(&set, 0, -1)?;
            for member in members {
                let digest = digest_of_hex(&member);
                let ok = digest.is_some_and(|d| {
                    index
                        .get(&d)
                        .is_some_and(|(_, u)| u.as_deref() == Some(user.as_str()))
                });
                if !ok {
                    report.stale_user_entries += 1;
                    if repair {
                        match digest {
                            Some(d) => self.drop_user_entry(&user, &d)?,
                            None => {
                                let _: i64 = self.conn()?.zrem(&set, &member)?;
                            }
                        }
                    }
                }
            }
        }
        let quarantined: u64 = self.conn()?.hlen(self.quarantine_key())?;
        report.quarantined = quarantined;
        Ok(report)
    }

    /// Adds `digest`'s missing entry to the sorted set `key` if its record is still
    /// `bytes`.
    fn repair(
        &self,
        conn: &mut Conn,
        digest: &Digest,
        bytes: &[u8],
        key: Vec<u8>,
        score: u64,
    ) -> Result<()> {
        let _: i64 = self
            .scripts
            .repair
            .key(self.record_key(digest))
            .key(key)
            .arg(bytes)
            .arg(score)
            .arg(hex(&digest.0))
            .invoke(&mut **conn)?;
        Ok(())
    }
}
