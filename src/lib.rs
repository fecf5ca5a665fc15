#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod cleanup;
mod clock;
mod codec;
mod commit;
mod config;
mod dump;
mod error;
mod events;
mod expiry;
mod id;
#[cfg(any(feature = "tower", feature = "actix"))]
mod integrations;
mod registry;
mod rotate;
mod session;
mod shared;
mod stats;
mod store;
mod users;
mod verify;

pub use crate::clock::{Clock, ManualClock};
pub use crate::config::{
    Config, DEFAULT_ABSOLUTE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, Durability, MAX_USER_LEN,
};
pub use crate::dump::SessionDump;
pub use crate::error::{Error, Oversized, Result, StorageError};
pub use crate::events::{DestroyReason, Event};
pub use crate::id::{ParseHandleError, ParseIdError, SessionHandle, SessionId};
#[cfg(feature = "actix")]
pub use crate::integrations::actix;
#[cfg(feature = "tower")]
pub use crate::integrations::tower;
pub use crate::session::Session;
pub use crate::stats::Stats;
pub use crate::store::Store;
pub use crate::users::SessionInfo;
pub use crate::verify::VerifyReport;

#[doc(hidden)]
pub mod __fuzz {
    //! Not part of the public API and not covered by semver: entry points for the fuzz
    //! targets in `fuzz/`, which need the crate-private record codec.

    /// Runs `bytes` through every path that reads a stored record (header, user, full
    /// decode), as a read from disk does. If the record decodes, returns it re-encoded, or
    /// an empty vector (which never decodes) if the partial readers disagree with the full
    /// decode; the fuzz target treats both that and a re-encoding that does not round-trip
    /// as a bug.
    pub fn decode_record(bytes: &[u8]) -> Option<Vec<u8>> {
        use crate::codec;
        let header = codec::parse_header(bytes).ok();
        let user = codec::parse_user_only(bytes).ok().flatten();
        let record = codec::decode_record(bytes).ok()?;
        // What the partial readers saw must agree with the full decode.
        if header != Some(record.header) || user != record.user.as_deref() {
            return Some(Vec::new());
        }
        codec::encode_record(&record.header, record.user.as_deref(), &record.data).ok()
    }
}
