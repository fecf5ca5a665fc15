//! What `verify` asks of Redis: whether each record's index entries are there, every
//! entry of the indexes, and the repairs, each a compare-and-set against the record.

use redis::Commands;

use super::{RedisBackend, digest_of_hex, hex};
use crate::backend::{ExpiryEntry, UserEntry};
use crate::error::Result;
use crate::id::Digest;
use crate::record::StoredRecord;

impl RedisBackend {
    pub(in crate::backend) fn has_expiry_entry(
        &self,
        digest: &Digest,
        expires_at: u64,
    ) -> Result<bool> {
        let score: Option<f64> = self.conn()?.zscore(self.expiry_key(), hex(&digest.0))?;
        // Scores are whole milliseconds, below 2^53: exact as f64.
        Ok(score.is_some_and(|s| s >= 0.0 && s as u64 == expires_at))
    }

    pub(in crate::backend) fn has_user_entry(&self, user: &str, digest: &Digest) -> Result<bool> {
        let score: Option<f64> = self
            .conn()?
            .zscore(self.user_key(Some(user)), hex(&digest.0))?;
        Ok(score.is_some())
    }

    pub(in crate::backend) fn add_index_entries(
        &self,
        digest: &Digest,
        record: &StoredRecord,
        expiry: bool,
        user: bool,
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let mut add = |set: Vec<u8>, score: u64| -> Result<()> {
            // Added only if the record is still these bytes (another store may write).
            let _: i64 = self
                .scripts
                .repair
                .key(self.record_key(digest))
                .key(set)
                .arg(&record.bytes[..])
                .arg(score)
                .arg(hex(&digest.0))
                .invoke(&mut *conn)?;
            Ok(())
        };
        if expiry {
            add(self.expiry_key().into_bytes(), record.header.expires_at)?;
        }
        if let Some(name) = record.user.as_deref().filter(|_| user) {
            add(self.user_key(Some(name)), record.header.created_at)?;
        }
        Ok(())
    }

    pub(in crate::backend) fn expiry_entries(
        &self,
    ) -> Box<dyn Iterator<Item = Result<ExpiryEntry>> + '_> {
        let entries: Result<Vec<(Vec<u8>, f64)>> = self
            .conn()
            .and_then(|mut c| Ok(c.zrange_withscores(self.expiry_key(), 0, -1)?));
        match entries {
            Ok(entries) => Box::new(entries.into_iter().map(|(member, score)| {
                Ok(match digest_of_hex(&member) {
                    // As the purge reads them (`due`).
                    Some(digest) if score >= 0.0 => ExpiryEntry::Due(score as u64, digest),
                    _ => ExpiryEntry::Bad(member),
                })
            })),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    pub(in crate::backend) fn user_entries(
        &self,
    ) -> Box<dyn Iterator<Item = Result<UserEntry>> + '_> {
        match self.user_entry_list() {
            Ok(entries) => Box::new(entries.into_iter().map(Ok)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    /// Every member of every user set of the namespace.
    fn user_entry_list(&self) -> Result<Vec<UserEntry>> {
        // A set of the sets: SCAN may name a key twice.
        let sets = self.keys_matching(&format!("{}:u:*", self.ns))?;
        let prefix_len = self.user_key(None).len();
        let mut entries = Vec::new();
        for set in sets {
            // A set whose name is not UTF-8 is no user's: all its members are bad.
            let user = set
                .get(prefix_len..)
                .and_then(|u| std::str::from_utf8(u).ok())
                .map(str::to_owned);
            let members: Vec<Vec<u8>> = self.conn()?.zrange(&set, 0, -1)?;
            for member in members {
                entries.push(match (&user, digest_of_hex(&member)) {
                    (Some(user), Some(digest)) => UserEntry::Listed(user.clone(), digest),
                    _ => UserEntry::Bad {
                        index: set.clone(),
                        member,
                    },
                });
            }
        }
        Ok(entries)
    }

    pub(in crate::backend) fn drop_bad_user_entry(
        &self,
        index: &[u8],
        member: &[u8],
    ) -> Result<()> {
        let _: i64 = self.conn()?.zrem(index, member)?;
        Ok(())
    }

    pub(in crate::backend) fn quarantine_stray(&self, key: &[u8], bytes: &[u8]) -> Result<()> {
        let mut full = self.record_prefix().into_bytes();
        full.extend_from_slice(key);
        // The same script as a record's quarantine: copied, then deleted only if it is
        // still these bytes (another program may write the key).
        let _: i64 = self
            .scripts
            .quarantine
            .key(self.quarantine_key())
            .key(full)
            .arg(key)
            .arg(bytes)
            .invoke(&mut *self.conn()?)?;
        Ok(())
    }

    pub(in crate::backend) fn quarantined(&self) -> Result<u64> {
        Ok(self.conn()?.hlen(self.quarantine_key())?)
    }
}
