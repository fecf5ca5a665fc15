//! A [tower-sessions] store: sessions for axum (and any tower service, axum-login
//! included) that survive restarts, with sessile's expiry and logout guarantees.
//!
//! [`TowerStore`] implements `SessionStore` and `ExpiredDeletion` of tower-sessions
//! **0.15** (feature `tower`) and of **0.14** (feature `tower-014`, the version
//! [axum-login] 0.18 uses); enable either or both. The two versions' traits have the same
//! shape and one implementation serves both.
//!
//! [tower-sessions]: https://docs.rs/tower-sessions
//! [axum-login]: https://docs.rs/axum-login/0.18
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
//! # axum-login
//!
//! axum-login keeps `{"user_id": .., "auth_hash": ..}` under the session key
//! [`AXUM_LOGIN_KEY`]. The store puts the session in sessile's per-user index under that
//! user id as text (a JSON string's contents, a number's decimal digits), so
//! [`sessions_of`](TowerStore::sessions_of) and
//! [`destroy_user`](TowerStore::destroy_user) give an axum-login app "your
//! devices" and "log out everywhere" with no code of its own. The value stays in the
//! session for axum-login to read. A session with a string under [`USER_KEY`] is indexed
//! by that instead; [`TowerStore::index_user_from`] names another key to read a user id
//! from. `examples/axum_login.rs` is a whole server.
//!
//! # What the store guarantees
//!
//! - `create` always draws a fresh `Id`, whatever ID the record arrives with (after
//!   `Session::flush`, tower-sessions calls `create` with the logged-out ID), and never
//!   overwrites a stored record.
//! - `load` never returns an expired session, even before the purge thread has run.
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
//! - Reads and writes run in place on the calling task: a cache hit takes well under a
//!   microsecond, a sled read or write of cached pages microseconds, while a hand-off to
//!   tokio's blocking pool costs tens (BENCHMARKS.md has the executor hold times). In
//!   place, a write never waits for a session's or a user's lock: if one is busy it
//!   moves to the blocking pool. Work that flushes (`delete`, revocations, every write
//!   under `Durability::EveryWrite`, writes that may apply the per-user cap) or scans
//!   (`delete_expired`) runs on the blocking pool
//!   ([`spawn_blocking`](tokio::task::spawn_blocking)).
//! - On a single Redis server, `load` and `save` are awaited on one multiplexed
//!   connection, never on the blocking pool: a load is one `GET`; a save plans its change
//!   onto the version this store last read or wrote for the session and writes it by
//!   compare-and-swap, one round trip while that guess holds. Anything else (another
//!   writer got there first, an `update` lease, the per-user cap, an ended lifetime) takes
//!   the locked path on the blocking pool, which reads the stored version and merges onto
//!   it. Through Sentinel or Cluster every call takes the blocking pool.
//! - `delete` is flushed to disk before it returns.
//!
//! # How records are stored
//!
//! The record key is a domain-separated blake3 digest of the 16 bytes of tower's `Id`, so
//! the folder holds no usable cookie value. Each value of `Record::data` is stored as JSON
//! bytes under its key ([`Session::get_bytes`](crate::Session::get_bytes) returns them);
//! such a record is meant to be read through this adapter, not with
//! [`Session::get`](crate::Session::get), which expects bincode. The value under
//! [`USER_KEY`] (a string) is the session's user and is kept as a value too; `null`
//! keeps the session out of the index even when it carries axum-login data.
//!
//! # Overlapping requests and ID rotation
//!
//! tower hands the store the whole record at save. At load the store adds one entry,
//! [`BASE_KEY`], naming the version loaded and fingerprinting each value; it is never
//! stored. A save writes only what the request changed (the values that differ from what
//! it loaded, the keys it removed, the user if it changed) onto the version stored then,
//! so two overlapping requests of one session that change different keys keep both, on
//! one server or several sharing Redis; the same key changed by both ends with the later
//! save's value. A record without the entry (`clear()` drops it) is written whole. A
//! request that sets a key back to the value it loaded counts as leaving it alone (so
//! another request's overlapping change of it stays). The fingerprints are keyed with a
//! secret the store keeps: the entry reveals nothing about the values.
//!
//! tower-sessions' `cycle_id` (which axum-login's `login` calls) deletes the old record at
//! once and creates the new one when the request saves. A "log out everywhere"
//! (`destroy_user`) landing between the two leaves a mark, and the create of a session
//! that was already the same user's, last written before the mark, stores nothing: the
//! revoked login does not come back (the client gets an ID that loads nothing). A revoke
//! of the device ([`Store::destroy_by_handle`](crate::Store::destroy_by_handle)) and the
//! per-user cap mark each session they end, until its expiry (and a minute), with the
//! same effect, also through a second request that rotates it from an older copy. A
//! login from an anonymous session, or any session written after the revoke, is
//! unaffected. Across servers the mark and the session's last write are compared on each
//! server's clock: keep them in sync. A logout (`flush`, which calls `delete`) leaves no
//! mark: to the store it is the same call as `cycle_id`'s own delete.
//!
//! # User ids
//!
//! A user id given as the string `"1"` and as the number `1` is the same user.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use super::base::Base;
use super::hot::HotRecords;
pub use super::support::{BASE_KEY, BoxError, USER_KEY};
use super::support::{OffExecutorError, Work, helpers, off_executor, run};
use crate::changes::Fingerprints;
use crate::engine::Engine;
use crate::engine::commit::Contents;
use crate::engine::framework::Rotated;
use crate::engine::memo::DigestMemo;
use crate::expiry::Lifetime;
use crate::id::{Digest, Domain, SessionHandle, Words};
use crate::record::StoredRecord;
use crate::record::values::ValueMap;
use crate::store::Store;
use crate::users::SessionInfo;

