//! Adapters for web frameworks' session layers, each behind its own feature.
//!
//! - [`tower`] (features `tower` and `tower-014`): a `tower_sessions::SessionStore` for
//!   axum, axum-login and other tower services, tower-sessions 0.15 and 0.14.
//! - [`actix`] (feature `actix`): an `actix_session::storage::SessionStore` for
//!   actix-web, actix-session 0.11.
//!
//! Both sit on the same internal write path (the engine's `framework` module): records
//! written with a caller-chosen expiry, create-if-absent, saves that write only what the
//! request changed (`base`) and never bring back a destroyed session, and all disk work
//! moved off the async executor.

#[cfg(feature = "actix")]
pub mod actix;
mod base;
#[cfg(any(feature = "tower", feature = "tower-014"))]
mod hot;
mod support;
#[cfg(any(feature = "tower", feature = "tower-014"))]
pub mod tower;
