//! An [actix-session] 0.11 store: sessions for actix-web that survive restarts, with
//! sessile's expiry and logout guarantees.
//!
//! [actix-session]: https://docs.rs/actix-session/0.11
//!
//! # Usage
//!
//! ```no_run
//! use actix_session::SessionMiddleware;
//! use actix_web::{App, HttpServer, cookie::Key};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let store = sessile::actix::ActixStore::new(sessile::Store::open("./sessile-data")?);
//! let key = Key::generate(); // keep it across restarts, or every cookie dies with the server
//! let for_app = store.clone();
//! HttpServer::new(move || {
//!     App::new().wrap(SessionMiddleware::new(for_app.clone(), key.clone()))
//! })
//! .bind("127.0.0.1:3000")?
//! .run()
//! .await?;
//! store.flush().await?; // after the server stopped
//! # Ok(()) }
//! ```
//!
//! Log a user in with `session.renew()` and `session.insert(USER_KEY, name)`, and log out
//! with `session.purge()`. `examples/actix_server.rs` is a whole server.
//!
//! # What the store does for each call
//!
//! - `save` creates a record under a fresh 256-bit sessile token, which becomes the
//!   session key in the cookie.
//! - `load` never returns an expired session, even before the purge thread has run.
//! - `update` keeps the key and writes the new state. If the session was destroyed or has
//!   expired meanwhile (for example logged out by a concurrent request), it writes
//!   nothing and returns the old key, which no longer loads: the next request starts a
//!   fresh session. (actix-session's Redis store instead saves the state under a new
//!   key, which would bring a logged-out session back.)
//! - `update_ttl` is a touch: it writes nothing unless the expiry moves by more than the
//!   touch granularity.
//! - `delete` is flushed to disk before it returns.
//! - The TTL actix passes (`session_ttl`) becomes the session's own idle timeout, within
//!   the store's ceilings ([`Config::max_idle_timeout`](crate::Config::max_idle_timeout));
//!   a TTL longer than the store's absolute timeout also becomes the session's absolute
//!   timeout (from creation). `Duration::MAX` ("never") is cut to the ceilings; a TTL of
//!   zero or less deletes the session.
//! - Reads and writes run in place on the actix worker (microseconds; a hand-off to a
//!   thread pool costs more); work that flushes (`delete`, revocations, every write under
//!   `Durability::EveryWrite`) runs on tokio's blocking pool.
//!
//! # How records are stored
//!
//! actix-session's values are JSON strings; each is stored as its UTF-8 bytes. The value
//! under [`USER_KEY`] (a JSON string) becomes the session's user in sessile's per-user
//! index. On load, the session's handle is put under [`HANDLE_KEY`], since actix-session
//! does not show handlers the session key, and what the request loaded under
//! [`BASE_KEY`]; neither is ever stored.
//!
//! # Overlapping requests
//!
//! `update` writes only what the request changed: the values that differ from what it
//! loaded (recognised by the fingerprints under [`BASE_KEY`]), the keys it removed, and
//! the user if it changed, each onto the version stored at that moment. Two overlapping
//! requests of one session that change different keys keep both changes, on one server
//! or on several sharing Redis; the same key changed by both ends with the later save's
//! value; `session.clear()` (which also drops [`BASE_KEY`]) writes the whole state. A
//! request that sets a key back to the value it loaded counts as leaving it alone. The
//! fingerprints are keyed with a secret the store keeps.
//!
//! `renew` deletes the old key and saves the state under a new one when the response
//! goes out. If `destroy_user`, `destroy_by_handle` or the per-user cap ended the session
//! meanwhile, that save stores nothing (the new key loads nothing): a revoked login does
//! not come back.

use std::collections::HashMap;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use time::Duration;

use super::base::Base;
use super::support::{Work, helpers, run};
use crate::changes::Fingerprints;
use crate::engine::Engine;
use crate::engine::commit::Contents;
use crate::engine::framework::Rotated;
use crate::expiry::Lifetime;
use crate::id::{SessionHandle, SessionId};
use crate::record::StoredRecord;
use crate::record::values::ValueMap;
use crate::store::Store;
use crate::users::SessionInfo;

/// The session key whose value (a string) is the logged-in user.
///
/// ```
/// # fn login(session: actix_session::Session) -> Result<(), actix_session::SessionInsertError> {
/// session.renew(); // a fresh key on every privilege change
/// session.insert(sessile::actix::USER_KEY, "alice")?;
/// # Ok(()) }
/// ```
pub use super::support::USER_KEY;

/// The session key under which a loaded session carries its own [`SessionHandle`] as a
/// string, for "this device" in a device list and for
/// [`ActixStore::destroy_user`]. Read-only: it is dropped when the session is
/// saved, and a new session gets it from its second request on.
///
/// ```
/// # fn current(session: &actix_session::Session) -> Result<(), Box<dyn std::error::Error>> {
/// let handle: Option<sessile::SessionHandle> = session
///     .get::<String>(sessile::actix::HANDLE_KEY)?
///     .and_then(|h| h.parse().ok());
/// # Ok(()) }
/// ```
pub const HANDLE_KEY: &str = "sessile.handle";