/// The session key under which axum-login keeps its data (`{"user_id": .., ..}`), read
/// by default for the per-user index.
pub const AXUM_LOGIN_KEY: &str = "axum-login.data";

/// blake3 key-derivation context for record keys derived from tower-sessions IDs.
const ID_CONTEXT: &str = "sessile 2026-11 tower-sessions id digest v1";
static TOWER_IDS: Domain = Domain::new(ID_CONTEXT);

/// A tower-sessions store backed by a sessile [`Store`].
///
/// Cheap to clone; every clone uses the same store. See the [module docs](self) for usage
/// and guarantees.
#[derive(Clone, Debug)]
pub struct TowerStore {
    store: Store,
    user_from: &'static str,
    /// tower ID -> record key of sessions found live, so a hot load skips blake3.
    ids: Arc<DigestMemo<2>>,
    /// tower ID -> the record as tower wants it, for hot loads (see `HotRecords`).
    hot: Arc<HotRecords<HotRecord>>,
}

/// A tower-sessions session ID of any supported version (0.14 or 0.15).
pub trait TowerId: sealed::Sealed {
    /// The ID's 128 bits.
    #[doc(hidden)]
    fn bits(&self) -> i128;
}

mod sealed {
    pub trait Sealed {}
}

impl TowerStore {
    /// Wraps an open store. Each session's lifetime comes from tower's expiry (see the
    /// [module docs](self)), within the store's ceilings; the store's other settings
    /// (durability, limits, purge) apply as they are.
    pub fn new(store: Store) -> TowerStore {
        let ids = DigestMemo::new(store.engine.config().cache_entries.saturating_mul(2));
        let hot = HotRecords::for_engine(&store.engine);
        TowerStore {
            store,
            user_from: AXUM_LOGIN_KEY,
            ids: Arc::new(ids),
            hot: Arc::new(hot),
        }
    }

