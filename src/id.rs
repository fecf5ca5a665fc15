//! Session tokens, the digests stored in their place, and the handles shown to people.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRng as _;

use crate::error::{Error, ParseHandleError, ParseIdError, Result};

const TOKEN_BYTES: usize = 32;
/// Length of a token's text form: 32 bytes in unpadded URL-safe base64.
const TOKEN_CHARS: usize = 43;
const HANDLE_BYTES: usize = 16;
/// The digests of session tokens.
static TOKENS: Domain = Domain::new("sessile 2026-11 session token digest v1");

/// A blake3 key-derivation context, which gives one kind of digest its own domain (session
/// tokens here, tower-sessions IDs in the tower adapter), hashed once instead of on every
/// digest (that was half the cost of a cached load).
pub(crate) struct Domain {
    context: &'static str,
    key: std::sync::OnceLock<blake3::hazmat::ContextKey>,
}

impl Domain {
    pub(crate) const fn new(context: &'static str) -> Domain {
        Domain {
            context,
            key: std::sync::OnceLock::new(),
        }
    }

    /// The same bytes as `blake3::derive_key(context, bytes)`.
    pub(crate) fn digest(&self, bytes: &[u8]) -> Digest {
        use blake3::hazmat::HasherExt as _;
        let key = self
            .key
            .get_or_init(|| blake3::hazmat::hash_derive_key_context(self.context));
        let mut hasher = blake3::Hasher::new_from_context_key(key);
        hasher.update(bytes);
        Digest(*hasher.finalize().as_bytes())
    }
}

/// 256 bits from the operating system's generator.
///
/// # Errors
///
/// [`Error::Entropy`] if the generator fails.
pub(crate) fn random_bytes() -> Result<[u8; TOKEN_BYTES]> {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| Error::Entropy(Box::new(e)))?;
    Ok(bytes)
}

/// A session token: 256 random bits, shown as 43 characters of URL-safe base64.
///
/// This is the secret that goes in the cookie. The store never writes it to disk: it
/// keeps only a digest of it. `Debug` prints the session's [`SessionHandle`] instead of the
/// token, so a stray `{:?}` in a log line does not leak a live credential.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), sessile::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = sessile::Store::open(dir.path().join("sessions"))?;
/// let session = store.create()?;
/// let token = session.id().to_string();
/// assert_eq!(token.len(), 43);
/// let parsed: sessile::SessionId = token.parse()?;
/// assert_eq!(&parsed, session.id());
/// assert!("not a token".parse::<sessile::SessionId>().is_err());
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId([u8; TOKEN_BYTES]);

impl SessionId {
    /// Makes a new token from the operating system's random number generator.
    pub(crate) fn generate() -> Result<Self> {
        random_bytes().map(SessionId)
    }

    /// The digest under which the session is stored.
    pub(crate) fn digest(&self) -> Digest {
        TOKENS.digest(&self.0)
    }

    /// The token as words, the key of the store's memo of token digests.
    pub(crate) fn words(&self) -> Words<4> {
        words(&self.0)
    }

    /// The session's handle: safe to show in a UI or a log, useless as a cookie.
    pub fn handle(&self) -> SessionHandle {
        self.digest().handle()
    }
}

impl fmt::Display for SessionId {
    /// Writes the token itself (43 URL-safe base64 characters): this is what goes in the
    /// cookie, so treat the output as a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; TOKEN_CHARS];
        // The buffer is exactly the encoded length of 32 bytes, so this cannot fail;
        // fall back to the allocating encoder rather than panic all the same.
        match URL_SAFE_NO_PAD.encode_slice(self.0, &mut buf) {
            Ok(n) => f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?),
            Err(_) => f.write_str(&URL_SAFE_NO_PAD.encode(self.0)),
        }
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(handle {})", self.handle())
    }
}

impl FromStr for SessionId {
    type Err = ParseIdError;

    /// Parses a token. Anything but exactly 43 URL-safe base64 characters that decode to
    /// 32 bytes is rejected.
    fn from_str(s: &str) -> std::result::Result<Self, ParseIdError> {
        let text: &[u8; TOKEN_CHARS] = s.as_bytes().try_into().map_err(|_| ParseIdError(()))?;
        decode_token(text).map(SessionId).ok_or(ParseIdError(()))
    }
}