/// An actix-session store backed by a sessile [`Store`].
///
/// Cheap to clone; every clone uses the same store. See the [module docs](self) for usage
/// and guarantees.
#[derive(Clone, Debug)]
pub struct ActixStore {
    store: Store,
}

pub use super::support::{BASE_KEY, BoxError};

impl ActixStore {
    /// Wraps an open store. Each session's lifetime comes from actix's TTL (see the
    /// [module docs](self)), within the store's ceilings; the store's other settings
    /// (durability, limits, purge) apply as they are. actix-session's default
    /// (`BrowserSession` with a 1-day state TTL) gives sessions of 1 day: set
    /// `session_lifecycle` to choose another.
    pub fn new(store: Store) -> ActixStore {
        ActixStore { store }
    }

    /// The sessile store underneath, for statistics, events and maintenance. Its
    /// methods block: call them from `actix_web::web::block` in async code.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The live sessions of `user` (saved with `user` under [`USER_KEY`]), oldest
    /// first, for a "your devices" page.
    ///
    /// # Errors
    ///
    /// A storage failure, or a failed blocking task.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>, BoxError> {
        helpers::sessions_of(&self.store, user).await
    }

    /// Destroys every live session of `user` except the one with handle `except` (read it
    /// from [`HANDLE_KEY`]), or all of them with `None`. Flushed before it returns.
    /// Returns how many sessions were destroyed.
    ///
    /// # Errors
    ///
    /// A storage failure, or a failed blocking task.
    pub async fn destroy_user(
        &self,
        user: &str,
        except: Option<SessionHandle>,
    ) -> Result<usize, BoxError> {
        helpers::destroy_user(&self.store, user, except).await
    }

    /// Writes everything to disk, off the executor. Call it when the server shuts down.
    ///
    /// # Errors
    ///
    /// A storage failure, or a failed blocking task.
    pub async fn flush(&self) -> Result<(), BoxError> {
        helpers::flush(&self.store).await
    }

    /// actix's TTL as the session's own lifetime (see
    /// [`Engine::framework_lifetime`]); `None` if it is zero or negative. A TTL too
    /// long to count in milliseconds ("never expire") saturates, to be cut to the store's
    /// ceilings.
    fn lifetime(&self, ttl: &Duration) -> Option<Lifetime> {
        let ms = ttl.whole_milliseconds();
        (ms > 0).then(|| {
            let ms = u64::try_from(ms).unwrap_or(u64::MAX);
            self.store
                .engine
                .framework_lifetime(std::time::Duration::from_millis(ms))
        })
    }
}

/// Splits actix's state into sessile's user and values, with what the request changed
/// since it loaded them (see [`BASE_KEY`]) and the session a create of them rotates, if
/// it does.
fn contents(
    shared: &Engine,
    mut state: HashMap<String, String>,
    lifetime: Lifetime,
    fingerprints: &Fingerprints,
) -> Result<(Contents, Option<Rotated>), anyhow::Error> {
    state.remove(HANDLE_KEY);
    // What this request loaded: never stored.
    let base = state
        .remove(BASE_KEY)
        .and_then(|json| serde_json::from_str::<String>(&json).ok())
        .and_then(|text| Base::parse(&text));
    let user = match state.remove(USER_KEY) {
        Some(json) => serde_json::from_str::<Option<String>>(&json).map_err(|e| {
            anyhow::anyhow!("the value under {USER_KEY:?} must be a string or null: {e}")
        })?,
        None => None,
    };
    let mut data = ValueMap::new();
    for (key, value) in state {
        shared.limits().check_key(&key)?;
        data.insert(key, serde_bytes::ByteBuf::from(value.into_bytes()));
    }
    let recovered = base.map(|base| base.recover(user.as_deref(), fingerprints));
    let contents = shared.contents(user, data, lifetime)?;
    Ok(match recovered {
        Some((Some(changes), rotated)) => (contents.with_changes(changes), rotated),
        Some((None, rotated)) => (contents, rotated),
        None => (contents, None),
    })
}

/// Builds actix's state from a live sessile record.
fn state(
    entry: &StoredRecord,
    handle: SessionHandle,
    fingerprints: &Fingerprints,
) -> Result<HashMap<String, String>, LoadError> {
    let mut state = HashMap::with_capacity(entry.values.len() + 3);
    for (key, bytes) in entry.values.iter() {
        match std::str::from_utf8(bytes) {
            Ok(value) => {
                state.insert(key.to_owned(), value.to_owned());
            }
            Err(_) => tracing::warn!(
                handle = %handle,
                key = %key,
                "skipped a session value that is not text (was it written without the actix adapter?)"
            ),
        }
    }
    let json = |s: &str| serde_json::to_string(s).map_err(|e| LoadError::Other(e.into()));
    if let Some(user) = &entry.user {
        state.insert(USER_KEY.to_owned(), json(user)?);
    }
    state.insert(HANDLE_KEY.to_owned(), json(&handle.to_string())?);
    // What the request loaded: kept with the record in the read cache from its second
    // load on (fingerprinting every value on every hot load would cost more than the
    // load).
    let base = || BaseText(Base::text_of(entry, &handle, fingerprints));
    let text = match entry.memo.get_or(base) {
        Some(memo) => json(&memo.0)?,
        None => json(&base().0)?,
    };
    state.insert(BASE_KEY.to_owned(), text);
    Ok(state)
}

