//! Every byte layout sessile writes: session records and the keys of the index trees.
//!
//! A record is a format byte, a fixed big-endian header, the user, and a bincode payload.
//! Format 2 (written since per-session lifetimes):
//!
//! ```text
//! 0       format (2)
//! 1..9    expires_at, ms since the Unix epoch, u64 big-endian
//! 9..17   last_seen
//! 17..25  created_at
//! 25..33  version (incremented by every write)
//! 33..41  the session's own idle timeout in ms (0: the store's)
//! 41..49  the session's own absolute timeout in ms (0: the store's)
//! 49..51  user length, u16 big-endian (0xFFFF: no user)
//! 51..    user bytes (UTF-8), then bincode(standard, limited) of BTreeMap<String, bytes>
//! ```
//!
//! Format 1 (sessile 0.1) is the same without bytes 33..49; it is still read, as a
//! session that follows the store's timeouts, and rewritten in format 2 by its next write.
//!
//! The header lets `touch`, `len` and the purge thread read expiry and user without
//! decoding the data. Each value in the map is itself bincode of the caller's type, so one
//! value that no longer matches its type does not make the others unreadable.
//!
//! The payload is read in place ([`parse_values`]): it is bincode's encoding of a map of
//! strings to byte strings (a varint count, then for each entry a varint length and the
//! key's UTF-8 bytes, a varint length and the value's bytes), keys in strictly increasing
//! byte order, as sessile has always written it.

use std::ops::Range;

use bincode::config::standard;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The record format this build writes. [`FORMAT_1`] records are read too.
pub(super) const RECORD_FORMAT: u8 = 2;
/// The record format of sessile 0.1: no per-session timeouts.
pub(super) const FORMAT_1: u8 = 1;
/// The store format (`meta/format`) this build writes and reads; stores of format 1 are
/// upgraded by their first write (the engine's `upgrade_before_write`).
pub(crate) const STORE_FORMAT: u32 = 2;
/// Upper bound on what any decode may allocate, whatever a length prefix claims.
pub(crate) const DECODE_LIMIT: usize = 4 << 20;

const HEADER_LEN_1: usize = 33;
const HEADER_LEN: usize = 49;
pub(super) const NO_USER: u16 = u16::MAX;

/// A session's own timeouts as stored: milliseconds, 0 meaning "the store's".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OwnTimeouts {
    pub(crate) idle_ms: u64,
    pub(crate) absolute_ms: u64,
}

/// The fixed part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) expires_at: u64,
    pub(crate) last_seen: u64,
    pub(crate) created_at: u64,
    pub(crate) version: u64,
    pub(crate) own: OwnTimeouts,
}

impl Header {
    /// Times of a record being encoded before the write that sets them.
    pub(crate) const PLACEHOLDER: Header = Header {
        expires_at: 0,
        last_seen: 0,
        created_at: 0,
        version: 0,
        own: OwnTimeouts {
            idle_ms: 0,
            absolute_ms: 0,
        },
    };
}

/// Why bytes read from disk could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("record is truncated")]
    Truncated,
    #[error("unknown record format {0}")]
    UnknownFormat(u8),
    #[error("user name is not valid UTF-8")]
    BadUser,
    #[error("payload does not decode: {0}")]
    Payload(&'static str),
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
}

