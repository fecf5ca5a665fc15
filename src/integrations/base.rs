//! What a request loaded, carried with the request in the session data, so that its save
//! writes only what it changed (see [`crate::changes`]).
//!
//! tower-sessions and actix-session hand the store the whole map at save, not what the
//! request changed. So at load the adapters add one reserved entry, [`BASE_KEY`], whose
//! text names the version loaded and holds a fingerprint of every key and value (and of
//! the user). At save the entry is taken out again (it is never stored), and the map is
//! compared with it: a value whose fingerprint is in the base was not changed by this
//! request and keeps whatever is stored now; one that differs, or is new, was; a key the
//! base has and the map lacks was removed. Since the entry travels inside the request's
//! own data, this works across processes (two servers on one Redis) with no state kept
//! between load and save. A map without the entry (a create, a `clear`) is written whole.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::changes::{Changes, Fingerprints, Loaded, Version};
use crate::engine::framework::Rotated;
use crate::id::SessionHandle;
use crate::record::StoredRecord;

/// The session key of the entry the adapters add at load and take out at save: what
/// the request loaded (a version and fingerprints, no values). Leave it in place; a
/// request that removes it (or `clear`s the session) saves its whole map.
pub const BASE_KEY: &str = "sessile.base";

/// The format of the entry's text (its first character).
const FORMAT: char = '1';
/// Bytes of the fixed part: created_at, version, last_seen, expires_at, the secret's
/// fingerprint, the user's, handle.
const FIXED: usize = 64;
/// Bytes per value: key fingerprint, key-and-value fingerprint.
const PER_VALUE: usize = 16;

/// What a request loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Base {
    version: Version,
    /// When the loaded version was written, and when it was due to expire.
    last_seen: u64,
    expires_at: u64,
    /// [`Fingerprints::id`] of the secret the fingerprints were made with.
    secret: u64,
    user: u64,
    /// The handle of the session loaded.
    handle: SessionHandle,
    /// Key and key-and-value fingerprints of the loaded values.
    values: Vec<(u64, u64)>,
}

