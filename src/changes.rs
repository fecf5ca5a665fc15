//! What a session changed since it was read, and how a save applies exactly that onto the
//! latest stored version, so that two overlapping requests of one session lose nothing.
//!
//! A [`Session`](crate::Session) records its own changes as they are made (the keys it
//! inserted, replaced or removed, a `clear`, the user, the lifetime). The framework
//! adapters get a whole map back at save instead, and recover the same thing by comparing
//! it with [`Fingerprints`] of what that request loaded (see `integrations::base`).
//!
//! A save whose session was read from the version still stored writes its contents as
//! they are (the common case, no extra work); otherwise [`Changes::apply`] rebuilds the
//! values from the latest version: keys the session did not touch keep what is stored
//! now, keys it touched take its value (or go, if it removed them). The same key changed
//! by two overlapping saves ends with the later save's value.

use std::collections::BTreeSet;

use serde_bytes::ByteBuf;

use crate::record::codec::Header;
use crate::record::values::{ValueMap, Values};

/// The stored version a session was read from: its record's creation time and version
/// number, which every write increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Version {
    pub(crate) created_at: u64,
    pub(crate) number: u64,
}

impl Version {
    /// The version `header` describes.
    pub(crate) fn of(header: &Header) -> Version {
        Version {
            created_at: header.created_at,
            number: header.version,
        }
    }
}

/// What a framework request loaded, as fingerprints (see `integrations::base`): enough
/// to tell, against the values it saves, which it changed and which it removed. Worked
/// out only when a save must merge (the stored version is not the one loaded).
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// [`Fingerprints::key_and_value`] of each value loaded.
    pub(crate) values: Vec<(u64, u64)>,
    pub(crate) fingerprints: Fingerprints,
}

impl Loaded {
    /// The keys of `mine` whose value differs from what was loaded (or is new), and the
    /// fingerprints of the keys loaded that `mine` no longer has (sorted).
    fn diff(&self, mine: &Values) -> (BTreeSet<String>, Vec<u64>) {
        let fp = &self.fingerprints;
        let unchanged: BTreeSet<u64> = self.values.iter().map(|&(_, kv)| kv).collect();
        let mut kept = BTreeSet::new();
        let mut changed = BTreeSet::new();
        for (key, value) in mine.iter() {
            let (of_key, of_value) = fp.key_and_value(key, value);
            kept.insert(of_key);
            if !unchanged.contains(&of_value) {
                changed.insert(key.to_owned());
            }
        }
        let mut removed: Vec<u64> = self
            .values
            .iter()
            .map(|&(key, _)| key)
            .filter(|key| !kept.contains(key))
            .collect();
        removed.sort_unstable();
        (changed, removed)
    }
}

/// What a session changed since it was read from [`Version`] `base`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Changes {
    base: Version,
    /// Every value was removed (then `keys` lists what was set after).
    cleared: bool,
    /// Keys set or removed: a save takes the session's value, or removes the key if the
    /// session has none.
    keys: BTreeSet<String>,
    /// What a framework request loaded (the adapters), from which its changes are worked
    /// out when they are applied: then `keys` is empty.
    loaded: Option<Box<Loaded>>,
    user: bool,
    lifetime: bool,
}

impl Changes {
    /// No changes yet to the version `header` describes.
    pub(crate) fn since(header: &Header) -> Changes {
        Changes {
            base: Version::of(header),
            ..Changes::default()
        }
    }