    /// Indexes sessions by the user id found under `key` (a string, a number, or an
    /// object with a `user_id` field holding one) when they have no [`USER_KEY`]. The
    /// default is [`AXUM_LOGIN_KEY`]. The value stays in the session.
    #[must_use]
    pub fn index_user_from(mut self, key: &'static str) -> TowerStore {
        self.user_from = key;
        // Records converted for the other key are not this store's to hand out.
        self.hot = Arc::new(HotRecords::for_engine(&self.store.engine));
        self
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
    pub fn handle(&self, id: &impl TowerId) -> SessionHandle {
        digest(id.bits()).handle()
    }

    /// The live sessions of `user`, oldest first, for a "your devices" page.
    ///
    /// # Errors
    ///
    /// A storage failure, or a failed blocking task.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>, BoxError> {
        helpers::sessions_of(&self.store, user).await
    }

    /// Destroys every live session of `user` except the one with handle `except` ("log out
    /// my other devices": `session.id().map(|id| store.handle(&id))`), or all of them with
    /// `None`. Flushed before it returns. Returns how many sessions were destroyed.
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

    /// Splits tower's data into sessile's user and values (JSON bytes), with `lifetime`,
    /// with what the request changed since it loaded them (see [`BASE_KEY`]), and the
    /// session a create of them rotates, if it does.
    fn contents(
        &self,
        data: &HashMap<String, Value>,
        lifetime: Lifetime,
    ) -> Result<(Contents, Option<Rotated>), Refusal> {
        let state = &self.store.engine;
        let mut values = ValueMap::new();
        let mut user = None;
        let mut base = None;
        for (key, value) in data {
            if key == BASE_KEY {
                // What this request loaded: never stored.
                base = value.as_str().and_then(Base::parse);
                continue;
            }
            if key == USER_KEY {
                // The user, and kept as a value too, so it loads back as it was saved
                // (also `null`, which keeps the session out of the index).
                user = match value {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    _ => {
                        return Err(Refusal::Encode(format!(
                            "the value under {USER_KEY:?} must be a string or null"
                        )));
                    }
                };
            }
            state
                .limits()
                .check_key(key)
                .map_err(|e| Refusal::Encode(e.to_string()))?;
            let bytes = serde_json::to_vec(value).map_err(|e| Refusal::Encode(e.to_string()))?;
            values.insert(key.clone(), serde_bytes::ByteBuf::from(bytes));
        }
        if user.is_none() && !data.contains_key(USER_KEY) {
            user = data.get(self.user_from).and_then(user_id);
        }
        let recovered = match base {
            Some(base) => {
                let fingerprints = state.fingerprints().map_err(|e| Refusal::of(&e.into()))?;
                Some(base.recover(user.as_deref(), &fingerprints))
            }
            None => None,
        };
        let contents = state
            .contents(user, values, lifetime)
            .map_err(|e| Refusal::of(&e.into()))?;
        Ok(match recovered {
            Some((Some(changes), rotated)) => (contents.with_changes(changes), rotated),
            Some((None, rotated)) => (contents, rotated),
            None => (contents, None),
        })
    }

    /// tower's data and expiry date of the session `id` if the hot table has it current
    /// (see `HotRecords`): a lookup and a clone, as with an in-memory store.
    fn hot_parts(&self, id: i128) -> Option<(HashMap<String, Value>, OffsetDateTime)> {
        let engine = &self.store.engine;
        self.hot.read(&id.to_le_bytes(), engine, |hot, _| {
            (hot.parsed.data.clone(), hot.expiry)
        })
    }

