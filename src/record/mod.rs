//! A session record as stored: its bytes, and what reading them found. Every layer
//! above passes records around as [`StoredRecord`]; the byte layouts are in [`codec`]
//! and the values read in place in [`values`].

pub(crate) mod codec;
pub(crate) mod values;

use std::sync::Arc;

use sled::IVec;

use self::codec::{CodecError, Header, NO_USER, parse_header, parse_user, write_header};
use self::values::{ValueMap, Values};

/// A decoded record as it is on disk, shared between the cache and readers.
#[derive(Debug)]
pub(crate) struct StoredRecord {
    pub(crate) bytes: IVec,
    pub(crate) header: Header,
    pub(crate) user: Option<String>,
    pub(crate) values: Values,
    /// What an adapter made of this version of the record (tower's parsed JSON values,
    /// actix's `sessile.base` entry), kept with it in the cache once the cached record is
    /// asked for a second time, so a hot load converts twice at most (see
    /// [`Memo::get_or`]). A write makes a new entry, so the memo never outlives the data
    /// it was made from. Shared with this record's thread copies (see
    /// [`private_copy`](StoredRecord::private_copy)).
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters memoise")
    )]
    pub(crate) memo: Arc<Memo>,
}

/// A value derived from an [`StoredRecord`], made at most once, and only for a record
/// asked for twice.
#[derive(Default)]
pub(crate) struct Memo {
    made: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
    /// Whether it was asked for before.
    asked: std::sync::atomic::AtomicBool,
}

impl Memo {
    /// The memo if it is a `T`, made by `make` if there is none yet; `None` the first time
    /// (the caller derives what it needs itself) or if the memo is of another type.
    ///
    /// Made on the second ask: most records a uniform load reads are read once while
    /// cached, and keeping their derived copy would cost the caller a clone of it (and
    /// the cache its memory) for nothing. Borrowed: a hit writes nothing (no reference
    /// count), so threads reading one record's memo do not pass its cache line between
    /// cores.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters memoise")
    )]
    pub(crate) fn get_or<T: Send + Sync + 'static>(&self, make: impl FnOnce() -> T) -> Option<&T> {
        use std::sync::atomic::Ordering;
        if self.made.get().is_none() && !self.asked.swap(true, Ordering::Relaxed) {
            return None;
        }
        let any = self.made.get_or_init(|| Arc::new(make()));
        any.downcast_ref::<T>()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.made.get().is_some() {
            "Memo(set)"
        } else {
            "Memo(empty)"
        })
    }
}

impl StoredRecord {
    /// A record to store: `encoded` (from [`encode_record`], limits checked) with `header` written
    /// into it.
    pub(crate) fn encoded(
        mut encoded: Vec<u8>,
        header: Header,
        user: Option<String>,
        values: Values,
    ) -> StoredRecord {
        codec::set_header(&mut encoded, &header);
        StoredRecord {
            bytes: IVec::from(encoded),
            header,
            user,
            values,
            memo: Arc::default(),
        }
    }

    /// A copy of this entry that shares no memory it writes with it (for one thread's own
    /// use; see the engine's thread copies) but its memo, which is written once: what is
    /// derived from the bytes is derived once for the record and all its copies.
    /// `None` if the bytes no longer parse, which cannot happen for bytes that parsed once.
    pub(crate) fn private_copy(&self) -> Option<StoredRecord> {
        let bytes = IVec::from(&self.bytes[..]);
        let values = match &self.values {
            Values::Stored(_) => match decode_record(&bytes) {
                Ok(record) => record.values,
                Err(_) => return None,
            },
            Values::Owned(map) => Values::from(ValueMap::clone(map)),
        };
        Some(StoredRecord {
            bytes,
            header: self.header,
            user: self.user.clone(),
            values,
            memo: Arc::clone(&self.memo),
        })
    }

    /// Decodes stored bytes, as strictly as any read: limits, trailing bytes, UTF-8.
    pub(crate) fn decode(bytes: IVec) -> std::result::Result<StoredRecord, (IVec, CodecError)> {
        match decode_record(&bytes) {
            Ok(record) => Ok(StoredRecord {
                bytes,
                header: record.header,
                user: record.user,
                values: record.values,
                memo: Arc::default(),
            }),
            Err(e) => Err((bytes, e)),
        }
    }
}

/// A decoded record: its values are read in place.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Decoded {
    pub(super) header: Header,
    pub(super) user: Option<String>,
    pub(super) values: Values,
}

