//! The keys of sled's index trees. Big-endian times first, so the `expiry` tree iterates
//! in time order; a length-prefixed user, so one user's prefix never matches another's.

use crate::id::Digest;

/// `expiry` tree key: expires_at (u64 big-endian) ‖ digest. Sorts by time.
pub(super) fn expiry_key(expires_at: u64, digest: &Digest) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&expires_at.to_be_bytes());
    key[8..].copy_from_slice(&digest.0);
    key
}

/// Inverse of [`expiry_key`]; `None` for a key of the wrong length.
pub(super) fn parse_expiry_key(key: &[u8]) -> Option<(u64, Digest)> {
    if key.len() != 40 {
        return None;
    }
    let time = u64::from_be_bytes(key[..8].try_into().ok()?);
    Some((time, Digest::from_slice(&key[8..])?))
}

/// `users` tree prefix of all entries of `user`: len (u16 big-endian) ‖ user.
pub(super) fn user_prefix(user: &str) -> Vec<u8> {
    let len = u16::try_from(user.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(2 + user.len() + 32);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&user.as_bytes()[..usize::from(len).min(user.len())]);
    key
}

/// `users` tree key: [`user_prefix`] ‖ digest.
pub(super) fn user_key(user: &str, digest: &Digest) -> Vec<u8> {
    let mut key = user_prefix(user);
    key.extend_from_slice(&digest.0);
    key
}

/// Inverse of [`user_key`].
pub(super) fn parse_user_key(key: &[u8]) -> Option<(&str, Digest)> {
    let len = usize::from(u16::from_be_bytes([*key.first()?, *key.get(1)?]));
    if key.len() != 2 + len + 32 {
        return None;
    }
    let user = std::str::from_utf8(&key[2..2 + len]).ok()?;
    Some((user, Digest::from_slice(&key[2 + len..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_sort_by_time_and_round_trip() {
        let d = Digest([7; 32]);
        assert!(expiry_key(1, &d) < expiry_key(256, &Digest([0; 32])));
        assert_eq!(parse_expiry_key(&expiry_key(42, &d)), Some((42, d)));
        assert_eq!(parse_user_key(&user_key("bob", &d)), Some(("bob", d)));
        assert!(user_key("bob", &d).starts_with(&user_prefix("bob")));
        assert!(!user_key("bobby", &d).starts_with(&user_prefix("bob")));
        assert_eq!(parse_user_key(b"\x00"), None);
    }
}