    /// The changes of a framework request that loaded `loaded` from version `base`: the
    /// values that differ from what it loaded, the keys it removed (both worked out when
    /// applied), and the user if `user` says it differs. The lifetime is always the
    /// framework's.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters recover changes")
    )]
    pub(crate) fn recovered(base: Version, loaded: Loaded, user: bool) -> Changes {
        Changes {
            base,
            loaded: Some(Box::new(loaded)),
            user,
            lifetime: true,
            ..Changes::default()
        }
    }

    /// The value under `key` was set or removed.
    pub(crate) fn touch_key(&mut self, key: &str) {
        if !self.keys.contains(key) {
            self.keys.insert(key.to_owned());
        }
    }

    /// Every value was removed.
    pub(crate) fn clear(&mut self) {
        self.cleared = true;
        self.keys.clear();
        self.loaded = None;
    }

    /// The user was set.
    pub(crate) fn set_user(&mut self) {
        self.user = true;
    }

    /// The lifetime was set.
    pub(crate) fn set_lifetime(&mut self) {
        self.lifetime = true;
    }

    /// Whether the user was set.
    pub(crate) fn user(&self) -> bool {
        self.user
    }

    /// Whether the lifetime was set.
    pub(crate) fn lifetime(&self) -> bool {
        self.lifetime
    }

    /// Whether these changes were made to the version `header` describes: then the
    /// session's contents are that version with the changes applied, and are written as
    /// they are.
    pub(crate) fn made_on(&self, header: &Header) -> bool {
        self.base == Version::of(header)
    }

    /// The values of `latest` with these changes applied, the changed values taken from
    /// `mine` (the session's).
    pub(crate) fn apply(&self, latest: &Values, mine: &Values) -> ValueMap {
        let (recovered, removed) = match &self.loaded {
            Some(loaded) => {
                let (keys, removed) = loaded.diff(mine);
                (Some(keys), Some((&loaded.fingerprints, removed)))
            }
            None => (None, None),
        };
        let mut out = ValueMap::new();
        if !self.cleared {
            for (key, value) in latest.iter() {
                let removed = removed
                    .as_ref()
                    .is_some_and(|(fp, keys)| keys.binary_search(&fp.key(key)).is_ok())
                    && !mine.contains_key(key);
                if !removed {
                    out.insert(key.to_owned(), ByteBuf::from(value));
                }
            }
        }
        for key in recovered.as_ref().unwrap_or(&self.keys) {
            match mine.get(key) {
                Some(value) => out.insert(key.clone(), ByteBuf::from(value)),
                None => out.remove(key),
            };
        }
        out
    }
}

/// The store's keyed fingerprints of keys, values and users, with which the adapters
/// recognise what a request loaded (see `integrations::base`). Keyed with a random
/// secret the store keeps (shared by every process of a Redis store), so the fingerprints
/// a request carries reveal nothing about the values and cannot be aimed at.
///
/// SipHash-2-4, a pseudo-random function keyed with 128 bits of the secret: without the
/// key nobody can make a value whose fingerprint matches another's. It is made for short
/// inputs: a keyed blake3 costs one whole compression per fingerprint, and a load that
/// fingerprints five values and their keys spent 40% of its instructions there.
#[derive(Clone, Copy)]
pub(crate) struct Fingerprints {
    secret: [u8; 32],
    /// [`Fingerprints::id`], made once: every load's base carries it.
    id: u64,
}

impl std::fmt::Debug for Fingerprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprints(..)")
    }
}

/// What a fingerprint is of (its first byte hashed); a value's goes on from its key's,
/// after [`VALUE`].
const KEY: u8 = 0;
const VALUE: u8 = 1;
const USER: u8 = 2;
const SECRET: u8 = 3;

#[cfg_attr(
    not(any(feature = "tower", feature = "tower-014", feature = "actix")),
    allow(dead_code, reason = "only the adapters make fingerprints")
)]
impl Fingerprints {
    /// Fingerprints keyed with `secret`.
    pub(crate) fn new(secret: [u8; 32]) -> Fingerprints {
        use std::hash::Hasher as _;
        let mut fingerprints = Fingerprints { secret, id: 0 };
        fingerprints.id = fingerprints.hasher(SECRET, &[]).finish();
        fingerprints
    }

    /// A hasher keyed with the secret that has taken in `domain` and `text` (its length
    /// first, so what follows cannot be mistaken for more of it).
    fn hasher(&self, domain: u8, text: &[u8]) -> siphasher::sip::SipHasher24 {
        use std::hash::Hasher as _;
        // The secret's first 16 bytes, as SipHash reads a 16-byte key (little-endian).
        let [k0, k1] = crate::id::words::<2>(&self.secret);
        let mut hasher = siphasher::sip::SipHasher24::new_with_keys(k0, k1);
        // Byte strings, not `write_u64` (native-endian): the same on every machine.
        hasher.write(&[domain]);
        hasher.write(&(text.len() as u64).to_le_bytes());
        hasher.write(text);
        hasher
    }

    /// A fingerprint of a value key (to recognise a key a request removed).
    pub(crate) fn key(&self, key: &str) -> u64 {
        use std::hash::Hasher as _;
        self.hasher(KEY, key.as_bytes()).finish()
    }

    /// A fingerprint of a key and its value (to recognise a value a request did not
    /// change).
    #[cfg(test)]
    pub(crate) fn value(&self, key: &str, value: &[u8]) -> u64 {
        self.key_and_value(key, value).1
    }

    /// [`key`](Self::key) and the fingerprint of the key with its value (to recognise a
    /// value a request did not change), from one pass over the key: the value's goes on
    /// from the key's.
    pub(crate) fn key_and_value(&self, key: &str, value: &[u8]) -> (u64, u64) {
        use std::hash::Hasher as _;
        let mut hasher = self.hasher(KEY, key.as_bytes());
        let of_key = hasher.finish();
        hasher.write(&[VALUE]);
        hasher.write(value);
        (of_key, hasher.finish())
    }

