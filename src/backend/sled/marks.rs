//! What the `meta` tree keeps beside the format: the revocation marks (see the engine's
//! `revoke` module) and the secret of the adapters' fingerprints (`changes.rs`).
//!
//! - `revoked:<user>` -> when the user's sessions were last all revoked (8 bytes,
//!   big-endian) and the handle of the session kept then, if any (16 bytes);
//! - `ended:<handle>` -> until when the session with that handle stays ended (8 bytes,
//!   big-endian), and `ended-at:<until><handle>` -> nothing, the same marks in time
//!   order, so the purge drops the due ones without reading the others;
//! - `fingerprints` -> the secret (32 bytes).

use sled::IVec;

use super::SledBackend;
use crate::backend::{ENDED_MARGIN_MS, Revocation};
use crate::error::Result;
use crate::id::SessionHandle;

const REVOKED: &[u8] = b"revoked:";
const ENDED: &[u8] = b"ended:";
const ENDED_AT: &[u8] = b"ended-at:";
const FINGERPRINTS: &[u8] = b"fingerprints";

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// The 8 bytes at the start of `bytes` as a big-endian number.
fn number(bytes: &[u8]) -> Option<u64> {
    bytes.first_chunk::<8>().map(|b| u64::from_be_bytes(*b))
}

impl SledBackend {
    pub(in crate::backend) fn revocation(&self, user: &str) -> Result<Option<Revocation>> {
        let Some(mark) = self.meta.get(key(REVOKED, &[user.as_bytes()]))? else {
            return Ok(None);
        };
        Ok(number(&mark).map(|at| Revocation {
            at,
            kept: mark
                .get(8..)
                .and_then(|h| <[u8; 16]>::try_from(h).ok())
                .map(SessionHandle::from_bytes),
        }))
    }

    pub(in crate::backend) fn raise_revocation(
        &self,
        user: &str,
        at: u64,
        kept: Option<&SessionHandle>,
    ) -> Result<()> {
        let mut mark = at.to_be_bytes().to_vec();
        if let Some(kept) = kept {
            mark.extend_from_slice(kept.as_bytes());
        }
        // Atomically: a mark is never moved back by a revoke that read an older one.
        self.meta
            .fetch_and_update(key(REVOKED, &[user.as_bytes()]), |old| {
                match old.and_then(number) {
                    Some(stored) if stored > at => old.map(<[u8]>::to_vec),
                    _ => Some(mark.clone()),
                }
            })?;
        Ok(())
    }

    pub(in crate::backend) fn fingerprint_secret(&self, fresh: [u8; 32]) -> Result<[u8; 32]> {
        let valid = |v: &IVec| <[u8; 32]>::try_from(&v[..]).ok();
        let mut expected: Option<IVec> = None;
        for _ in 0..4 {
            match self
                .meta
                .compare_and_swap(FINGERPRINTS, expected.as_ref(), Some(&fresh[..]))?
            {
                Ok(()) => return Ok(fresh),
                Err(e) => match e.current.as_ref().and_then(valid) {
                    Some(stored) => return Ok(stored),
                    // Damaged (it only protects requests in flight): replace it.
                    None => expected = e.current,
                },
            }
        }
        Ok(fresh)
    }

    pub(in crate::backend) fn mark_ended(
        &self,
        handle: &SessionHandle,
        expires_at: u64,
    ) -> Result<()> {
        let until = expires_at.saturating_add(ENDED_MARGIN_MS);
        let handle = handle.as_bytes();
        self.meta.fetch_and_update(key(ENDED, &[handle]), |old| {
            Some(
                until
                    .max(old.and_then(number).unwrap_or(0))
                    .to_be_bytes()
                    .to_vec(),
            )
        })?;
        self.meta
            .insert(key(ENDED_AT, &[&until.to_be_bytes(), handle]), &[])?;
        Ok(())
    }

