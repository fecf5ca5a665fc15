//! A memo of secret -> digest, so a hot lookup skips the blake3 digest of its token.
//!
//! A digest is a pure function of the secret it is derived from (a session token, or a
//! tower-sessions ID), so a remembered pair never goes stale: a destroyed or regenerated
//! session simply finds no record under its digest. The memo lives in memory only (it
//! holds tokens as requests do, for longer: a core dump or swapped page can show them, as
//! it can show any request buffer); nothing of it reaches sled, logs or `Debug` output.
//! A token is forgotten when its session is destroyed or regenerated through it, and every
//! slot is overwritten when the store is dropped.
//!
//! It is a direct-mapped table of slots, indexed by a hash of the secret keyed with a
//! per-process random key (a guessed token cannot aim at a slot), and each slot holds the
//! whole secret, compared in constant time: a lookup takes as long whether a guess
//! matches a stored secret in no byte or in all but one. Slots are seqlocks built from
//! atomics, so a hit writes nothing shared and two cores reading the same slot do not
//! fight over its cache line. Only lookups that found a live session are remembered (see
//! [`DigestMemo::remember`]), so a flood of forged tokens cannot push real ones out.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering, fence};

use subtle::ConstantTimeEq as _;

use crate::id::{Digest, Words, words};

/// The most slots a memo has (about 5 MiB for tokens): enough for the hot set of a
/// large cache; more would only hold cold tokens in memory.
pub(super) const MAX_SLOTS: usize = 1 << 16;

/// One memo entry: the secret's words, then the digest's, under a sequence number that is
/// odd while a writer is filling them in.
struct Slot<const W: usize> {
    seq: AtomicU64,
    secret: [AtomicU64; W],
    digest: [AtomicU64; 4],
}

