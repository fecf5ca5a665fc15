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

use crate::id::Domain;
use crate::record::codec::Header;
use crate::record::values::{ValueMap, Values};

/// blake3 key-derivation context of the adapters' fingerprints of keys and values.
static FINGERPRINTS: Domain = Domain::new("sessile 2026-12 value fingerprint v1");

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

/// What a session changed since it was read from [`Version`] `base`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Changes {
    base: Version,
    /// Every value was removed (then `keys` lists what was set after).
    cleared: bool,
    /// Keys set or removed: a save takes the session's value, or removes the key if the
    /// session has none.
    keys: BTreeSet<String>,
    /// Keys removed, known only by their [`key_fingerprint`] (the adapters).
    removed: Vec<u64>,
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

    /// Changes recovered by an adapter: the keys whose value differs from what the request
    /// loaded (set), the fingerprints of keys it loaded and no longer has (removed), and
    /// whether the user differs. The lifetime is always the framework's.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters recover changes")
    )]
    pub(crate) fn recovered(
        base: Version,
        keys: BTreeSet<String>,
        mut removed: Vec<u64>,
        user: bool,
    ) -> Changes {
        removed.sort_unstable();
        Changes {
            base,
            cleared: false,
            keys,
            removed,
            user,
            lifetime: true,
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
        self.removed.clear();
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
        let mut out = ValueMap::new();
        if !self.cleared {
            for (key, value) in latest.iter() {
                let removed = !self.removed.is_empty()
                    && self.removed.binary_search(&key_fingerprint(key)).is_ok()
                    && !mine.contains_key(key);
                if !removed {
                    out.insert(key.to_owned(), ByteBuf::from(value));
                }
            }
        }
        for key in &self.keys {
            match mine.get(key) {
                Some(value) => out.insert(key.clone(), ByteBuf::from(value)),
                None => out.remove(key),
            };
        }
        out
    }
}

/// A fingerprint of a value key (to recognise a key a request removed).
pub(crate) fn key_fingerprint(key: &str) -> u64 {
    value_fingerprint("\0key", key.as_bytes())
}

/// A fingerprint of a key and its value (to recognise a value a request did not change).
pub(crate) fn value_fingerprint(key: &str, value: &[u8]) -> u64 {
    let mut bytes = Vec::with_capacity(8 + key.len() + value.len());
    bytes.extend_from_slice(&(key.len() as u64).to_le_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(value);
    let digest = FINGERPRINTS.digest(&bytes);
    let [a, b, c, d, e, f, g, h, ..] = digest.0;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

/// A fingerprint of a session's user (`None` included).
#[cfg_attr(
    not(any(feature = "tower", feature = "tower-014", feature = "actix")),
    allow(dead_code, reason = "only the adapters recover changes")
)]
pub(crate) fn user_fingerprint(user: Option<&str>) -> u64 {
    match user {
        None => 0,
        Some(user) => value_fingerprint("\0user", user.as_bytes()) | 1,
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

    #[test]
    fn keys_removed_by_fingerprint_go_and_others_stay() {
        let changes = Changes::recovered(
            Version::default(),
            BTreeSet::new(),
            vec![key_fingerprint("old")],
            false,
        );
        let latest = values(&[("old", b"1"), ("added", b"2")]);
        let out = changes.apply(&latest, &values(&[]));
        assert_eq!(out.keys().collect::<Vec<_>>(), ["added"]);
    }

    #[test]
    fn fingerprints_tell_keys_values_and_users_apart() {
        assert_ne!(value_fingerprint("ab", b"c"), value_fingerprint("a", b"bc"));
        assert_eq!(value_fingerprint("a", b"1"), value_fingerprint("a", b"1"));
        assert_ne!(key_fingerprint("a"), key_fingerprint("b"));
        assert_ne!(user_fingerprint(None), user_fingerprint(Some("")));
        assert_ne!(user_fingerprint(Some("ann")), user_fingerprint(Some("bob")));
    }
}
