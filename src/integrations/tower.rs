//! A [tower-sessions] 0.15 store: sessions for axum (and any tower service) that survive
//! restarts, with sessile's expiry and logout guarantees.
//!
//! [tower-sessions]: https://docs.rs/tower-sessions/0.15
//!
//! # Usage
//!
//! ```no_run
//! use tower_sessions::{Expiry, SessionManagerLayer, cookie::time::Duration};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let store = sessile::tower::TowerStore::new(sessile::Store::open("./sessile-data")?);
//! let layer = SessionManagerLayer::new(store.clone())
//!     .with_expiry(Expiry::OnInactivity(Duration::minutes(30)));
//! let app: axum::Router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hello" }))
//!     .layer(layer);
//! // ... serve `app`; on shutdown:
//! store.flush().await?;
//! # Ok(()) }
//! ```
//!
//! In a handler, log a user in with `session.cycle_id()` followed by
//! `session.insert(USER_KEY, name)`, and log out with `session.flush()` (not `clear()`,
//! which keeps an empty record alive until it expires). `examples/server.rs` is a whole
//! server.
//!
//! # What the store guarantees
//!
//! - `create` always draws a fresh [`Id`], whatever ID the record arrives with (after
//!   `Session::flush`, tower-sessions calls `create` with the logged-out ID), and never
//!   overwrites a stored record.
//! - `load` never returns an expired session, even before the cleanup thread has run.
//! - `save` of a session that was deleted meanwhile (logged out by a concurrent request,
//!   expired) writes nothing: a logged-out session is never brought back.
//! - The record's `expiry_date` becomes the session's own lifetime: an idle timeout
//!   reaching from the save to `expiry_date`, within the store's ceilings
//!   ([`Config::max_idle_timeout`](crate::Config::max_idle_timeout)). So
//!   `Expiry::OnInactivity(d)` idles out after `d` (renewed by each save), `AtDateTime(t)`
//!   ends at `t`, and `OnSessionEnd` (tower's 2-week record expiry) after 2 weeks without
//!   a save, whatever the store's default idle timeout. tower has no absolute timeout;
//!   sessile keeps one: the store's, or that lifetime if it is longer (within
//!   [`Config::max_absolute_timeout`](crate::Config::max_absolute_timeout)), counted from
//!   the session's creation. A record whose `expiry_date` has passed is
//!   deleted. Note that a `SessionManagerLayer` without `with_expiry` (or with
//!   `OnSessionEnd`) asks for 2 weeks: set `with_expiry(Expiry::OnInactivity(..))` as the
//!   examples do, or lower the store's `max_idle_timeout`, to keep sessions shorter.
//!   tower does not store a `Session::set_expiry` made in a handler: every request starts
//!   from the layer's expiry, so set it again on each request of a "remember me" session
//!   (`examples/server.rs` keeps a flag in the session for that).
//! - With `with_always_save(true)`, a save whose data is unchanged and whose expiry moves
//!   by less than the touch granularity writes nothing, so rolling sessions cost no disk
//!   writes on every request.
//! - Reads served from sessile's cache run in place; every read that may touch the disk,
//!   every write and every flush runs on tokio's blocking pool
//!   ([`spawn_blocking`](tokio::task::spawn_blocking)), never on an async worker.
//! - `delete` is flushed to disk before it returns.
//!
//! # How records are stored
//!
//! The record key is a domain-separated blake3 digest of the 16 bytes of tower's `Id`, so
//! the folder holds no usable cookie value. Each value of `Record::data` is stored as JSON
//! bytes under its key ([`Session::get_bytes`](crate::Session::get_bytes) returns them);
//! such a record is meant to be read through this adapter, not with
//! [`Session::get`](crate::Session::get), which expects bincode. The value under
//! [`USER_KEY`] (a string) becomes the session's user in sessile's per-user index, which
//! [`sessions_of`](TowerStore::sessions_of) and
//! [`destroy_user_except`](TowerStore::destroy_user_except) use.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Value;
use std::time::Duration;

use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, ExpiredDeletion, SessionStore};

use super::engine::{OffExecutorError, Saved, is_encoding, off_executor};
use crate::codec::Data;
use crate::expiry::{self, Lifetime};
use crate::id::{Digest, SessionHandle};
use crate::read::{Cached, Entry};
use crate::state::StoreState;
use crate::store::Store;
use crate::users::SessionInfo;
use crate::write::commit::Contents;