/// Where one key and its value lie in a record's bytes.
#[derive(Debug, Clone)]
pub(super) struct Span {
    pub(super) key: Range<usize>,
    pub(super) value: Range<usize>,
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

/// The header length of a record of `format`, or why it is not one.
fn header_len(bytes: &[u8]) -> Result<usize, CodecError> {
    let len = match bytes.first() {
        None => return Err(CodecError::Truncated),
        Some(&RECORD_FORMAT) => HEADER_LEN,
        Some(&FORMAT_1) => HEADER_LEN_1,
        Some(&other) => return Err(CodecError::UnknownFormat(other)),
    };
    if bytes.len() < len + 2 {
        return Err(CodecError::Truncated);
    }
    Ok(len)
}

/// Reads the header of a record of either format.
pub(super) fn parse_header(bytes: &[u8]) -> Result<Header, CodecError> {
    let len = header_len(bytes)?;
    let own = if len == HEADER_LEN {
        OwnTimeouts {
            idle_ms: be_u64(bytes, 33),
            absolute_ms: be_u64(bytes, 41),
        }
    } else {
        OwnTimeouts::default()
    };
    Ok(Header {
        expires_at: be_u64(bytes, 1),
        last_seen: be_u64(bytes, 9),
        created_at: be_u64(bytes, 17),
        version: be_u64(bytes, 25),
        own,
    })
}

/// Reads the user and returns it with the offset of the payload.
pub(super) fn parse_user(bytes: &[u8]) -> Result<(Option<&str>, usize), CodecError> {
    let header_len = header_len(bytes)?;
    let len = u16::from_be_bytes([bytes[header_len], bytes[header_len + 1]]);
    let start = header_len + 2;
    if len == NO_USER {
        return Ok((None, start));
    }
    let end = start + usize::from(len);
    let user = bytes.get(start..end).ok_or(CodecError::Truncated)?;
    let user = std::str::from_utf8(user).map_err(|_| CodecError::BadUser)?;
    Ok((Some(user), end))
}

/// The user of a record, without decoding its data.
#[cfg(any(test, fuzzing))]
pub(super) fn parse_user_only(bytes: &[u8]) -> Result<Option<&str>, CodecError> {
    Ok(parse_user(bytes)?.0)
}

/// Everything after the header: user and data. Two records (of either format) with
/// equal tails hold the same user and data.
pub(crate) fn tail(bytes: &[u8]) -> &[u8] {
    match header_len(bytes) {
        Ok(len) => &bytes[len..],
        Err(_) => &[],
    }
}

/// Checks the payload of a record, from `start` to the end of `bytes`, and returns where
/// each key and value lies. As strict as bincode's own decoding of the map (the same
/// varints, UTF-8 keys, at most [`DECODE_LIMIT`] bytes claimed, no trailing bytes), and
/// also requires the keys in strictly increasing order, as every writer sorts them.
pub(super) fn parse_values(bytes: &[u8], start: usize) -> Result<Vec<Span>, CodecError> {
    let mut at = start;
    let count = varint(bytes, &mut at)?;
    let mut claimed = 0usize;
    let mut spans: Vec<Span> = Vec::with_capacity(usize::try_from(count.min(16)).unwrap_or(16));
    // Each entry takes at least two bytes, so a false count ends at the end of the input.
    for _ in 0..count {
        let key = take(bytes, &mut at, &mut claimed)?;
        let key_bytes = &bytes[key.clone()];
        // Keys are nearly always ASCII, which is UTF-8: checked word by word, a fraction of
        // the general validator's cost on short keys.
        if !key_bytes.is_ascii() && std::str::from_utf8(key_bytes).is_err() {
            return Err(CodecError::Payload("a key is not UTF-8"));
        }
        if spans
            .last()
            .is_some_and(|prev| &bytes[prev.key.clone()] >= key_bytes)
        {
            return Err(CodecError::Payload("keys are not in increasing order"));
        }
        let value = take(bytes, &mut at, &mut claimed)?;
        spans.push(Span { key, value });
    }
    if at != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - at));
    }
    Ok(spans)
}

/// A length-prefixed byte string at `*at`, as a range of `bytes`.
fn take(bytes: &[u8], at: &mut usize, claimed: &mut usize) -> Result<Range<usize>, CodecError> {
    let len = usize::try_from(varint(bytes, at)?).map_err(|_| CodecError::Truncated)?;
    *claimed = claimed.saturating_add(len);
    if *claimed > DECODE_LIMIT {
        return Err(CodecError::Payload("over the decode limit"));
    }
    let end = at.checked_add(len).filter(|end| *end <= bytes.len());
    let end = end.ok_or(CodecError::Truncated)?;
    let range = *at..end;
    *at = end;
    Ok(range)
}

