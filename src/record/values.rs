//! A session's values: read in place from the stored record's bytes, and copied into a
//! map only when the application changes them.
//!
//! A load keeps the record's bytes (sled's reference-counted buffer, shared with the read
//! cache) and one table of where each key and value lies in them, checked when the record
//! was read (see [`codec::parse_values`]). `Session::get` decodes a value when it is asked
//! for; `keys`, `len` and `contains_key` decode nothing. The first change copies the
//! values into a [`ValueMap`], which the next save encodes; a save of values that were
//! not changed copies their stored bytes as they are.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_bytes::ByteBuf;
use sled::IVec;

use crate::record::codec::{self, CodecError, Span};

/// Values as an application builds them: key -> encoded value.
pub(crate) type ValueMap = BTreeMap<String, ByteBuf>;

/// The values of a session or record. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Values {
    /// As stored: a record's bytes and where each value lies in them, sorted by key.
    Stored(Arc<Stored>),
    /// Changed since they were read, or built by the application or an adapter.
    Owned(Arc<ValueMap>),
}

/// The values of a stored record, in place.
pub(crate) struct Stored {
    bytes: IVec,
    /// Where the payload (bincode of the whole map) starts in `bytes`.
    payload: usize,
    spans: Box<[Span]>,
}

impl Default for Values {
    fn default() -> Self {
        Values::Owned(Arc::new(ValueMap::new()))
    }
}

impl From<ValueMap> for Values {
    fn from(map: ValueMap) -> Self {
        Values::Owned(Arc::new(map))
    }
}

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k, v.len())))
            .finish()
    }
}

impl PartialEq for Values {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Values {
    /// The values of the record `bytes`, whose payload starts at `payload`: checked as
    /// strictly as any read from disk (see [`codec::parse_values`]).
    pub(super) fn stored(bytes: IVec, payload: usize) -> Result<Values, CodecError> {
        let spans = codec::parse_values(&bytes, payload)?;
        Ok(Values::Stored(Arc::new(Stored {
            bytes,
            payload,
            spans: spans.into_boxed_slice(),
        })))
    }

    /// The encoded value under `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&[u8]> {
        match self {
            Values::Stored(s) => {
                let at = s
                    .spans
                    .binary_search_by(|span| s.key(span).cmp(key.as_bytes()))
                    .ok()?;
                s.spans.get(at).map(|span| s.value(span))
            }
            Values::Owned(map) => map.get(key).map(|b| b.as_slice()),
        }
    }

    /// Whether there is a value under `key`.
    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// How many values there are.
    pub(crate) fn len(&self) -> usize {
        match self {
            Values::Stored(s) => s.spans.len(),
            Values::Owned(map) => map.len(),
        }
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys and encoded values, in key order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        match self {
            Values::Stored(s) => Iter(Inner::Stored(s, s.spans.iter())),
            Values::Owned(map) => Iter(Inner::Owned(map.iter())),
        }
    }

    /// The values as a map the application can change (copied out of the record the
    /// first time, or if another copy shares them).
    pub(crate) fn make_mut(&mut self) -> &mut ValueMap {
        match self {
            Values::Owned(map) => Arc::make_mut(map),
            Values::Stored(s) => {
                let map = s.to_map();
                *self = Values::Owned(Arc::new(map));
                self.make_mut()
            }
        }
    }

    /// Appends the payload of a record holding these values: the stored bytes as they
    /// are, or the map encoded.
    ///
    /// # Errors
    ///
    /// What the encoder reports for a map.
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), bincode::error::EncodeError> {
        match self {
            Values::Stored(s) => {
                // `Values::stored` checked the payload: it is in range.
                let payload = s.bytes.get(s.payload..);
                let payload = payload.ok_or(bincode::error::EncodeError::Other(
                    "stored values out of range",
                ))?;
                out.extend_from_slice(payload);
                Ok(())
            }
            Values::Owned(map) => codec::encode_payload(&**map, out),
        }
    }
}

impl Stored {
    fn to_map(&self) -> ValueMap {
        self.spans
            .iter()
            .map(|span| {
                (
                    self.key_str(span).to_owned(),
                    ByteBuf::from(self.value(span)),
                )
            })
            .collect()
    }

    fn key(&self, span: &Span) -> &[u8] {
        self.bytes.get(span.key.clone()).unwrap_or_default()
    }

    /// `parse_values` checked that every key is UTF-8.
    fn key_str(&self, span: &Span) -> &str {
        std::str::from_utf8(self.key(span)).unwrap_or_default()
    }

    fn value(&self, span: &Span) -> &[u8] {
        self.bytes.get(span.value.clone()).unwrap_or_default()
    }
}

/// See [`Values::iter`].
pub(crate) struct Iter<'a>(Inner<'a>);

enum Inner<'a> {
    Stored(&'a Stored, std::slice::Iter<'a, Span>),
    Owned(std::collections::btree_map::Iter<'a, String, ByteBuf>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            Inner::Stored(s, spans) => spans.next().map(|span| (s.key_str(span), s.value(span))),
            Inner::Owned(it) => it.next().map(|(k, v)| (k.as_str(), v.as_slice())),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            Inner::Stored(_, spans) => spans.size_hint(),
            Inner::Owned(it) => it.size_hint(),
        }
    }
}