impl<const W: usize> Slot<W> {
    fn empty() -> Self {
        Slot {
            seq: AtomicU64::new(0),
            secret: std::array::from_fn(|_| AtomicU64::new(0)),
            digest: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The memo. Sized 0, it remembers nothing and every lookup derives the digest.
pub(crate) struct DigestMemo<const W: usize> {
    slots: Box<[Slot<W>]>,
    hasher: foldhash::fast::RandomState,
}

impl<const W: usize> std::fmt::Debug for DigestMemo<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestMemo")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<const W: usize> DigestMemo<W> {
    /// A memo of `entries` slots rounded up to a power of two and at most
    /// [`MAX_SLOTS`], or none for 0.
    pub(crate) fn new(entries: usize) -> Self {
        let len = if entries == 0 {
            0
        } else {
            entries.min(MAX_SLOTS).next_power_of_two()
        };
        DigestMemo {
            slots: (0..len).map(|_| Slot::empty()).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn slot(&self, secret: &Words<W>) -> Option<&Slot<W>> {
        if self.slots.is_empty() {
            return None;
        }
        let mut h = self.hasher.build_hasher();
        for w in secret {
            h.write_u64(*w);
        }
        // The length is a power of two; masked in 64 bits, so a 32-bit target spreads
        // tokens over every slot too.
        let mask = self.slots.len() as u64 - 1;
        let index = usize::try_from(h.finish() & mask).unwrap_or(0);
        self.slots.get(index)
    }

    /// Runs `find` under the digest of `secret` (remembered, or `derive`d), and remembers
    /// the pair when `find` found something: the lookup every load makes.
    pub(crate) fn find<T, E>(
        &self,
        secret: &Words<W>,
        derive: impl FnOnce() -> Digest,
        find: impl FnOnce(&Digest) -> Result<Option<T>, E>,
    ) -> Result<Option<(Digest, T)>, E> {
        let remembered = self.get(secret);
        let digest = remembered.unwrap_or_else(derive);
        let found = find(&digest)?;
        if found.is_some() && remembered.is_none() {
            self.remember(secret, &digest);
        }
        Ok(found.map(|t| (digest, t)))
    }

    /// The remembered digest of `secret`, if its slot holds it and no writer is filling
    /// the slot in at the same moment.
    pub(crate) fn get(&self, secret: &Words<W>) -> Option<Digest> {
        let slot = self.slot(secret)?;
        let before = slot.seq.load(Ordering::Acquire);
        if before == 0 || before & 1 == 1 {
            return None; // never written, or being written
        }
        let stored: Words<W> = std::array::from_fn(|i| slot.secret[i].load(Ordering::Relaxed));
        let digest: [u64; 4] = std::array::from_fn(|i| slot.digest[i].load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        if slot.seq.load(Ordering::Relaxed) != before {
            return None; // torn by a writer: derive instead
        }
        // Every word compared, whatever the first difference: no early exit. An all-zero
        // digest marks a forgotten slot (a real one is all zero with odds of 2^-256).
        let same = stored[..].ct_eq(&secret[..]);
        if !bool::from(same) || digest == [0; 4] {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(digest) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Some(Digest(bytes))
    }

    /// Remembers that `secret` has the digest `digest`, replacing whatever shared its
    /// slot. Call it only after a lookup found a live session under `digest` (derived from
    /// `secret`); [`find`](Self::find) does.
    fn remember(&self, secret: &Words<W>, digest: &Digest) {
        let Some(slot) = self.slot(secret) else {
            return;
        };
        let digest: [u64; 4] = words(&digest.0);
        slot.write(secret, &digest);
    }

    /// Forgets `secret` if its slot holds it: called when its session ends (destroy,
    /// regeneration), so the token does not stay in memory after its last use. Sessions ended
    /// by digest alone (revoke-all, the cap, expiry) are forgotten when another token
    /// takes the slot, or when the store is dropped.
    pub(crate) fn forget(&self, secret: &Words<W>) {
        if self.get(secret).is_none() {
            return;
        }
        if let Some(slot) = self.slot(secret) {
            slot.write(&[0; W], &[0; 4]);
        }
    }

    /// Runs `end` (a destroy or regeneration of `secret`'s session) between two
    /// [`forget`](Self::forget)s: a load racing `end` may remember the secret again
    /// before `end` takes the session away. (The async adapters call `forget` around
    /// their awaited destroy instead.)
    pub(super) fn forgetting<T>(&self, secret: &Words<W>, end: impl FnOnce() -> T) -> T {
        self.forget(secret);
        let ended = end();
        self.forget(secret);
        ended
    }
}

impl<const W: usize> Slot<W> {
    /// Fills the slot in, unless another thread is writing it (then gives up: the memo
    /// is only a shortcut).
    fn write(&self, secret: &Words<W>, digest: &[u64; 4]) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || self
                .seq
                // Acquire: this write is ordered after the previous writer's, so the two
                // cannot interleave word by word (a secret from one, a digest from the other).
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        for (cell, word) in self.secret.iter().zip(secret) {
            cell.store(*word, Ordering::Relaxed);
        }
        for (cell, word) in self.digest.iter().zip(digest) {
            cell.store(*word, Ordering::Relaxed);
        }
        self.seq.store(seq + 2, Ordering::Release);
    }
}

impl<const W: usize> Drop for DigestMemo<W> {
    /// Overwrites every remembered token before the memory is freed.
    fn drop(&mut self) {
        for slot in self.slots.iter() {
            for cell in slot.secret.iter() {
                cell.store(0, Ordering::Relaxed);
            }
        }
        // The stores must happen although the memory is freed next.
        std::hint::black_box(&self.slots);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(i: u64) -> Words<4> {
        [i, i.wrapping_mul(0x9E37_79B9_7F4A_7C15), !i, i ^ 0x5555]
    }

    fn derived(s: &Words<4>) -> Digest {
        let mut bytes = [0u8; 32];
        for (chunk, w) in bytes.chunks_exact_mut(8).zip(s) {
            chunk.copy_from_slice(&w.wrapping_mul(31).to_le_bytes());
        }
        Digest(bytes)
    }

    fn found(memo: &DigestMemo<4>, s: &Words<4>) -> Option<(Digest, ())> {
        memo.find(s, || derived(s), |_| Ok::<_, ()>(Some(())))
            .expect("infallible")
    }

    #[test]
    fn a_found_secret_is_remembered_and_an_absent_one_is_not() {
        let memo = DigestMemo::<4>::new(64);
        assert_eq!(memo.get(&secret(1)), None);
        assert_eq!(
            found(&memo, &secret(1)).map(|f| f.0),
            Some(derived(&secret(1)))
        );
        assert_eq!(memo.get(&secret(1)), Some(derived(&secret(1))));
        // Not found: not remembered.
        let missing = memo.find(
            &secret(2),
            || derived(&secret(2)),
            |_| Ok::<Option<()>, ()>(None),
        );
        assert_eq!(missing, Ok(None));
        assert_eq!(memo.get(&secret(2)), None);
    }

    #[test]
    fn a_secret_never_gets_another_secrets_digest() {
        // One slot: every secret shares it.
        let memo = DigestMemo::<4>::new(1);
        found(&memo, &secret(1));
        for i in 2..100 {
            assert_eq!(memo.get(&secret(i)), None, "secret {i}");
            // Differing in one word only.
            let mut near = secret(1);
            near[(i % 4) as usize] ^= 1 << (i % 64);
            assert_eq!(memo.get(&near), None);
        }
        found(&memo, &secret(5));
        assert_eq!(memo.get(&secret(1)), None);
        assert_eq!(memo.get(&secret(5)), Some(derived(&secret(5))));
    }

    #[test]
    fn a_forgotten_secret_is_gone_and_a_zero_secret_gets_nothing() {
        let memo = DigestMemo::<4>::new(1);
        found(&memo, &secret(1));
        memo.forget(&secret(2)); // not the slot's secret: nothing happens
        assert_eq!(memo.get(&secret(1)), Some(derived(&secret(1))));
        memo.forget(&secret(1));
        assert_eq!(memo.get(&secret(1)), None);
        assert_eq!(memo.get(&[0; 4]), None, "a forgotten slot holds zeros");
        assert_eq!(DigestMemo::<4>::new(usize::MAX).slots.len(), MAX_SLOTS);
    }

    #[test]
    fn size_zero_remembers_nothing() {
        let memo = DigestMemo::<4>::new(0);
        assert_eq!(
            found(&memo, &secret(1)).map(|f| f.0),
            Some(derived(&secret(1)))
        );
        assert_eq!(memo.get(&secret(1)), None);
    }

    #[test]
    fn racing_writers_never_hand_out_a_torn_or_foreign_digest() {
        // Few slots, many secrets: writers overwrite slots while readers read them.
        let memo = DigestMemo::<4>::new(4);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let hits = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let (memo, stop) = (&memo, &stop);
                s.spawn(move || {
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        found(memo, &secret(i % 64));
                        i += 2;
                    }
                });
            }
            for _ in 0..2 {
                let (memo, hits) = (&memo, &hits);
                s.spawn(move || {
                    for round in 0..200_000u64 {
                        let s = secret(round % 64);
                        if let Some(d) = memo.get(&s) {
                            assert_eq!(d, derived(&s), "round {round}");
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            // The readers end on their own; the writers run until then (at most 10 s).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while hits.load(Ordering::Relaxed) < 1000 && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            stop.store(true, Ordering::Relaxed);
        });
        assert!(
            hits.load(Ordering::Relaxed) > 0,
            "the readers saw no hit at all"
        );
    }
}