/// bincode's variable-length integer at `*at` (little-endian, as `standard()` writes it).
fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, CodecError> {
    let first = *bytes.get(*at).ok_or(CodecError::Truncated)?;
    let width = match first {
        0..=250 => {
            *at += 1;
            return Ok(u64::from(first));
        }
        251 => 2,
        252 => 4,
        253 => 8,
        _ => return Err(CodecError::Payload("invalid length")),
    };
    let digits = bytes
        .get(*at + 1..*at + 1 + width)
        .ok_or(CodecError::Truncated)?;
    let mut le = [0u8; 8];
    le[..width].copy_from_slice(digits);
    *at += 1 + width;
    Ok(u64::from_le_bytes(le))
}

/// Appends the payload of a record holding `map`.
pub(super) fn encode_payload(
    map: &impl Serialize,
    out: &mut Vec<u8>,
) -> Result<(), bincode::error::EncodeError> {
    bincode::serde::encode_into_std_write(map, out, standard()).map(|_| ())
}

/// The format byte and header, in the current format.
pub(super) fn write_header(out: &mut Vec<u8>, h: &Header) {
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&h.expires_at.to_be_bytes());
    out.extend_from_slice(&h.last_seen.to_be_bytes());
    out.extend_from_slice(&h.created_at.to_be_bytes());
    out.extend_from_slice(&h.version.to_be_bytes());
    out.extend_from_slice(&h.own.idle_ms.to_be_bytes());
    out.extend_from_slice(&h.own.absolute_ms.to_be_bytes());
}

/// Overwrites the header of a record encoded by `record::encode_record` in place.
pub(super) fn set_header(bytes: &mut [u8], header: &Header) {
    if bytes.len() >= HEADER_LEN && bytes[0] == RECORD_FORMAT {
        bytes[1..9].copy_from_slice(&header.expires_at.to_be_bytes());
        bytes[9..17].copy_from_slice(&header.last_seen.to_be_bytes());
        bytes[17..25].copy_from_slice(&header.created_at.to_be_bytes());
        bytes[25..33].copy_from_slice(&header.version.to_be_bytes());
        bytes[33..41].copy_from_slice(&header.own.idle_ms.to_be_bytes());
        bytes[41..49].copy_from_slice(&header.own.absolute_ms.to_be_bytes());
    }
}

/// A copy of `bytes` (a record of either format whose header parsed) in the current
/// format with a new header: the upgrade path of a record.
pub(crate) fn with_header(bytes: &[u8], header: &Header) -> Vec<u8> {
    let tail = tail(bytes);
    let mut out = Vec::with_capacity(HEADER_LEN + tail.len());
    write_header(&mut out, header);
    out.extend_from_slice(tail);
    out
}

/// Encodes one value of a session.
pub(crate) fn encode_value<T: Serialize + ?Sized>(
    value: &T,
) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, standard())
}

