//! An embedded, persistent session store for Rust servers: link it in, point it at a
//! folder, and get web sessions that survive restarts, expire on their own (an idle and an
//! absolute timeout), and are looked up in well under a microsecond. When an app outgrows
//! one server, the same [`Store`] runs on Redis or Valkey ([`Config::redis`], feature
//! `redis`) and keeps every session.
//!
//! # Add it
//!
//! ```toml
//! [dependencies]
//! sessile = "0.1"                                      # the store alone
//! sessile = { version = "0.1", features = ["tower"] }  # with tower-sessions 0.15 (axum)
//! ```
//!
//! | feature | what it adds |
//! |---|---|
//! | (none) | [`Store`], [`Config`], [`Session`]: the store in a folder |
//! | `tower` | `tower::TowerStore` for tower-sessions 0.15 (axum 0.8) |
//! | `tower-014` | the same `TowerStore` for tower-sessions 0.14 (axum-login 0.18) |
//! | `actix` | `actix::ActixStore` for actix-session 0.11 |
//! | `redis` | [`Config::redis`]: the same store on Redis or Valkey |
//! | `cli` | the `sessile` operator tool |
//!
//! # A first example
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("sessions");
//! let store = sessile::Store::open(&path)?;
//! let mut session = store.create()?;           // a fresh 256-bit token, stored now
//! session.insert("cart", &vec![1u32, 2])?;     // any serde value
//! store.save(&session)?;
//! let cookie = session.id().to_string();       // what goes in the cookie
//!
//! drop(store);                                 // a restart...
//! let store = sessile::Store::open(&path)?;
//! let session = store.load(&cookie.parse()?)?.expect("survived the restart");
//! assert_eq!(session.get::<Vec<u32>>("cart")?, Some(vec![1, 2]));
//! # Ok(()) }
//! ```
//!
//! # Where to go next
//!
//! - [`Store`]: create, load, save, touch, update, destroy, regenerate; a user's devices
//!   and "log out everywhere" ([`Store::sessions_of`], [`Store::destroy_user`]); events
//!   ([`Store::subscribe`]).
//! - [`Config`]: timeouts, per-session lifetimes ([`Lifetime`]), durability, the per-user
//!   cap, the purge thread, Redis.
//! - The framework adapters, each behind its feature: `tower` (axum, axum-login) and
//!   `actix` (actix-web), with a complete server in `examples/` of the repository.
//! - The repository's README is the guide (guarantees, performance, scaling out),
//!   OPERATIONS.md the manual of the `sessile` CLI and of backups, and ARCHITECTURE.md
//!   explains how it works inside.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

// The public API first, one declaration per group so that rustfmt keeps this order:
// rustdoc lists `Store`'s methods in it (the core, a user's sessions, then dumps and
// backups).
mod store;

mod users;

mod transfer;

// The layers below it.
mod backend;
mod changes;
mod clock;
mod config;
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

pub use crate::clock::{Clock, ManualClock};
pub use crate::config::{
    Config, DEFAULT_ABSOLUTE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_ABSOLUTE_TIMEOUT,
    DEFAULT_MAX_IDLE_TIMEOUT, Durability, MAX_TIMEOUT, MAX_USER_LEN,
};
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
pub use crate::transfer::SessionDump;
pub use crate::transfer::check_dump;
pub use crate::users::SessionInfo;

/// Not part of the public API: the entry points of the fuzz targets in `fuzz/`, which
/// build with `--cfg fuzzing` (cargo-fuzz sets it). Absent from every other build.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::record::fuzz_decode_record as decode_record;
}

/// The README's examples, compiled and run as doctests (the README is the guide; the crate
/// page above is its short form).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The examples of the operator's manual, compiled and run as doctests too.
#[cfg(doctest)]
#[doc = include_str!("../OPERATIONS.md")]
struct OperationsDoctests;
