//! The engine: what an open store is (the backend, the settings, the locks, the caches,
//! counters and subscribers) and everything it does with records. Every `Store` handle
//! and the purge thread share one [`Engine`]; its fields are private to this module and
//! its children, and the layers above (the public API, the adapters) use the methods
//! marked `pub(crate)` only.
//!
//! Inside, from the bottom up:
//!
//! - `locks` (stripe and user locks), `memo` (token -> digest), `cache` (shared cache and
//!   thread copies): state, no record logic;
//! - `read`: a record through the caches and the backend, decoded and checked for life;
//! - `write`: the write protocol's primitives (write, delete, quarantine) and retries;
//! - `commit` (create, save, touch), `update` (the atomic read-modify-write), `revoke` (destroy, revoke-all, the cap),
//!   `regenerate`, `purge` (and its thread), `verify`, `framework` (the adapters'
//!   writes): the operations.

mod cache;
mod doorkeeper;
#[cfg(any(feature = "tower", feature = "tower-014"))]
pub(crate) use cache::admit;
pub(crate) mod commit;
#[cfg(any(feature = "tower", feature = "tower-014", feature = "actix"))]
pub(crate) mod framework;
pub(crate) mod locks;
pub(crate) mod memo;
pub(crate) mod purge;
mod read;
mod regenerate;
mod revoke;
mod update;
pub(crate) mod verify;
mod write;

use std::sync::atomic::{AtomicU32, Ordering};

use sled::IVec;

use crate::backend::{Backend, RecordKey};
use crate::config::Config;
use crate::engine::cache::ReadCache;
use crate::engine::locks::Locks;
use crate::engine::memo::DigestMemo;
use crate::error::Result;
use crate::events::{Events, Subscription};
use crate::id::{Digest, SessionHandle};
use crate::record::StoredRecord;
use crate::session::Limits;
use crate::stats::{Counters, Stats};

/// An open store. See the module docs.
pub(crate) struct Engine {
    backend: Backend,
    config: Config,
    counters: Counters,
    events: Events,
    locks: Locks,
    cache: ReadCache,
    /// Token -> digest of sessions found live, so a hot load skips blake3.
    tokens: DigestMemo<4>,
    /// `meta/format` of the store: as found when it was opened, until the first write
    /// upgrades it.
    format: AtomicU32,
    /// The adapters' fingerprints, keyed with the store's secret (read or made once).
    #[cfg(any(feature = "tower", feature = "tower-014", feature = "actix"))]
    fingerprints: std::sync::OnceLock<crate::changes::Fingerprints>,
    /// Where other processes write too (Redis): the version of each session the tower
    /// adapter last read or wrote, which its next save expects to find, so that save is
    /// one round trip (its compare-and-swap checks the guess). Never served to a read.
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    expected:
        Option<quick_cache::sync::Cache<Digest, std::sync::Arc<StoredRecord>, cache::RecordWeight>>,
}

impl Engine {
    /// Opens the storage `config` names.
    ///
    /// # Errors
    ///
    /// Those of [`Config::open`](crate::Config::open).
    pub(crate) fn open(config: Config) -> Result<Engine> {
        let (backend, format) = Backend::open(&config)?;
        Ok(Engine::new(backend, config, format))
    }

    fn new(backend: Backend, config: Config, format: u32) -> Engine {
        // A backend other processes write too tells this one nothing: no cache of records
        // there (see ARCHITECTURE.md, "Scaling out"). Tokens' digests never change.
        let backend_shared = backend.shared_by_processes();
        #[cfg(any(feature = "tower", feature = "tower-014"))]
        let expected = (backend_shared && config.cache_entries > 0)
            .then(|| cache::bounded_records(config.cache_entries, config.cache_bytes));
        let cache_entries = if backend_shared {
            0
        } else {
            config.cache_entries
        };
        Engine {
            backend,
            events: Events::new(config.event_capacity),
            counters: Counters::default(),
            locks: Locks::new(),
            cache: ReadCache::new(cache_entries, config.cache_bytes, config.max_record_size),
            // Twice the cache's entries, so few hot tokens share a slot.
            tokens: DigestMemo::new(config.cache_entries.saturating_mul(2)),
            config,
            format: AtomicU32::new(format),
            #[cfg(any(feature = "tower", feature = "tower-014", feature = "actix"))]
            fingerprints: std::sync::OnceLock::new(),
            #[cfg(any(feature = "tower", feature = "tower-014"))]
            expected,
        }
    }

    /// The store's `meta/format` now.
    pub(crate) fn format(&self) -> u32 {
        self.format.load(Ordering::Acquire)
    }

    /// Whether every operation is a network round trip (Redis): adapters then never run
    /// store calls on an async worker thread.
    #[cfg(any(feature = "tower", feature = "tower-014", feature = "actix"))]
    pub(crate) fn on_network(&self) -> bool {
        self.backend.shared_by_processes()
    }

    /// Whether a write returns without a flush or a network round trip: the adapters
    /// then make it in place instead of on the blocking pool.
    #[cfg(any(feature = "tower", feature = "tower-014", feature = "actix"))]
    pub(crate) fn writes_quickly(&self) -> bool {
        self.config.durability != crate::config::Durability::EveryWrite && !self.on_network()
    }

    /// The settings the store was opened with.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Makes every write so far durable (see [`Store::flush`](crate::Store::flush)).
    pub(crate) fn flush(&self) -> Result<()> {
        self.backend.flush()
    }

    /// A new subscriber to the store's events.
    pub(crate) fn subscribe(&self) -> Subscription {
        self.events.subscribe()
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Every stored session record that decodes, with its digest, in storage order
    /// (records under stray keys, and undecodable ones, are skipped: see `verify`).
    pub(crate) fn records(&self) -> impl Iterator<Item = Result<(Digest, StoredRecord)>> + '_ {
        self.backend.records().filter_map(|item| match item {
            Ok((RecordKey::Digest(digest), bytes)) => {
                StoredRecord::decode(bytes).ok().map(|r| Ok((digest, r)))
            }
            Ok((RecordKey::Stray(_), _)) => None,
            Err(e) => Some(Err(e)),
        })
    }

    /// The stored records whose digest begins with `handle`.
    pub(crate) fn records_of(&self, handle: &SessionHandle) -> Result<Vec<(Digest, IVec)>> {
        self.backend.records_with_prefix(handle.as_bytes())
    }

    /// Forgets the token `id` in the memo of token digests (its session is ending).
    #[cfg(feature = "actix")]
    pub(crate) fn forget_token(&self, id: &crate::id::SessionId) {
        self.tokens.forget(&id.words());
    }

    /// See [`Store::eviction_policy`](crate::Store::eviction_policy).
    pub(crate) fn eviction_policy(&self) -> Result<Option<String>> {
        self.backend.eviction_policy()
    }

    pub(crate) fn now(&self) -> u64 {
        self.config.clock.now_ms()
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits::of(&self.config)
    }
}