/// Decodes one value of a session; the whole input must be used.
pub(crate) fn decode_value<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    let cfg = standard().with_limit::<DECODE_LIMIT>();
    let (value, read) = bincode::serde::decode_from_slice(bytes, cfg)?;
    if read != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - read).into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::values::{ValueMap, Values};
    use crate::record::{Decoded, decode_record, encode_record, fuzz_decode_record};
    use serde_bytes::ByteBuf;
    use sled::IVec;

    fn decode(bytes: &[u8]) -> Result<Decoded, CodecError> {
        decode_record(&IVec::from(bytes))
    }

    fn sample() -> Decoded {
        let mut data = ValueMap::new();
        data.insert("a".into(), ByteBuf::from(vec![1, 2, 3]));
        data.insert(
            "cart".into(),
            ByteBuf::from(encode_value(&vec![1u32, 2]).expect("enc")),
        );
        Decoded {
            header: Header {
                expires_at: 1_700_000_100_000,
                last_seen: 1_700_000_000_000,
                created_at: 1_699_999_000_000,
                version: 7,
                own: OwnTimeouts {
                    idle_ms: 30 * 86_400_000,
                    absolute_ms: 0,
                },
            },
            user: Some("alice".into()),
            values: data.into(),
        }
    }

    /// Keys are UTF-8, not only ASCII: a non-ASCII key decodes, and one that is not
    /// UTF-8 is an error.
    #[test]
    fn a_key_that_is_not_utf8_is_an_error() {
        let mut data = ValueMap::new();
        data.insert("a".into(), ByteBuf::from(vec![1]));
        data.insert("é".into(), ByteBuf::from(vec![2]));
        let r = sample();
        let values: Values = data.into();
        let mut bytes = encode_record(&r.header, None, &values).expect("encode");
        assert_eq!(decode(&bytes).expect("a non-ASCII key").values, values);
        let at = bytes
            .windows(2)
            .position(|w| w == "é".as_bytes())
            .expect("the key's bytes");
        bytes[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
        assert!(matches!(
            decode(&bytes),
            Err(CodecError::Payload("a key is not UTF-8"))
        ));
    }

    #[test]
    fn record_round_trips() {
        let r = sample();
        let bytes = encode_record(&r.header, r.user.as_deref(), &r.values).expect("encode");
        assert_eq!(decode(&bytes).expect("decode"), r);
        assert_eq!(parse_user_only(&bytes).expect("user"), Some("alice"));
        let none = encode_record(&r.header, None, &Values::default()).expect("encode");
        assert_eq!(decode(&none).expect("decode").user, None);
    }

    #[test]
    fn header_patch_keeps_the_rest() {
        let r = sample();
        let bytes = encode_record(&r.header, r.user.as_deref(), &r.values).expect("encode");
        let h = Header {
            expires_at: 5,
            last_seen: 4,
            created_at: 3,
            version: 8,
            own: OwnTimeouts::default(),
        };
        let patched = with_header(&bytes, &h);
        let back = decode(&patched).expect("decode");
        assert_eq!(back.header, h);
        assert_eq!(back.values, r.values);
        assert_eq!(tail(&patched), tail(&bytes));
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let r = sample();
        let bytes = encode_record(&r.header, r.user.as_deref(), &r.values).expect("encode");
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix {n} decoded");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long).is_err());
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(matches!(decode(&other), Err(CodecError::UnknownFormat(9))));
    }

    /// bincode's own decoding of a payload into a map, as sessile read it before values
    /// were read in place.
    fn bincode_map(payload: &[u8]) -> Option<ValueMap> {
        let cfg = standard().with_limit::<DECODE_LIMIT>();
        let (map, read) = bincode::serde::decode_from_slice::<ValueMap, _>(payload, cfg).ok()?;
        (read == payload.len()).then_some(map)
    }

    fn payload_of(map: &ValueMap) -> Vec<u8> {
        let mut out = Vec::new();
        encode_payload(map, &mut out).expect("encode");
        out
    }

    fn spans_as_map(payload: &[u8]) -> Option<ValueMap> {
        let spans = parse_values(payload, 0).ok()?;
        Some(
            spans
                .iter()
                .map(|s| {
                    let key = std::str::from_utf8(&payload[s.key.clone()]).expect("utf-8");
                    (key.to_owned(), ByteBuf::from(&payload[s.value.clone()]))
                })
                .collect(),
        )
    }

    proptest::proptest! {
        /// Every map sessile writes is read in place as exactly that map.
        #[test]
        fn values_read_in_place_are_the_written_map(
            map in proptest::collection::btree_map(".{0,12}", proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..12)
        ) {
            let map: ValueMap = map.into_iter().map(|(k, v)| (k, ByteBuf::from(v))).collect();
            let payload = payload_of(&map);
            proptest::prop_assert_eq!(spans_as_map(&payload), Some(map));
        }

        /// Damaged payloads: whatever the in-place reader accepts, bincode decodes to the
        /// same map (never more lenient than before).
        #[test]
        fn the_in_place_reader_is_never_more_lenient_than_bincode(
            map in proptest::collection::btree_map("[a-z]{0,4}", proptest::collection::vec(proptest::num::u8::ANY, 0..20), 0..5),
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..4),
            cut in proptest::num::usize::ANY,
        ) {
            let map: ValueMap = map.into_iter().map(|(k, v)| (k, ByteBuf::from(v))).collect();
            let mut payload = payload_of(&map);
            for (at, byte) in edits {
                let len = payload.len();
                payload[at % len] = byte;
            }
            let cut = cut % (payload.len() + 1);
            for bytes in [&payload[..], &payload[..cut]] {
                if let Some(read) = spans_as_map(bytes) {
                    proptest::prop_assert_eq!(Some(read), bincode_map(bytes));
                }
            }
        }
    }

    #[test]
    fn keys_out_of_order_or_repeated_are_refused() {
        // bincode would take these (a map sorts and dedups); sessile never writes them.
        let entry = |k: &[u8], v: &[u8]| [&[k.len() as u8][..], k, &[v.len() as u8], v].concat();
        let unsorted = [&[2u8][..], &entry(b"b", b"1"), &entry(b"a", b"2")].concat();
        let repeated = [&[2u8][..], &entry(b"a", b"1"), &entry(b"a", b"2")].concat();
        let sorted = [&[2u8][..], &entry(b"a", b"1"), &entry(b"b", b"2")].concat();
        assert!(parse_values(&unsorted, 0).is_err());
        assert!(parse_values(&repeated, 0).is_err());
        assert_eq!(parse_values(&sorted, 0).expect("sorted").len(), 2);
        let not_utf8 = [&[1u8][..], &entry(&[0xFF], b"1")].concat();
        assert!(parse_values(&not_utf8, 0).is_err());
        assert!(bincode_map(&not_utf8).is_none());
    }

    #[test]
    fn a_huge_length_prefix_is_refused_without_allocating() {
        let h = Header {
            expires_at: 1,
            last_seen: 1,
            created_at: 1,
            version: 1,
            own: OwnTimeouts::default(),
        };
        let mut bytes = encode_record(&h, None, &Values::default()).expect("encode");
        bytes.truncate(bytes.len() - 1);
        // bincode varint: 0xFD then a u64 claiming 2^60 map entries.
        bytes.push(0xFD);
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode(&bytes).is_err());
    }

    /// The committed fuzz seeds (and any crash inputs added there) replay through the
    /// record decoder on every `cargo test`, so a decoder finding stays fixed without a
    /// fuzzer.
    #[test]
    fn fuzz_corpus_replays_through_the_decoder() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_record");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("corpus dir") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            if let Some(encoded) = fuzz_decode_record(&bytes) {
                let again = fuzz_decode_record(&encoded);
                assert_eq!(again.as_deref(), Some(encoded.as_slice()));
            }
            n += 1;
        }
        assert!(n >= 5, "the seed corpus is missing");
        // The format-2 seed is a real record, with its own idle timeout.
        let seed = std::fs::read(dir.join("format2_with_lifetime")).expect("seed");
        let record = decode(&seed).expect("the format-2 seed decodes");
        assert_eq!(record.header.own.idle_ms, 30 * 86_400_000);
        assert!(matches!(
            decode(&std::fs::read(dir.join("future_format_3")).expect("seed")),
            Err(CodecError::UnknownFormat(3))
        ));
    }

    #[test]
    fn a_format_1_record_reads_and_upgrades_on_rewrite() {
        let r = sample();
        let current = encode_record(&r.header, r.user.as_deref(), &r.values).expect("encode");
        // The same record as sessile 0.1 wrote it: no per-session timeouts.
        let mut old = vec![FORMAT_1];
        old.extend_from_slice(&current[1..33]);
        old.extend_from_slice(&current[49..]);
        let back = decode(&old).expect("format 1 decodes");
        assert_eq!(back.header.own, OwnTimeouts::default());
        assert_eq!((back.user, back.values), (r.user.clone(), r.values.clone()));
        assert_eq!(tail(&old), tail(&current));
        let upgraded = with_header(&old, &r.header);
        assert_eq!(upgraded, current);
        for n in 0..old.len() {
            assert!(decode(&old[..n]).is_err(), "prefix {n} decoded");
        }
    }
}
