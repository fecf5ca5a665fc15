//! The revocation marks (see the engine's `revoke` module) and the secret of the
//! adapters' fingerprints (`changes.rs`) on the server:
//!
//! - `ns:revoked`: a hash, user -> `<ms>` or `<ms>:<kept handle hex>`, when the user's
//!   sessions were last all revoked (raised only, by a script);
//! - `ns:ended`: a sorted set, member a session's handle (hex), score until when it stays
//!   ended: its expiry and [`ENDED_MARGIN_MS`], never lowered (`ZADD GT`: Redis 6.2 or
//!   later); also written by the revoke-all and cap scripts before they delete;
//! - `ns:r:<handle hex>`: a set, the handles a framework rotated that session into, with
//!   a time to live until that session would have expired;
//! - `ns:fingerprints`: the secret, 32 bytes.

use redis::Commands;

use super::{RedisBackend, hex};
use crate::backend::{ENDED_MARGIN_MS, Revocation};
use crate::error::Result;
use crate::id::{SessionHandle, from_hex};

impl RedisBackend {
    pub(super) fn revocations_key(&self) -> String {
        format!("{}:revoked", self.ns)
    }

    pub(super) fn ended_key(&self) -> String {
        format!("{}:ended", self.ns)
    }

    fn fingerprints_key(&self) -> String {
        format!("{}:fingerprints", self.ns)
    }

    pub(in crate::backend) fn revocation(&self, user: &str) -> Result<Option<Revocation>> {
        let mark: Option<String> = self.conn()?.hget(self.revocations_key(), user)?;
        Ok(mark.and_then(|mark| {
            let (at, kept) = match mark.split_once(':') {
                Some((at, kept)) => (at, from_hex::<16>(kept.as_bytes())),
                None => (mark.as_str(), None),
            };
            Some(Revocation {
                at: at.parse().ok()?,
                kept: kept.map(SessionHandle::from_bytes),
            })
        }))
    }

    pub(in crate::backend) fn raise_revocation(
        &self,
        user: &str,
        at: u64,
        kept: Option<&SessionHandle>,
    ) -> Result<()> {
        let _: i64 = self
            .scripts
            .raise
            .key(self.revocations_key())
            .arg(user)
            .arg(at)
            .arg(kept.map(|k| hex(k.as_bytes())).unwrap_or_default())
            .invoke(&mut *self.conn()?)?;
        Ok(())
    }

    pub(in crate::backend) fn fingerprint_secret(&self, fresh: [u8; 32]) -> Result<[u8; 32]> {
        let key = self.fingerprints_key();
        let mut conn = self.conn()?;
        let _: bool = conn.set_nx(&key, &fresh[..])?;
        let stored: redis::RedisResult<Option<Vec<u8>>> = conn.get(&key);
        if let Ok(Some(stored)) = &stored
            && let Ok(secret) = <[u8; 32]>::try_from(&stored[..])
        {
            return Ok(secret);
        }
        // Damaged (or not a string): it only protects requests in flight, so replace it,
        // and take whatever the store holds after (another process may have won).
        let _: () = conn.set(&key, &fresh[..])?;
        let stored: Option<Vec<u8>> = conn.get(&key)?;
        Ok(stored
            .and_then(|s| <[u8; 32]>::try_from(&s[..]).ok())
            .unwrap_or(fresh))
    }

    pub(in crate::backend) fn mark_ended(
        &self,
        handle: &SessionHandle,
        expires_at: u64,
    ) -> Result<()> {
        let until = expires_at.saturating_add(ENDED_MARGIN_MS);
        let _: i64 = redis::cmd("ZADD")
            .arg(self.ended_key())
            .arg("GT")
            .arg(until)
            .arg(hex(handle.as_bytes()))
            .query(&mut *self.conn()?)?;
        Ok(())
    }

    pub(in crate::backend) fn is_ended(&self, handle: &SessionHandle) -> Result<bool> {
        let until: Option<f64> = self
            .conn()?
            .zscore(self.ended_key(), hex(handle.as_bytes()))?;
        Ok(until.is_some())
    }

    pub(in crate::backend) fn link_rotation(
        &self,
        from: &SessionHandle,
        to: &SessionHandle,
        expires_at: u64,
    ) -> Result<()> {
        let until = expires_at.saturating_add(ENDED_MARGIN_MS);
        let ttl = until.saturating_sub(self.clock.now_ms()).max(1);
        let _: i64 = self
            .scripts
            .link
            .key(self.rotated_key(from))
            .arg(hex(to.as_bytes()))
            .arg(ttl)
            .invoke(&mut *self.conn()?)?;
        Ok(())
    }

    pub(in crate::backend) fn rotated_into(
        &self,
        from: &SessionHandle,
    ) -> Result<Vec<SessionHandle>> {
        let members: Vec<String> = self.conn()?.smembers(self.rotated_key(from))?;
        Ok(members
            .iter()
            .filter_map(|m| from_hex::<16>(m.as_bytes()))
            .map(SessionHandle::from_bytes)
            .collect())
    }

    fn rotated_key(&self, from: &SessionHandle) -> String {
        format!("{}:r:{}", self.ns, hex(from.as_bytes()))
    }

    pub(in crate::backend) fn prune_ended(&self, now: u64) -> Result<usize> {
        let pruned: usize = self.conn()?.zrembyscore(self.ended_key(), "-inf", now)?;
        Ok(pruned)
    }
}