/// The session key whose string value is the logged-in user.
///
/// Saving a session with a string under this key puts it in sessile's per-user index
/// (see [`Store::sessions_of`]); removing the key (or setting it to `null`) takes it out.
///
/// ```
/// # async fn login(session: tower_sessions::Session) -> Result<(), tower_sessions::session::Error> {
/// session.cycle_id().await?; // a fresh ID on every privilege change
/// session.insert(sessile::tower::USER_KEY, "alice").await?;
/// # Ok(()) }
/// ```
pub const USER_KEY: &str = "sessile.user";

/// blake3 key-derivation context for record keys derived from tower-sessions IDs.
const ID_CONTEXT: &str = "sessile 2026-11 tower-sessions id digest v1";

/// A tower-sessions store backed by a sessile [`Store`].
///
/// Cheap to clone; every clone uses the same store. See the [module docs](self) for usage
/// and guarantees.
#[derive(Clone, Debug)]
pub struct TowerStore {
    store: Store,
}

impl TowerStore {
    /// Wraps an open store. Each session's lifetime comes from tower's expiry (see the
    /// [module docs](self)), within the store's ceilings; the store's other settings
    /// (durability, limits, cleanup) apply as they are.
    pub fn new(store: Store) -> TowerStore {
        TowerStore { store }
    }

    /// The sessile store underneath, for statistics, events and maintenance. Its
    /// methods block: call them from [`spawn_blocking`](tokio::task::spawn_blocking) in
    /// async code.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The sessile handle of the session with tower ID `id`: the handle that
    /// [`sessions_of`](Self::sessions_of) lists and events name. It cannot be turned back
    /// into the ID.
    pub fn handle(&self, id: &Id) -> SessionHandle {
        digest(id).handle()
    }

    /// The live sessions of `user` (saved with `user` under [`USER_KEY`]), oldest
    /// first, for a "your devices" page.
    ///
    /// # Errors
    ///
    /// A storage failure, or a failed blocking task.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>, BoxError> {
        let user = user.to_owned();
        Ok(off_executor(&self.store, move |s| s.sessions_of(&user)).await?)
    }

    /// Destroys every live session of `user` except the one with ID `keep` ("log out my
    /// other devices"), or all of them with `None`. Flushed before it returns. Returns
    /// how many sessions were destroyed.
    ///
    /// # Errors
    ///
    /// A storage failure, or a failed blocking task.
    pub async fn destroy_user_except(
        &self,
        user: &str,
        keep: Option<&Id>,
    ) -> Result<usize, BoxError> {
        let user = user.to_owned();
        let keep = keep.map(|id| self.handle(id));
        Ok(off_executor(&self.store, move |s| {
            s.state.destroy_user_except(&user, keep)
        })
        .await?)
    }

    /// Writes everything to disk, off the executor. Call it when the server shuts down.
    ///
    /// # Errors
    ///
    /// A storage failure, or a failed blocking task.
    pub async fn flush(&self) -> Result<(), BoxError> {
        Ok(off_executor(&self.store, Store::flush).await?)
    }
}

/// The error type of the async helpers of [`TowerStore`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn digest(id: &Id) -> Digest {
    Digest(blake3::derive_key(ID_CONTEXT, &id.0.to_le_bytes()))
}

/// The time `ms` after the epoch, or the latest date `time` represents if later.
fn from_ms(ms: u64) -> OffsetDateTime {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or_else(|_| time::PrimitiveDateTime::MAX.assume_utc())
}

/// tower's `expiry_date` as the session's own lifetime: an idle timeout reaching to it
/// from now (see [`StoreState::framework_lifetime`]). `None` if it has passed. Measured
/// on tower's clock, which computed `expiry_date` (`OnInactivity(d)` gives exactly `d`,
/// whatever clock the store runs on).
fn lifetime(state: &StoreState, expiry_date: OffsetDateTime) -> Option<Lifetime> {
    let left = expiry_date - OffsetDateTime::now_utc();
    let ms = u64::try_from(left.whole_milliseconds()).unwrap_or(0);
    (ms > 0).then(|| state.framework_lifetime(Duration::from_millis(ms)))
}

fn backend(e: OffExecutorError) -> session_store::Error {
    if e.is_encoding() {
        session_store::Error::Encode(e.to_string())
    } else {
        session_store::Error::Backend(e.to_string())
    }
}