/// Decodes a whole record of either format: header, user, and where each value lies.
/// Never panics, and allocates only the table of values (at most one entry per two bytes
/// of input).
pub(super) fn decode_record(bytes: &IVec) -> std::result::Result<Decoded, CodecError> {
    let header = parse_header(bytes)?;
    let (user, start) = parse_user(bytes)?;
    let user = user.map(str::to_owned);
    Ok(Decoded {
        header,
        user,
        values: Values::stored(bytes.clone(), start)?,
    })
}

/// Encodes a record in the current format. The caller checks the size against its limit.
pub(crate) fn encode_record(
    header: &Header,
    user: Option<&str>,
    values: &Values,
) -> std::result::Result<Vec<u8>, bincode::error::EncodeError> {
    let mut out = Vec::with_capacity(64 + values.len() * 32);
    write_header(&mut out, header);
    match user {
        // Callers reject user names over MAX_USER_LEN (far below u16::MAX) before this.
        Some(u) => {
            let len = u16::try_from(u.len()).unwrap_or(NO_USER - 1);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&u.as_bytes()[..usize::from(len)]);
        }
        None => out.extend_from_slice(&NO_USER.to_be_bytes()),
    }
    values.encode_into(&mut out)?;
    Ok(out)
}

/// Runs `bytes` through every path that reads a stored record (header, user, full
/// decode), as a read from disk does. If the record decodes, returns it re-encoded, or an
/// empty vector (which never decodes) if the partial readers disagree with the full
/// decode; the fuzz target treats both that and a re-encoding that does not round-trip
/// as a bug.
#[cfg(any(test, fuzzing))]
pub fn fuzz_decode_record(bytes: &[u8]) -> Option<Vec<u8>> {
    let header = parse_header(bytes).ok();
    let user = codec::parse_user_only(bytes).ok().flatten();
    let record = decode_record(&IVec::from(bytes)).ok()?;
    if header != Some(record.header) || user != record.user.as_deref() {
        return Some(Vec::new());
    }
    // The map bincode decodes from the payload must be the values read in place.
    let (_, start) = parse_user(bytes).ok()?;
    let cfg = bincode::config::standard().with_limit::<{ codec::DECODE_LIMIT }>();
    let decoded = bincode::serde::decode_from_slice::<ValueMap, _>(&bytes[start..], cfg);
    if !decoded.is_ok_and(|(map, _)| Values::from(map) == record.values) {
        return Some(Vec::new());
    }
    // Encoded from a map, as a write does, rather than copied from the stored bytes.
    let map: ValueMap = record
        .values
        .iter()
        .map(|(k, v)| (k.to_owned(), serde_bytes::ByteBuf::from(v)))
        .collect();
    encode_record(&record.header, record.user.as_deref(), &Values::from(map)).ok()
}

#[cfg(test)]
mod tests {
    use super::{StoredRecord, encode_record};
    use crate::record::codec::Header;
    use crate::record::values::Values;

    fn record() -> StoredRecord {
        let bytes =
            encode_record(&Header::PLACEHOLDER, Some("ann"), &Values::default()).expect("encode");
        StoredRecord::decode(bytes.into()).expect("decode")
    }

    /// A memo is made on the second ask (the first caller uses what it derived itself),
    /// then kept.
    #[test]
    fn a_memo_is_made_on_the_second_ask() {
        let r = record();
        assert_eq!(r.memo.get_or(|| 1u32), None);
        assert_eq!(r.memo.get_or(|| 2u32), Some(&2));
        assert_eq!(r.memo.get_or(|| 3u32), Some(&2));
        assert_eq!(r.memo.get_or(|| "text"), None, "another type");
    }

    /// A thread's copy of a record shares its memo (a tower load parses every value and
    /// fingerprints it: more than the whole hot load costs), made or not yet: asked for
    /// once through the record and once through a copy, it is made, for both.
    #[test]
    fn private_copies_share_the_memo() {
        let r = record();
        let early = r.private_copy().expect("copy");
        assert_eq!(r.memo.get_or(|| 1u32), None);
        assert_eq!(early.memo.get_or(|| 2u32), Some(&2));
        assert_eq!(r.memo.get_or(|| 3u32), Some(&2));
        let late = r.private_copy().expect("copy");
        assert_eq!(late.memo.get_or(|| 4u32), Some(&2));
    }
}