    /// tower's data and expiry date of a live sessile record, found under `key`, read
    /// after its `stamp`. The JSON values are parsed on each of the first two loads of a
    /// version of the record and then kept with it in the read cache (see
    /// `Memo::get_or`), and in the hot table while the stamp holds, so a hot load costs a
    /// clone, as with an in-memory store. Two `TowerStore`s with different
    /// [`index_user_from`] keys on one store do not share the memo: the one that did not
    /// make it parses every time.
    ///
    /// [`index_user_from`]: TowerStore::index_user_from
    fn parts(
        &self,
        id: i128,
        (key, stamp, entry): (Digest, Option<u64>, &StoredRecord),
    ) -> Result<(HashMap<String, Value>, OffsetDateTime), Refusal> {
        let live_until = self.store.engine.live_until(&entry.header);
        let expiry = from_ms(live_until);
        let fingerprints = self
            .store
            .engine
            .fingerprints()
            .map_err(|e| Refusal::of(&e.into()))?;
        if entry.bytes.len() > MEMO_MAX_RECORD {
            return Ok((self.parse(id, entry, &fingerprints), expiry));
        }
        let memo = entry.memo.get_or(|| {
            Arc::new(ParsedRecord {
                user_from: self.user_from,
                data: self.parse(id, entry, &fingerprints),
                served: AtomicBool::new(false),
            })
        });
        Ok(match memo.filter(|m| m.user_from == self.user_from) {
            Some(memo) => {
                // Into the hot table on the record's third ask (its memo served before),
                // if small: a uniform load does not fill it with records read once or
                // twice.
                let again = memo.served.load(Ordering::Relaxed);
                match stamp {
                    Some(stamp) if again && entry.bytes.len() <= HOT_MAX_RECORD => {
                        let hot = HotRecord {
                            parsed: Arc::clone(memo),
                            expiry,
                        };
                        let engine = &self.store.engine;
                        let id = id.to_le_bytes();
                        self.hot.remember(&id, key, stamp, live_until, hot, engine);
                    }
                    _ if !again => memo.served.store(true, Ordering::Relaxed),
                    _ => {}
                }
                (memo.data.clone(), expiry)
            }
            None => (self.parse(id, entry, &fingerprints), expiry),
        })
    }

    /// tower's data of a sessile record: each value parsed from JSON, and the base entry
    /// (every stored value fingerprinted in the same walk, JSON or not).
    fn parse(
        &self,
        id: i128,
        entry: &StoredRecord,
        fingerprints: &Fingerprints,
    ) -> HashMap<String, Value> {
        let mut data = HashMap::with_capacity(entry.values.len() + 2);
        let mut prints = Vec::with_capacity(entry.values.len() + 1);
        for (key, bytes) in entry.values.iter() {
            prints.push(fingerprints.key_and_value(key, bytes));
            match serde_json::from_slice::<Value>(bytes) {
                Ok(value) => {
                    data.insert(key.to_owned(), value);
                }
                Err(e) => tracing::warn!(
                    handle = %digest(id).handle(),
                    key = %key,
                    error = %e,
                    "skipped a session value that is not JSON (was it written without the tower adapter?)"
                ),
            }
        }
        // Records saved before USER_KEY was kept as a value have it only as the user.
        // It is handed out as loaded, so a request that leaves it does not write it back.
        let derived = data.get(self.user_from).and_then(user_id);
        if !data.contains_key(USER_KEY)
            && let Some(user) = entry.user.as_ref().filter(|u| derived.as_ref() != Some(*u))
        {
            let value = Value::String(user.clone());
            if let Ok(bytes) = serde_json::to_vec(&value) {
                prints.push(fingerprints.key_and_value(USER_KEY, &bytes));
            }
            data.insert(USER_KEY.to_owned(), value);
        }
        let base = Base::text_with(entry, &digest(id).handle(), fingerprints, &prints);
        data.insert(BASE_KEY.to_owned(), Value::String(base));
        data
    }

