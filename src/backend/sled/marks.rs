//! What the `meta` tree keeps beside the format: the revocation marks (see the engine's
//! `revoke` module) and the secret of the adapters' fingerprints (`changes.rs`).
//!
//! - `revoked:<user>` -> when the user's sessions were last all revoked (8 bytes,
//!   big-endian) and the handle of the session kept then, if any (16 bytes);
//! - `ended:<handle>` -> until when the session with that handle stays ended (8 bytes,
//!   big-endian);
//! - `rotated:<handle>` -> until when the link stays (8 bytes), then the handles (16 bytes
//!   each, at most [`MAX_SUCCESSORS`]) a framework rotated that session into;
//! - `marks-at:<until><mark key>` -> nothing: the two kinds above in time order, so the
//!   purge drops the due ones without reading the others (each mark and its entry are
//!   written and dropped in one transaction);
//! - `fingerprints` -> the secret (32 bytes).

use sled::IVec;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::SledBackend;
use crate::backend::{ENDED_MARGIN_MS, Revocation};
use crate::error::{Error, Result};
use crate::id::SessionHandle;

const REVOKED: &[u8] = b"revoked:";
const ENDED: &[u8] = b"ended:";
const ROTATED: &[u8] = b"rotated:";
const DUE: &[u8] = b"marks-at:";
const FINGERPRINTS: &[u8] = b"fingerprints";
/// The most successors a rotation link keeps (a session rotated twice at once forks).
const MAX_SUCCESSORS: usize = 8;

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

type Tx = std::result::Result<(), ConflictableTransactionError<Error>>;

/// Raises the mark `mark` to last until `until` (never lowering it), adding `successor`
/// to its handles if given, with its time-order entry.
fn put_mark(t: &TransactionalTree, mark: &[u8], until: u64, successor: Option<&[u8; 16]>) -> Tx {
    let old = t.get(mark)?;
    let stored = old.as_deref().and_then(number);
    let mut successors: Vec<&[u8]> = old
        .as_deref()
        .and_then(|o| o.get(8..))
        .map(|rest| rest.chunks_exact(16).collect())
        .unwrap_or_default();
    if let Some(successor) = successor
        && !successors.contains(&&successor[..])
    {
        if successors.len() == MAX_SUCCESSORS {
            successors.remove(0);
        }
        successors.push(&successor[..]);
    }
    let raised = until.max(stored.unwrap_or(0));
    let mut value = raised.to_be_bytes().to_vec();
    for s in successors {
        value.extend_from_slice(s);
    }
    t.insert(mark, value)?;
    if stored.is_none_or(|s| until > s) {
        t.insert(key(DUE, &[&until.to_be_bytes(), mark]), &[][..])?;
    }
    Ok(())
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
        // Atomically: the time never moves back (a revoke from a server whose clock is
        // behind); the session kept is the latest revoke's (sessions the earlier one
        // deleted carry end marks of their own).
        self.meta
            .fetch_and_update(key(REVOKED, &[user.as_bytes()]), |old| {
                let mut mark = mark.clone();
                if let Some(stored) = old.and_then(number).filter(|&s| s > at) {
                    mark[..8].copy_from_slice(&stored.to_be_bytes());
                }
                Some(mark)
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
        let mark = key(ENDED, &[handle.as_bytes()]);
        self.meta.transaction(|t| put_mark(t, &mark, until, None))?;
        Ok(())
    }

    pub(in crate::backend) fn is_ended(&self, handle: &SessionHandle) -> Result<bool> {
        Ok(self.meta.contains_key(key(ENDED, &[handle.as_bytes()]))?)
    }

    pub(in crate::backend) fn link_rotation(
        &self,
        from: &SessionHandle,
        to: &SessionHandle,
        expires_at: u64,
    ) -> Result<()> {
        let until = expires_at.saturating_add(ENDED_MARGIN_MS);
        let mark = key(ROTATED, &[from.as_bytes()]);
        self.meta
            .transaction(|t| put_mark(t, &mark, until, Some(to.as_bytes())))?;
        Ok(())
    }

    pub(in crate::backend) fn rotated_into(
        &self,
        from: &SessionHandle,
    ) -> Result<Vec<SessionHandle>> {
        let Some(link) = self.meta.get(key(ROTATED, &[from.as_bytes()]))? else {
            return Ok(Vec::new());
        };
        Ok(link
            .get(8..)
            .unwrap_or_default()
            .chunks_exact(16)
            .filter_map(|h| <[u8; 16]>::try_from(h).ok())
            .map(SessionHandle::from_bytes)
            .collect())
    }

    pub(in crate::backend) fn prune_ended(&self, now: u64) -> Result<usize> {
        let mut pruned = 0;
        let end = key(DUE, &[&now.saturating_add(1).to_be_bytes()]);
        for entry in self.meta.range(DUE.to_vec()..end) {
            let (due, _) = entry?;
            let rest = due.get(DUE.len()..).unwrap_or_default();
            let until = number(rest);
            let mark = rest.get(8..).unwrap_or_default();
            // The mark goes only if it still lasts until this entry's time (not raised).
            let dropped = self.meta.transaction(|t| {
                let current = t.get(mark)?;
                let due_now = until.is_some() && current.as_deref().and_then(number) == until;
                if due_now {
                    t.remove(mark)?;
                }
                t.remove(&due)?;
                Ok::<_, ConflictableTransactionError<Error>>(due_now)
            })?;
            pruned += usize::from(dropped);
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
                kept: None
            }),
            "the time stays, the latest kept session is taken"
        );
        b.raise_revocation("ann", 110, Some(&kept)).expect("raise");
        assert_eq!(
            b.revocation("ann").expect("read"),
            Some(Revocation {
                at: 110,
                kept: Some(kept)
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
        b.link_rotation(&one, &two, 2_000).expect("link");
        assert_eq!(b.rotated_into(&one).expect("read"), [two]);
        let due_one = 1_000 + ENDED_MARGIN_MS;
        assert_eq!(b.prune_ended(due_one - 1).expect("prune"), 0);
        assert!(b.is_ended(&one).expect("read"));
        assert_eq!(b.prune_ended(due_one).expect("prune"), 1);
        assert_eq!(
            b.rotated_into(&one).expect("read"),
            [two],
            "the link lasts longer"
        );
        assert_eq!(b.prune_ended(2_000 + ENDED_MARGIN_MS).expect("prune"), 1);
        assert!(b.rotated_into(&one).expect("read").is_empty());
        assert!(!b.is_ended(&one).expect("read"));
        assert!(b.is_ended(&two).expect("read"));
        // Raised after its first entry: pruned at the later time only.
        b.mark_ended(&two, 9_000).expect("raise");
        assert_eq!(b.prune_ended(5_000 + ENDED_MARGIN_MS).expect("prune"), 0);
        assert!(b.is_ended(&two).expect("read"));
        assert_eq!(b.prune_ended(9_000 + ENDED_MARGIN_MS).expect("prune"), 1);
        assert_eq!(b.meta.scan_prefix(DUE).count(), 0, "no index entry left");
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
