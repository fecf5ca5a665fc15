#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod backend;
mod clock;
mod config;
mod dump;
mod engine;
mod error;
mod events;
mod expiry;
#[cfg(test)]
mod failpoint;
mod id;
#[cfg(any(feature = "tower", feature = "tower-014", feature = "actix"))]
mod integrations;
mod record;
mod session;
mod stats;
mod store;
mod users;

pub use crate::clock::{Clock, ManualClock};
pub use crate::config::{
    Config, DEFAULT_ABSOLUTE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_ABSOLUTE_TIMEOUT,
    DEFAULT_MAX_IDLE_TIMEOUT, Durability, MAX_TIMEOUT, MAX_USER_LEN,
};
pub use crate::dump::SessionDump;
pub use crate::engine::verify::VerifyReport;
pub use crate::error::{Error, Oversized, ParseHandleError, ParseIdError, Result, StorageError};
pub use crate::events::{DestroyReason, Event, RecvError, Subscription};
pub use crate::expiry::Lifetime;
pub use crate::id::{SessionHandle, SessionId};
#[cfg(feature = "actix")]
pub use crate::integrations::actix;
#[cfg(any(feature = "tower", feature = "tower-014"))]
pub use crate::integrations::tower;
pub use crate::session::Session;
pub use crate::stats::Stats;
pub use crate::store::Store;
pub use crate::users::SessionInfo;

/// Not part of the public API: the entry points of the fuzz targets in `fuzz/`, which
/// build with `--cfg fuzzing` (cargo-fuzz sets it). Absent from every other build.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::record::fuzz_decode_record as decode_record;
}
