#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod cleanup;
mod clock;
mod codec;
mod config;
mod dump;
mod error;
mod events;
mod expiry;
mod id;
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
pub use crate::session::Session;
pub use crate::stats::Stats;
pub use crate::store::Store;
pub use crate::users::SessionInfo;
pub use crate::verify::VerifyReport;