/// The text of a record's `sessile.base` entry, memoised with the record.
struct BaseText(String);

impl SessionStore for ActixStore {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        let Ok(id) = session_key.as_ref().parse::<SessionId>() else {
            return Ok(None);
        };
        let found = helpers::load_session(&self.store, &id)
            .await
            .map_err(|e| LoadError::Other(e.into()))?;
        let Some((digest, entry)) = found else {
            return Ok(None);
        };
        let fingerprints = self
            .store
            .engine
            .fingerprints()
            .map_err(|e| LoadError::Other(e.into()))?;
        state(&entry, digest.handle(), &fingerprints).map(Some)
    }

    async fn save(
        &self,
        session_state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, SaveError> {
        let Some(lifetime) = self.lifetime(ttl) else {
            // Born expired: a key that loads nothing.
            let id = SessionId::generate().map_err(|e| SaveError::Other(e.into()))?;
            return SessionKey::try_from(id.to_string()).map_err(|e| SaveError::Other(e.into()));
        };
        // A renewed session of the same user: a revocation may have ended it meanwhile.
        let fingerprints = self
            .store
            .engine
            .fingerprints()
            .map_err(|e| SaveError::Other(e.into()))?;
        let (contents, rotated) =
            contents(&self.store.engine, session_state, lifetime, &fingerprints)
                .map_err(SaveError::Serialization)?;
        // A rotation's check may delete what it just stored, which flushes: never on
        // the executor (nor given up there half done).
        let work = match rotated {
            Some(_) => Work::Long,
            None => Work::of_write(&self.store, None, &contents),
        };
        let id = run(&self.store, work, move |s| {
            let tokens = || {
                let id = SessionId::generate()?;
                let digest = id.digest();
                Ok((id, digest))
            };
            match &rotated {
                None => s.engine.insert_new(tokens, &contents),
                Some(b) => {
                    let stored = s.engine.insert_rotated(tokens, &contents, b)?;
                    // Revoked: a key that loads nothing, as for a session born expired.
                    stored.map_or_else(SessionId::generate, Ok)
                }
            }
        })
        .await
        .map_err(|e| {
            if e.is_encoding() {
                SaveError::Serialization(e.into())
            } else {
                SaveError::Other(e.into())
            }
        })?;
        SessionKey::try_from(id.to_string()).map_err(|e| SaveError::Other(e.into()))
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let Ok(id) = session_key.as_ref().parse::<SessionId>() else {
            // Not one of ours, so nothing to update; it will not load either.
            return Ok(session_key);
        };
        let digest = self.store.engine.digest_of(&id);
        let Some(lifetime) = self.lifetime(ttl) else {
            helpers::destroy(&self.store, digest)
                .await
                .map_err(|e| UpdateError::Other(e.into()))?;
            return Ok(session_key);
        };
        let fingerprints = self
            .store
            .engine
            .fingerprints()
            .map_err(|e| UpdateError::Other(e.into()))?;
        let (contents, _) = contents(&self.store.engine, session_state, lifetime, &fingerprints)
            .map_err(UpdateError::Serialization)?;
        let work = Work::of_write(&self.store, Some(&digest), &contents);
        let saved = run(&self.store, work, move |s| {
            s.engine.save_contents(&digest, &contents)
        })
        .await
        .map_err(|e| {
            if e.is_encoding() {
                UpdateError::Serialization(e.into())
            } else {
                UpdateError::Other(e.into())
            }
        })?;
        if saved.ended() {
            tracing::debug!(handle = %digest.handle(), "not updating a session that is gone");
        }
        Ok(session_key)
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Duration) -> anyhow::Result<()> {
        let Ok(id) = session_key.as_ref().parse::<SessionId>() else {
            return Ok(());
        };
        let digest = self.store.engine.digest_of(&id);
        let Some(lifetime) = self.lifetime(ttl) else {
            helpers::destroy(&self.store, digest).await?;
            return Ok(());
        };
        run(&self.store, Work::Write, move |s| {
            s.engine.touch_with(&digest, lifetime)
        })
        .await?;
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        let Ok(id) = session_key.as_ref().parse::<SessionId>() else {
            return Ok(());
        };
        let digest = self.store.engine.digest_of(&id);
        self.store.engine.forget_token(&id);
        helpers::destroy(&self.store, digest).await?;
        // Again: a load racing the destroy may have remembered the token meanwhile.
        self.store.engine.forget_token(&id);
        Ok(())
    }
}
