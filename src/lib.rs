#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod backend;
mod cleanup;
mod clock;
mod codec;
mod config;
mod digests;
mod dump;
mod error;
mod events;
mod expiry;
#[cfg(test)]
mod failpoint;
mod hot;
mod id;
#[cfg(any(feature = "tower", feature = "tower-014", feature = "actix"))]
mod integrations;
mod locks;
mod read;
mod registry;
mod rotate;
mod session;
mod state;
mod stats;
mod store;
mod users;
mod values;
mod verify;
mod write;

pub use crate::clock::{Clock, ManualClock};
pub use crate::config::{
    Config, DEFAULT_ABSOLUTE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_ABSOLUTE_TIMEOUT,
    DEFAULT_MAX_IDLE_TIMEOUT, Durability, MAX_TIMEOUT, MAX_USER_LEN,
};
pub use crate::dump::SessionDump;
pub use crate::error::{Error, Oversized, Result, StorageError};
pub use crate::events::{DestroyReason, Event};
pub use crate::expiry::Lifetime;
pub use crate::id::{ParseHandleError, ParseIdError, SessionHandle, SessionId};
#[cfg(feature = "actix")]
pub use crate::integrations::actix;
#[cfg(any(feature = "tower", feature = "tower-014"))]
pub use crate::integrations::tower;
pub use crate::session::Session;
pub use crate::stats::Stats;
pub use crate::store::Store;
pub use crate::users::SessionInfo;
pub use crate::verify::VerifyReport;

/// Not part of the public API: the entry points of the fuzz targets in `fuzz/`, which
/// build with `--cfg fuzzing` (cargo-fuzz sets it). Absent from every other build.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::codec::fuzz_decode_record as decode_record;
}