/// Splits tower's data into sessile's user and values (JSON bytes), with `lifetime`.
fn contents(
    shared: &StoreState,
    record: &Record,
    lifetime: Lifetime,
) -> Result<Contents, session_store::Error> {
    let mut data = Data::new();
    let mut user = None;
    for (key, value) in &record.data {
        if key == USER_KEY {
            user = match value {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                _ => {
                    return Err(session_store::Error::Encode(format!(
                        "the value under {USER_KEY:?} must be a string or null"
                    )));
                }
            };
            continue;
        }
        shared
            .limits()
            .check_key(key)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let bytes =
            serde_json::to_vec(value).map_err(|e| session_store::Error::Encode(e.to_string()))?;
        data.insert(key.clone(), serde_bytes::ByteBuf::from(bytes));
    }
    shared.contents(user, data, lifetime).map_err(|e| {
        if is_encoding(&e) {
            session_store::Error::Encode(e.to_string())
        } else {
            session_store::Error::Backend(e.to_string())
        }
    })
}

/// Builds tower's record from a live sessile record.
fn record(shared: &StoreState, id: Id, entry: &Entry) -> Record {
    let mut data = HashMap::with_capacity(entry.data.len() + 1);
    for (key, bytes) in entry.data.iter() {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(value) => {
                data.insert(key.clone(), value);
            }
            Err(e) => tracing::warn!(
                handle = %digest(&id).handle(),
                key = %key,
                error = %e,
                "skipped a session value that is not JSON (was it written without the tower adapter?)"
            ),
        }
    }
    if let Some(user) = &entry.user {
        data.insert(USER_KEY.to_owned(), Value::String(user.clone()));
    }
    Record {
        id,
        data,
        expiry_date: from_ms(expiry::live_until(&shared.config, &entry.header)),
    }
}

#[async_trait]
impl SessionStore for TowerStore {
    /// Stores `record` under a fresh ID, whatever ID it arrives with: after
    /// `Session::flush` (logout) tower-sessions calls `create` with the old ID, which a
    /// thief may hold, so it is never handed out again. A record whose expiry has already
    /// passed gets a fresh ID and is not stored.
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let state = &self.store.state;
        let Some(lifetime) = lifetime(state, record.expiry_date) else {
            record.id = Id::default();
            return Ok(());
        };
        let contents = contents(state, record, lifetime)?;
        let id = off_executor(&self.store, move |s| {
            let ids = || {
                let id = Id::default();
                Ok((id, digest(&id)))
            };
            s.state.insert_new(ids, &contents)
        })
        .await
        .map_err(backend)?;
        record.id = id;
        Ok(())
    }

    /// Writes `record` over the live session with its ID. A session that was deleted or
    /// has expired meanwhile stays gone; a record whose expiry has passed is deleted.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let key = digest(&record.id);
        let Some(lifetime) = lifetime(&self.store.state, record.expiry_date) else {
            return self.delete(&record.id).await;
        };
        let contents = contents(&self.store.state, record, lifetime)?;
        let saved = off_executor(&self.store, move |s| s.state.save_contents(&key, contents))
            .await
            .map_err(backend)?;
        if saved == Saved::Gone {
            tracing::debug!(handle = %key.handle(), "not saving a session that is gone");
        }
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let key = digest(id);
        let shared = &self.store.state;
        let entry = match shared.live_cached(&key) {
            Cached::Live(entry) => Some(entry),
            Cached::Dead => None,
            Cached::Unknown => off_executor(&self.store, move |s| s.state.live_entry(&key))
                .await
                .map_err(backend)?,
        };
        Ok(entry.map(|e| record(shared, *id, &e)))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let key = digest(id);
        off_executor(&self.store, move |s| s.state.destroy_durably(&key))
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl ExpiredDeletion for TowerStore {
    /// Deletes every expired session now (sessile's cleanup thread also does this on its
    /// own interval, so calling this is optional).
    async fn delete_expired(&self) -> session_store::Result<()> {
        off_executor(&self.store, Store::purge_expired)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_to_distinct_keys_apart_from_token_digests() {
        let a = Id(1);
        let b = Id(2);
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a), digest(&Id(1)));
        // Not the plain hash of the bytes: a different domain from any other digest.
        assert_ne!(digest(&a).0, *blake3::hash(&1i128.to_le_bytes()).as_bytes());
    }

    #[test]
    fn milliseconds_become_dates_and_saturate() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid");
        assert_eq!(from_ms(1_700_000_000_000), at);
        // Past year 9999: the latest date, never 1970.
        assert_eq!(from_ms(u64::MAX), time::PrimitiveDateTime::MAX.assume_utc());
    }
}