impl Base {
    /// The entry's text for a request loading `record`, the session with handle `handle`,
    /// with the store's `fingerprints`.
    #[cfg_attr(
        not(feature = "actix"),
        allow(dead_code, reason = "tower fingerprints in its own walk of the values")
    )]
    pub(super) fn text_of(
        record: &StoredRecord,
        handle: &SessionHandle,
        fingerprints: &Fingerprints,
    ) -> String {
        let values: Vec<(u64, u64)> = record
            .values
            .iter()
            .map(|(key, value)| fingerprints.key_and_value(key, value))
            .collect();
        Self::text_with(record, handle, fingerprints, &values)
    }

    /// [`text_of`](Self::text_of) with the values' key and key-and-value fingerprints
    /// given (`Fingerprints::key_and_value`, made while the caller walked the values
    /// anyway), in any order, with any values the adapter hands out beside the stored
    /// ones (tower's user of a record saved before it was kept as a value).
    pub(super) fn text_with(
        record: &StoredRecord,
        handle: &SessionHandle,
        fingerprints: &Fingerprints,
        values: &[(u64, u64)],
    ) -> String {
        let mut bytes = Vec::with_capacity(FIXED + PER_VALUE * values.len());
        bytes.extend_from_slice(&record.header.created_at.to_le_bytes());
        bytes.extend_from_slice(&record.header.version.to_le_bytes());
        bytes.extend_from_slice(&record.header.last_seen.to_le_bytes());
        bytes.extend_from_slice(&record.header.expires_at.to_le_bytes());
        bytes.extend_from_slice(&fingerprints.id().to_le_bytes());
        bytes.extend_from_slice(&fingerprints.user(record.user.as_deref()).to_le_bytes());
        bytes.extend_from_slice(handle.as_bytes());
        for (of_key, of_value) in values {
            bytes.extend_from_slice(&of_key.to_le_bytes());
            bytes.extend_from_slice(&of_value.to_le_bytes());
        }
        let mut text = String::with_capacity(1 + bytes.len().div_ceil(3) * 4);
        text.push(FORMAT);
        URL_SAFE_NO_PAD.encode_string(&bytes, &mut text);
        text
    }

    /// The base an entry's text describes; `None` for text this adapter did not write
    /// (then the save writes its map whole).
    pub(super) fn parse(text: &str) -> Option<Base> {
        let encoded = text.strip_prefix(FORMAT)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        let (fixed, rest) = bytes.split_first_chunk::<FIXED>()?;
        if rest.len() % PER_VALUE != 0 {
            return None;
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&fixed[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let values = rest
            .chunks_exact(PER_VALUE)
            .map(|chunk| {
                let (key, value) = chunk.split_at(8);
                let mut k = [0u8; 8];
                k.copy_from_slice(key);
                let mut v = [0u8; 8];
                v.copy_from_slice(value);
                (u64::from_le_bytes(k), u64::from_le_bytes(v))
            })
            .collect();
        Some(Base {
            version: Version {
                created_at: word(0),
                number: word(8),
            },
            last_seen: word(16),
            expires_at: word(24),
            secret: word(32),
            user: word(40),
            handle: SessionHandle::from_bytes(fixed[48..64].try_into().ok()?),
            values,
        })
    }

    /// What a request that loaded this base did, to end with its saved values and `user`: its
    /// changes, and, if a create of a session for `user` from it is a rotation (a new ID
    /// for a session that was the same user's), the session rotated, which a revocation
    /// may have ended between the framework's delete and its create.
    ///
    /// A base made with another secret (the store's was lost and made again meanwhile)
    /// tells nothing: no changes (the map is written whole), and a create for a user is
    /// checked as a rotation, so a revoked login cannot slip through (at worst a login
    /// made then is refused and made again).
    pub(super) fn recover(
        self,
        user: Option<&str>,
        fingerprints: &Fingerprints,
    ) -> (Option<Changes>, Option<Rotated>) {
        let rotated = self.rotated();
        if self.secret != fingerprints.id() {
            return (None, user.is_some().then_some(rotated));
        }
        let user_changed = self.user != fingerprints.user(user);
        let loaded = Loaded {
            values: self.values,
            fingerprints: *fingerprints,
        };
        let changes = Changes::recovered(self.version, loaded, user_changed);
        (
            Some(changes),
            (user.is_some() && !user_changed).then_some(rotated),
        )
    }

    /// The session loaded, as a rotation of it is checked.
    fn rotated(&self) -> Rotated {
        Rotated {
            handle: self.handle,
            last_seen: self.last_seen,
            expires_at: self.expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::codec::Header;
    use crate::record::values::{ValueMap, Values};
    use serde_bytes::ByteBuf;

    static FP: std::sync::LazyLock<Fingerprints> =
        std::sync::LazyLock::new(|| Fingerprints::new([9; 32]));

    fn record(user: Option<&str>, pairs: &[(&str, &[u8])]) -> StoredRecord {
        let values: ValueMap = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteBuf::from(v.to_vec())))
            .collect();
        let header = Header {
            created_at: 5,
            version: 9,
            last_seen: 7,
            ..Header::PLACEHOLDER
        };
        StoredRecord::encoded(
            crate::record::encode_record(&header, user, &Values::from(values.clone()))
                .expect("encode"),
            header,
            user.map(str::to_owned),
            values.into(),
        )
    }

    #[test]
    fn the_text_round_trips_and_odd_text_is_not_a_base() {
        let r = record(Some("ann"), &[("a", b"1"), ("b", b"2")]);
        let handle = SessionHandle::from_bytes([3; 16]);
        let base = Base::parse(&Base::text_of(&r, &handle, &FP)).expect("parses");
        assert_eq!(base.handle, handle);
        assert_eq!(
            base.version,
            Version {
                created_at: 5,
                number: 9
            }
        );
        assert_eq!(base.last_seen, 7);
        assert_eq!(base.values.len(), 2);
        assert!(base.clone().recover(Some("ann"), &FP).1.is_some());
        assert!(base.clone().recover(Some("bob"), &FP).1.is_none());
        // Made with another secret: no changes, and any login is checked.
        let other = Fingerprints::new([1; 32]);
        let (changes, rotated) = base.recover(Some("bob"), &other);
        assert!(changes.is_none());
        assert!(rotated.is_some());
        for odd in ["", "1", "2AAAA", "1!!!!", "1AAAA", "x"] {
            assert_eq!(Base::parse(odd), None, "{odd:?}");
        }
    }

    #[test]
    fn changes_are_the_keys_that_differ_from_what_was_loaded() {
        let r = record(
            None,
            &[("same", b"1"), ("changed", b"2"), ("removed", b"3")],
        );
        let base = Base::parse(&Base::text_of(&r, &SessionHandle::from_bytes([0; 16]), &FP))
            .expect("parses");
        let now: ValueMap = [("same", b"1"), ("changed", b"9"), ("added", b"4")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ByteBuf::from(v.to_vec())))
            .collect();
        let (changes, _) = base.clone().recover(None, &FP);
        let changes = changes.expect("same secret");
        let latest = record(
            None,
            &[
                ("same", b"x"),
                ("changed", b"y"),
                ("removed", b"z"),
                ("other", b"o"),
            ],
        );
        let merged = changes.apply(&latest.values, &Values::from(now));
        let pairs: Vec<_> = merged
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("added", &b"4"[..]),
                ("changed", b"9"),
                ("other", b"o"),
                ("same", b"x")
            ]
        );
        assert!(!changes.user());
        let (changes, _) = base.recover(Some("ann"), &FP);
        assert!(changes.expect("same secret").user());
    }
}