    /// `create` for any version: stores the data under a fresh ID (see the module docs)
    /// and returns it.
    async fn create_record(
        &self,
        data: &HashMap<String, Value>,
        expiry_date: OffsetDateTime,
        fresh_id: fn() -> i128,
    ) -> Result<i128, Refusal> {
        let Some(lifetime) = lifetime(&self.store.engine, expiry_date) else {
            return Ok(fresh_id());
        };
        if !data.is_empty() && data.keys().all(|key| key == BASE_KEY) {
            // Only what the request loaded, of a session it emptied: tower creates nothing
            // for an empty session, and neither does the store.
            return Ok(fresh_id());
        }
        // A cycled ID of a session of the same user: a revocation may have ended it
        // between tower's delete and this create.
        let (contents, rotated) = self.contents(data, lifetime)?;
        // A rotation's check may delete what it just stored, which flushes: never on
        // the executor (nor given up there half done).
        let work = match rotated {
            Some(_) => Work::Long,
            None => Work::of_write(&self.store, None, &contents),
        };
        run(&self.store, work, move |s| {
            let ids = || {
                let id = fresh_id();
                Ok((id, digest(id)))
            };
            match &rotated {
                None => s.engine.insert_new(ids, &contents),
                Some(b) => {
                    let stored = s.engine.insert_rotated(ids, &contents, b)?;
                    // Revoked: an ID that loads nothing, as for a record born expired.
                    Ok(stored.unwrap_or_else(fresh_id))
                }
            }
        })
        .await
        .map_err(|e| Refusal::of(&e))
    }

    /// `save` for any version.
    async fn save_record(
        &self,
        id: i128,
        data: &HashMap<String, Value>,
        expiry_date: OffsetDateTime,
    ) -> Result<(), Refusal> {
        let key = self.key(id);
        let Some(lifetime) = lifetime(&self.store.engine, expiry_date) else {
            return self.delete_record(id).await;
        };
        let (contents, _) = self.contents(data, lifetime)?;
        // Awaited on the multiplexed connection where there is one; else, or whenever it
        // needs the locked path (a conflict, a lease, the cap, ...), as below.
        let awaited = match self.store.engine.on_network() {
            true => self.store.engine.save_contents_async(&key, &contents).await,
            false => None,
        };
        let saved = match awaited {
            Some(saved) => saved.map_err(|e| Refusal::of(&e.into()))?,
            None => {
                let work = Work::of_write(&self.store, Some(&key), &contents);
                run(&self.store, work, move |s| {
                    s.engine.save_contents(&key, &contents)
                })
                .await
                .map_err(|e| Refusal::of(&e))?
            }
        };
        if saved.ended() {
            tracing::debug!(handle = %key.handle(), "not saving a session that is gone");
        }
        Ok(())
    }

    /// `load` for any version: tower's data and expiry date of the live session `id`.
    async fn load_record(
        &self,
        id: i128,
    ) -> Result<Option<(HashMap<String, Value>, OffsetDateTime)>, Refusal> {
        if let Some(parts) = self.hot_parts(id) {
            return Ok(Some(parts));
        }
        let found = if self.store.engine.on_network() {
            // Awaited on the multiplexed connection where there is one; else, or if it
            // cannot say, on the blocking pool.
            let key = self.key(id);
            if let Some(found) = self.store.engine.live_async(&key).await {
                let parts = found.map(|entry| self.parts(id, (key, None, &entry)));
                return parts.transpose();
            }
            let ids = Arc::clone(&self.ids);
            off_executor(&self.store, move |s| {
                let live = |key: &Digest| Ok(s.engine.live(key)?.map(|entry| (None, entry)));
                ids.find(&id_words(id), || digest(id), live)
            })
            .await
        } else {
            // The stamp first: a change after it makes what is derived from the record
            // stale (see `HotRecords`).
            let live = |key: &Digest| {
                let stamp = self.store.engine.stamp(key);
                Ok(helpers::load(&self.store, *key)?.map(|entry| (stamp, entry)))
            };
            self.ids.find(&id_words(id), || digest(id), live)
        };
        match found.map_err(|e| Refusal::of(&e))? {
            Some((key, (stamp, entry))) => self.parts(id, (key, stamp, &entry)).map(Some),
            None => Ok(None),
        }
    }