    /// A fingerprint of the secret itself, to recognise fingerprints made with another
    /// (a secret lost and made again while requests were in flight).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// A fingerprint of a session's user (`None` included).
    pub(crate) fn user(&self, user: Option<&str>) -> u64 {
        use std::hash::Hasher as _;
        match user {
            None => 0,
            Some(user) => self.hasher(USER, user.as_bytes()).finish() | 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &[u8])]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteBuf::from(v.to_vec())))
            .collect::<ValueMap>()
            .into()
    }

    #[test]
    fn untouched_keys_keep_what_is_stored_now() {
        let mut changes = Changes::default();
        changes.touch_key("cart");
        changes.touch_key("gone");
        let latest = values(&[("theme", b"dark"), ("gone", b"x"), ("cart", b"old")]);
        let mine = values(&[("theme", b"light"), ("cart", b"new")]);
        let out = changes.apply(&latest, &mine);
        assert_eq!(out.len(), 2);
        assert_eq!(out["theme"].as_slice(), b"dark");
        assert_eq!(out["cart"].as_slice(), b"new");
    }

    #[test]
    fn a_clear_drops_what_others_stored_too() {
        let mut changes = Changes::default();
        changes.touch_key("a");
        changes.clear();
        changes.touch_key("b");
        let latest = values(&[("a", b"1"), ("other", b"2")]);
        let mine = values(&[("b", b"3")]);
        let out = changes.apply(&latest, &mine);
        assert_eq!(out.keys().collect::<Vec<_>>(), ["b"]);
    }

    static FP: std::sync::LazyLock<Fingerprints> =
        std::sync::LazyLock::new(|| Fingerprints::new([7; 32]));
    /// What [`FP`] gives in `fingerprints_are_pinned`.
    const PINNED: ((u64, u64), u64, u64) = (
        (0xe722_45e3_49fb_8aa4, 0xf4f0_c154_18fe_1688),
        0xc495_3250_47d9_c7c1,
        0x165a_2d51_b7b6_ec37,
    );

    #[test]
    fn a_requests_changes_are_the_values_that_differ_from_what_it_loaded() {
        let loaded = Loaded {
            values: [("same", "1"), ("changed", "2"), ("old", "3")]
                .iter()
                .map(|(k, v)| (FP.key(k), FP.value(k, v.as_bytes())))
                .collect(),
            fingerprints: *FP,
        };
        let changes = Changes::recovered(Version::default(), loaded, false);
        let latest = values(&[
            ("same", b"x"),
            ("changed", b"y"),
            ("old", b"z"),
            ("added", b"a"),
        ]);
        let mine = values(&[("same", b"1"), ("changed", b"9"), ("new", b"n")]);
        let out = changes.apply(&latest, &mine);
        let pairs: Vec<_> = out
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("added", &b"a"[..]),
                ("changed", b"9"),
                ("new", b"n"),
                ("same", b"x")
            ]
        );
    }

    /// The fingerprints are the same on every machine and in every version that reads
    /// another's (two servers on one Redis during an upgrade): SipHash-2-4 as its
    /// authors' first test vector gives it, and these inputs pinned.
    #[test]
    fn fingerprints_are_pinned() {
        use std::hash::Hasher as _;
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let message: Vec<u8> = (0..15).collect();
        let mut sip = siphasher::sip::SipHasher24::new_with_key(&key);
        sip.write(&message);
        assert_eq!(sip.finish(), 0xa129_ca61_49be_45e5);
        let pinned = (FP.key_and_value("a", b"1"), FP.user(Some("ann")), FP.id());
        assert_eq!(pinned, PINNED, "{pinned:#x?}");
    }

    #[test]
    fn fingerprints_tell_keys_values_and_users_apart() {
        assert_ne!(FP.value("ab", b"c"), FP.value("a", b"bc"));
        assert_eq!(FP.value("a", b"1"), FP.value("a", b"1"));
        assert_ne!(FP.key("a"), FP.key("b"));
        assert_ne!(FP.key("a"), FP.value("a", b""));
        assert_eq!(
            FP.key_and_value("ab", b"c"),
            (FP.key("ab"), FP.value("ab", b"c"))
        );
        assert_ne!(FP.key("a") | 1, FP.user(Some("a")));
        assert_ne!(FP.user(None), FP.user(Some("")));
        assert_ne!(FP.user(Some("ann")), FP.user(Some("bob")));
        // Another store's secret gives other fingerprints.
        assert_ne!(
            FP.value("a", b"1"),
            Fingerprints::new([8; 32]).value("a", b"1")
        );
    }
}