/// The value of each URL-safe base64 character, and [`NOT_BASE64`] for every other byte.
static BASE64_VALUES: [u8; 256] = {
    let mut values = [NOT_BASE64; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut i = 0;
    while i < alphabet.len() {
        values[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    values
};
/// Not a base64 character: the top bits are set, which no 6-bit value has.
const NOT_BASE64: u8 = 0xff;

/// The 32 bytes that exactly 43 URL-safe base64 characters spell, or `None` if a
/// character is not one, or the last one's 2 unused bits are not 0 (so each token has
/// one text form, as the base64 crate's strict decoder gives). Made for this one length:
/// the general decoder was a third of a cached load's instructions.
fn decode_token(text: &[u8; TOKEN_CHARS]) -> Option<[u8; TOKEN_BYTES]> {
    let value = |i: usize| BASE64_VALUES[usize::from(text[i])];
    let mut out = [0u8; TOKEN_BYTES];
    // Every value ORed together: a non-base64 byte leaves its top bits set.
    let mut seen = 0u8;
    // 40 characters in ten groups of four, three bytes each.
    for (group, bytes) in out.chunks_exact_mut(3).enumerate() {
        let (a, b, c, d) = (
            value(4 * group),
            value(4 * group + 1),
            value(4 * group + 2),
            value(4 * group + 3),
        );
        seen |= a | b | c | d;
        let n = u32::from(a) << 18 | u32::from(b) << 12 | u32::from(c) << 6 | u32::from(d);
        bytes.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    // The last three characters: 18 bits, of which the 2 lowest must be 0.
    let (a, b, c) = (value(40), value(41), value(42));
    seen |= a | b | c;
    let n = u32::from(a) << 10 | u32::from(b) << 4 | u32::from(c) >> 2;
    out[30..].copy_from_slice(&n.to_be_bytes()[2..]);
    (seen & 0xc0 == 0 && c & 0b11 == 0).then_some(out)
}

impl TryFrom<&str> for SessionId {
    type Error = ParseIdError;

    fn try_from(s: &str) -> std::result::Result<Self, ParseIdError> {
        s.parse()
    }
}

/// A secret as `W` 64-bit words: 4 for a 32-byte token, 2 for a 16-byte ID.
pub(crate) type Words<const W: usize> = [u64; W];

/// `bytes` (a multiple of 8 long) as little-endian words.
pub(crate) fn words<const W: usize>(bytes: &[u8]) -> Words<W> {
    std::array::from_fn(|i| {
        let mut word = [0u8; 8];
        if let Some(chunk) = bytes.get(8 * i..8 * i + 8) {
            word.copy_from_slice(chunk);
        }
        u64::from_le_bytes(word)
    })
}

/// A keyed digest of a token: the key of the session's record on disk.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Digest(pub(crate) [u8; 32]);

/// Hashes the first 8 bytes only: a digest is already uniformly random (and not chosen by
/// a client), so hash maps and the read cache need nothing more, and hashing 32 bytes was
/// 7% of a cached lookup. Equal digests still hash equal.
impl std::hash::Hash for Digest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

impl Digest {
    pub(crate) fn handle(&self) -> SessionHandle {
        let mut h = [0u8; HANDLE_BYTES];
        h.copy_from_slice(&self.0[..HANDLE_BYTES]);
        SessionHandle(h)
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Digest> {
        Some(Digest(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.handle())
    }
}

/// A short public name for a session: the first 16 bytes of its digest, shown as 32
/// lowercase hex characters.
///
/// Handles identify a session in lists, logs and events ("revoke this device") without
/// being usable as a cookie: they cannot be turned back into the token, and they never
/// parse as a [`SessionId`].
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let store = sessile::Store::open(dir.path().join("sessions"))?;
/// let session = store.create()?;
/// let handle = session.handle();
/// let text = handle.to_string();
/// assert_eq!(text.len(), 32);
/// assert_eq!(text.parse::<sessile::SessionHandle>()?, handle);
/// assert!(text.parse::<sessile::SessionId>().is_err());
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle([u8; HANDLE_BYTES]);

impl SessionHandle {
    pub(crate) fn as_bytes(&self) -> &[u8; HANDLE_BYTES] {
        &self.0
    }

    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters read handles back")
    )]
    pub(crate) fn from_bytes(bytes: [u8; HANDLE_BYTES]) -> SessionHandle {
        SessionHandle(bytes)
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHandle({self})")
    }
}

impl FromStr for SessionHandle {
    type Err = ParseHandleError;

    /// Parses 32 hex characters (either case).
    fn from_str(s: &str) -> std::result::Result<Self, ParseHandleError> {
        from_hex(s.as_bytes())
            .map(SessionHandle)
            .ok_or(ParseHandleError(()))
    }
}

/// Writes `bytes` as lowercase hex (handles, and digests on Redis).
pub(crate) fn write_hex(out: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.write_char(char::from(DIGITS[usize::from(b >> 4)]))?;
        out.write_char(char::from(DIGITS[usize::from(b & 0xf)]))?;
    }
    Ok(())
}

/// The `N` bytes that `text` (exactly `2 * N` hex digits, either case) spells.
pub(crate) fn from_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_rejects_bad_input() {
        let id = SessionId::generate().expect("rng");
        let text = id.to_string();
        assert_eq!(text.len(), TOKEN_CHARS);
        assert_eq!(text.parse::<SessionId>().expect("parse"), id);
        for bad in [
            "",
            "abc",
            &text[..42],
            &format!("{text}A"),
            &text.replace(|_| true, "+"),
            "ééééééééééééééééééééé+",
        ] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad:?} parsed");
        }
    }

    /// The decoder made for tokens accepts exactly what the base64 crate's strict
    /// URL-safe decoder accepts, and gives the same bytes: random tokens, and texts of
    /// 43 characters drawn from the alphabet with some other bytes mixed in.
    #[test]
    fn the_token_decoder_agrees_with_the_base64_crate() {
        let base64 = |text: &[u8]| {
            let mut bytes = [0u8; TOKEN_BYTES + 3];
            match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
                Ok(TOKEN_BYTES) => bytes[..TOKEN_BYTES].try_into().ok(),
                _ => None,
            }
        };
        let pool =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=. \x00\xff\xc3";
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..50_000 {
            let mut text = [0u8; TOKEN_CHARS];
            if round % 2 == 0 {
                let id = SessionId::generate().expect("rng");
                text.copy_from_slice(id.to_string().as_bytes());
                // Sometimes one character changed, often the last one.
                let at = if round % 4 == 0 {
                    TOKEN_CHARS - 1
                } else {
                    rand::random_range(0..TOKEN_CHARS)
                };
                if round % 3 != 0 {
                    text[at] = pool[rand::random_range(0..pool.len())];
                }
            } else {
                for c in &mut text {
                    *c = pool[rand::random_range(0..64 + (round % 5) * 2)];
                }
            }
            let ours = decode_token(&text);
            assert_eq!(ours, base64(&text), "{:?}", String::from_utf8_lossy(&text));
            if ours.is_some() {
                accepted += 1
            } else {
                refused += 1
            }
        }
        assert!(
            accepted > 10_000 && refused > 10_000,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn non_canonical_trailing_bits_are_rejected() {
        // 43 chars encode 258 bits; the last char carries 2 unused bits that must be 0.
        let mut text = SessionId([0; 32]).to_string();
        text.pop();
        text.push('B');
        assert!(text.parse::<SessionId>().is_err());
    }

    #[test]
    fn digest_is_blake3_derive_key_of_the_token() {
        let id = SessionId::generate().expect("rng");
        assert_eq!(
            id.digest().0,
            blake3::derive_key("sessile 2026-11 session token digest v1", &id.0)
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let id = SessionId::generate().expect("rng");
        assert!(!format!("{id:?}").contains(&id.to_string()));
    }

    #[test]
    fn handle_round_trips() {
        let h = SessionId::generate().expect("rng").handle();
        assert_eq!(h.to_string().parse::<SessionHandle>().expect("parse"), h);
        assert!("zz".repeat(16).parse::<SessionHandle>().is_err());
    }
}