    /// The record key of tower ID `id`: remembered, or derived.
    fn key(&self, id: i128) -> Digest {
        self.ids.get(&id_words(id)).unwrap_or_else(|| digest(id))
    }

    /// `delete` for any version: flushed before it returns.
    async fn delete_record(&self, id: i128) -> Result<(), Refusal> {
        let key = self.key(id);
        self.ids.forget(&id_words(id));
        self.hot.forget(&id.to_le_bytes());
        let destroyed = helpers::destroy(&self.store, key).await;
        // Again: a load racing the delete may have remembered the ID meanwhile.
        self.ids.forget(&id_words(id));
        self.hot.forget(&id.to_le_bytes());
        destroyed.map_err(|e| Refusal::of(&e))
    }

    /// `delete_expired` for any version.
    async fn purge(&self) -> Result<(), Refusal> {
        run(&self.store, Work::Long, Store::purge_expired)
            .await
            .map_err(|e| Refusal::of(&e))?;
        Ok(())
    }
}

/// Records larger than this are parsed on every load instead of memoised: parsed JSON can
/// take many times the bytes it came from, and the cache is bounded by entries.
const MEMO_MAX_RECORD: usize = 16 * 1024;

/// Records larger than this do not go into the hot table, which holds their parsed
/// values beyond the read cache's life of them: a bound on its memory (at most twice
/// [`Config::cache_entries`](crate::Config::cache_entries) of them, and 8,192).
const HOT_MAX_RECORD: usize = 4 * 1024;

/// A record's values as tower wants them, memoised in the cache entry (and shared with
/// the hot table).
struct ParsedRecord {
    /// The `user_from` of the store that parsed it (the user goes back under
    /// [`USER_KEY`] or not depending on it).
    user_from: &'static str,
    data: HashMap<String, Value>,
    /// Whether this memo was handed out before (the record's third ask makes it hot).
    served: AtomicBool,
}

/// What the hot table keeps of a record: its parsed values and tower's expiry date.
struct HotRecord {
    parsed: Arc<ParsedRecord>,
    expiry: OffsetDateTime,
}

/// A store error, as either tower-sessions version reports it.
enum Refusal {
    /// What was given cannot be stored (too large, not encodable).
    Encode(String),
    /// The store failed.
    Backend(String),
}

impl Refusal {
    /// Why a store call failed, as tower-sessions classifies it.
    fn of(e: &OffExecutorError) -> Refusal {
        if e.is_encoding() {
            Refusal::Encode(e.to_string())
        } else {
            Refusal::Backend(e.to_string())
        }
    }
}

/// The user id a value names: a string's contents, a number's digits, or the same found
/// under a `user_id` field.
fn user_id(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(fields) => match fields.get("user_id")? {
            Value::Object(_) => None,
            inner => user_id(inner),
        },
        _ => None,
    }
}

/// The record key of tower ID `id`: `blake3::derive_key(ID_CONTEXT, id)`.
fn digest(id: i128) -> Digest {
    TOWER_IDS.digest(&id.to_le_bytes())
}

/// tower ID `id` as the words of its [`DigestMemo`] key.
fn id_words(id: i128) -> Words<2> {
    crate::id::words(&id.to_le_bytes())
}

/// The time `ms` after the epoch, or the latest date `time` represents if later.
fn from_ms(ms: u64) -> OffsetDateTime {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or_else(|_| time::PrimitiveDateTime::MAX.assume_utc())
}

/// tower's `expiry_date` as the session's own lifetime: an idle timeout reaching to it
/// from now (see [`Engine::framework_lifetime`]). `None` if it has passed. Measured
/// on tower's clock, which computed `expiry_date` (`OnInactivity(d)` gives `d`, whatever
/// clock the store runs on), and rounded to the nearest second: tower computed the date
/// a moment before the save, so `OnInactivity(30 minutes)` arrives as 29:59.99x and is
/// stored as the 30 minutes it means.
fn lifetime(state: &Engine, expiry_date: OffsetDateTime) -> Option<Lifetime> {
    let left = expiry_date - OffsetDateTime::now_utc();
    let ms = u64::try_from(left.whole_milliseconds()).unwrap_or(0);
    let ms = if ms >= 1000 {
        (ms + 500) / 1000 * 1000
    } else {
        ms
    };
    (ms > 0).then(|| state.framework_lifetime(Duration::from_millis(ms)))
}