    pub(in crate::backend) fn is_ended(&self, handle: &SessionHandle) -> Result<bool> {
        Ok(self.meta.contains_key(key(ENDED, &[handle.as_bytes()]))?)
    }

    pub(in crate::backend) fn prune_ended(&self, now: u64) -> Result<usize> {
        let mut pruned = 0;
        let end = key(ENDED_AT, &[&now.saturating_add(1).to_be_bytes()]);
        for entry in self.meta.range(ENDED_AT.to_vec()..end) {
            let (at_key, _) = entry?;
            let rest = at_key.get(ENDED_AT.len()..).unwrap_or_default();
            let until = number(rest);
            let mark = key(ENDED, &[rest.get(8..).unwrap_or_default()]);
            // The mark goes only if it is still the one this entry orders (not raised).
            if let Some(until) = until {
                let stored = until.to_be_bytes();
                if self
                    .meta
                    .compare_and_swap(&mark, Some(&stored[..]), None::<&[u8]>)?
                    .is_ok()
                {
                    pruned += 1;
                }
            }
            self.meta.remove(&at_key)?;
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> SledBackend {
        SledBackend::open(&dir.join("s"), 1 << 20).expect("open")
    }

    #[test]
    fn a_revocation_mark_never_moves_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = open(dir.path());
        let kept = SessionHandle::from_bytes([5; 16]);
        b.raise_revocation("ann", 100, Some(&kept)).expect("raise");
        b.raise_revocation("ann", 90, None).expect("raise");
        assert_eq!(
            b.revocation("ann").expect("read"),
            Some(Revocation {
                at: 100,
                kept: Some(kept)
            })
        );
        b.raise_revocation("ann", 110, None).expect("raise");
        assert_eq!(
            b.revocation("ann").expect("read"),
            Some(Revocation {
                at: 110,
                kept: None
            })
        );
        assert_eq!(b.revocation("bob").expect("read"), None);
    }

    #[test]
    fn end_marks_are_raised_and_pruned_in_time_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = open(dir.path());
        let (one, two) = (
            SessionHandle::from_bytes([1; 16]),
            SessionHandle::from_bytes([2; 16]),
        );
        b.mark_ended(&one, 1_000).expect("mark");
        b.mark_ended(&two, 5_000).expect("mark");
        b.mark_ended(&one, 500)
            .expect("a lower mark keeps the higher");
        let due_one = 1_000 + ENDED_MARGIN_MS;
        assert_eq!(b.prune_ended(due_one - 1).expect("prune"), 0);
        assert!(b.is_ended(&one).expect("read"));
        assert_eq!(b.prune_ended(due_one).expect("prune"), 1);
        assert!(!b.is_ended(&one).expect("read"));
        assert!(b.is_ended(&two).expect("read"));
        // Raised after its first entry: pruned at the later time only.
        b.mark_ended(&two, 9_000).expect("raise");
        assert_eq!(b.prune_ended(5_000 + ENDED_MARGIN_MS).expect("prune"), 0);
        assert!(b.is_ended(&two).expect("read"));
        assert_eq!(b.prune_ended(9_000 + ENDED_MARGIN_MS).expect("prune"), 1);
        assert_eq!(
            b.meta.scan_prefix(ENDED_AT).count(),
            0,
            "no index entry left"
        );
    }

    #[test]
    fn a_damaged_fingerprint_secret_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = open(dir.path());
        assert_eq!(b.fingerprint_secret([1; 32]).expect("make"), [1; 32]);
        assert_eq!(
            b.fingerprint_secret([2; 32]).expect("read"),
            [1; 32],
            "kept"
        );
        b.meta.insert(FINGERPRINTS, &b"short"[..]).expect("damage");
        assert_eq!(b.fingerprint_secret([3; 32]).expect("replace"), [3; 32]);
        assert_eq!(b.fingerprint_secret([4; 32]).expect("read"), [3; 32]);
    }
}