/// Implements one tower-sessions-core version's traits on [`TowerStore`]: only type
/// conversions; the work is in the methods above.
macro_rules! session_store_for {
    ($core:ident) => {
        impl sealed::Sealed for $core::session::Id {}

        impl TowerId for $core::session::Id {
            fn bits(&self) -> i128 {
                self.0
            }
        }

        impl From<Refusal> for $core::session_store::Error {
            fn from(r: Refusal) -> Self {
                match r {
                    Refusal::Encode(e) => $core::session_store::Error::Encode(e),
                    Refusal::Backend(e) => $core::session_store::Error::Backend(e),
                }
            }
        }

        #[async_trait::async_trait]
        impl $core::session_store::SessionStore for TowerStore {
            /// Stores `record` under a fresh ID, whatever ID it arrives with: after
            /// `Session::flush` (logout) tower-sessions calls `create` with the old ID,
            /// which a thief may hold, so it is never handed out again. A record whose
            /// expiry has already passed gets a fresh ID and is not stored.
            async fn create(
                &self,
                record: &mut $core::session::Record,
            ) -> $core::session_store::Result<()> {
                let fresh = || $core::session::Id::default().0;
                let id = self
                    .create_record(&record.data, record.expiry_date, fresh)
                    .await?;
                record.id = $core::session::Id(id);
                Ok(())
            }

            /// Writes `record` over the live session with its ID. A session that was
            /// deleted or has expired meanwhile stays gone; a record whose expiry has
            /// passed is deleted.
            async fn save(
                &self,
                record: &$core::session::Record,
            ) -> $core::session_store::Result<()> {
                Ok(self
                    .save_record(record.id.0, &record.data, record.expiry_date)
                    .await?)
            }

            async fn load(
                &self,
                id: &$core::session::Id,
            ) -> $core::session_store::Result<Option<$core::session::Record>> {
                let Some((data, expiry_date)) = self.load_record(id.0).await? else {
                    return Ok(None);
                };
                Ok(Some($core::session::Record {
                    id: *id,
                    data,
                    expiry_date,
                }))
            }

            async fn delete(&self, id: &$core::session::Id) -> $core::session_store::Result<()> {
                Ok(self.delete_record(id.0).await?)
            }
        }

        #[async_trait::async_trait]
        impl $core::session_store::ExpiredDeletion for TowerStore {
            /// Deletes every expired session now (sessile's purge thread also does this
            /// on its own interval, so calling this is optional).
            async fn delete_expired(&self) -> $core::session_store::Result<()> {
                Ok(self.purge().await?)
            }
        }
    };
}

#[cfg(feature = "tower")]
session_store_for!(tower_sessions_core);
#[cfg(feature = "tower-014")]
session_store_for!(tower_sessions_core_014);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_to_distinct_keys_apart_from_token_digests() {
        // Stores written before the context was hashed once keep their keys.
        assert_eq!(
            digest(7).0,
            blake3::derive_key(ID_CONTEXT, &7i128.to_le_bytes())
        );
        assert_ne!(digest(1), digest(2));
        assert_eq!(digest(1), digest(1));
        // Not the plain hash of the bytes: a different domain from any other digest.
        assert_ne!(digest(1).0, *blake3::hash(&1i128.to_le_bytes()).as_bytes());
    }

    /// A record asked for a third time is served from the hot table, to this store only
    /// (not to one indexing users by another key), and a large record never is.
    #[cfg(feature = "tower")]
    #[test]
    fn a_small_record_asked_for_three_times_is_served_from_the_hot_table() {
        use tower_sessions_core::session::{Id, Record};
        use tower_sessions_core::session_store::SessionStore;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TowerStore::new(Store::open(dir.path().join("s")).expect("open"));
        let create = |value: Value| {
            let mut record = Record {
                id: Id::default(),
                data: HashMap::from([("v".to_owned(), value)]),
                expiry_date: OffsetDateTime::now_utc() + time::Duration::minutes(5),
            };
            runtime.block_on(store.create(&mut record)).expect("create");
            for _ in 0..3 {
                let loaded = runtime.block_on(store.load(&record.id)).expect("load");
                assert!(loaded.is_some());
            }
            record.id.0
        };
        let small = create(serde_json::json!(1));
        let (data, _) = store.hot_parts(small).expect("served from the hot table");
        assert_eq!(data["v"], serde_json::json!(1));
        assert!(data.contains_key(BASE_KEY));
        let other = store.clone().index_user_from("uid");
        assert!(
            other.hot_parts(small).is_none(),
            "converted for another key"
        );

        let large = create(serde_json::json!("x".repeat(HOT_MAX_RECORD)));
        assert!(
            store.hot_parts(large).is_none(),
            "a large record remembered"
        );
    }

    /// A save that keeps the user the request loaded runs in place even with a per-user
    /// cap and the record not in the read cache (read once since the store opened); one
    /// that logs another user in may apply the cap, so it goes to the blocking pool.
    #[cfg(feature = "tower")]
    #[test]
    fn a_save_keeping_the_loaded_user_never_waits_for_the_cap() {
        use crate::integrations::support::Work;
        use tower_sessions_core::session::{Id, Record};
        use tower_sessions_core::session_store::SessionStore;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || {
            let config = crate::config::Config::new(dir.path().join("s")).max_sessions_per_user(5);
            TowerStore::new(config.open().expect("open"))
        };
        let expiry_date = OffsetDateTime::now_utc() + time::Duration::minutes(5);
        let id = {
            let store = open();
            let mut record = Record {
                id: Id::default(),
                data: HashMap::from([(USER_KEY.to_owned(), Value::from("ann"))]),
                expiry_date,
            };
            runtime.block_on(store.create(&mut record)).expect("create");
            record.id
        };
        let store = open();
        let mut data = runtime
            .block_on(store.load(&id))
            .expect("load")
            .expect("live")
            .data;
        let key = store.key(id.0);
        let work = |data: &HashMap<String, Value>| {
            let life = lifetime(&store.store.engine, expiry_date).expect("lifetime");
            let Ok((contents, _)) = store.contents(data, life) else {
                panic!("contents refused");
            };
            Work::of_write(&store.store, Some(&key), &contents)
        };
        data.insert("v".to_owned(), Value::from(1));
        assert_eq!(work(&data), Work::Write);
        data.insert(USER_KEY.to_owned(), Value::from("bob"));
        assert_eq!(work(&data), Work::Long);
    }

    #[test]
    fn milliseconds_become_dates_and_saturate() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid");
        assert_eq!(from_ms(1_700_000_000_000), at);
        // Past year 9999: the latest date, never 1970.
        assert_eq!(from_ms(u64::MAX), time::PrimitiveDateTime::MAX.assume_utc());
    }

    #[test]
    fn user_ids_are_read_as_text() {
        use serde_json::json;
        let login = json!({ "user_id": 1, "auth_hash": [1, 2] });
        assert_eq!(user_id(&login).as_deref(), Some("1"));
        assert_eq!(
            user_id(&json!({ "user_id": "ann" })).as_deref(),
            Some("ann")
        );
        assert_eq!(user_id(&json!("bob")).as_deref(), Some("bob"));
        assert_eq!(user_id(&json!({ "user_id": null })), None);
        assert_eq!(user_id(&json!({ "user_id": { "user_id": 1 } })), None);
        assert_eq!(user_id(&json!([1])), None);
    }
}
