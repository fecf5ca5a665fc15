//! What an open store holds: the sled trees, the settings, the locks, the read cache,
//! counters and subscribers. Every `Store` handle and the cleanup thread share one.
//!
//! The read path ([`crate::read`]) and the write protocol ([`crate::write`]) are methods
//! on this state, in their own modules.

use std::sync::atomic::{AtomicU32, Ordering};

use sled::Tree;

use crate::codec::{self, Header};
use crate::config::{Config, Durability, MAX_USER_LEN};
use crate::digests::DigestMemo;
use crate::error::{Error, Oversized, Result};
use crate::events::Events;
use crate::locks::Locks;
use crate::read::ReadCache;
use crate::registry::Registration;
use crate::session::Limits;
use crate::stats::Counters;
use crate::values::Values;

pub(crate) struct StoreState {
    pub(crate) db: sled::Db,
    pub(crate) sessions: Tree,
    pub(crate) expiry: Tree,
    pub(crate) users: Tree,
    pub(crate) quarantine: Tree,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) events: Events,
    pub(crate) locks: Locks,
    pub(crate) cache: ReadCache,
    /// Token -> digest of sessions found live, so a hot load skips blake3.
    pub(crate) tokens: DigestMemo<4>,
    meta: Tree,
    /// `meta/format` of the store: as found when it was opened, until the first write
    /// upgrades it.
    format: AtomicU32,
    /// Declared last so it is dropped after `db`: the folder counts as open until then.
    _registration: Registration,
}

impl StoreState {
    pub(crate) fn new(
        db: sled::Db,
        config: Config,
        registration: Registration,
        format: u32,
    ) -> Result<StoreState> {
        Ok(StoreState {
            sessions: db.open_tree("sessions")?,
            expiry: db.open_tree("expiry")?,
            users: db.open_tree("users")?,
            quarantine: db.open_tree("quarantine")?,
            meta: db.open_tree("meta")?,
            events: Events::new(config.event_capacity),
            counters: Counters::default(),
            locks: Locks::new(),
            cache: ReadCache::new(config.cache_entries),
            // Twice the cache's entries, so few hot tokens share a slot.
            tokens: DigestMemo::new(config.cache_entries.saturating_mul(2)),
            config,
            db,
            format: AtomicU32::new(format),
            _registration: registration,
        })
    }

    /// The store's `meta/format` now.
    pub(crate) fn format(&self) -> u32 {
        self.format.load(Ordering::Acquire)
    }

    /// Upgrades `meta/format` of an older store before the first record in the current
    /// format is written, so an older sessile, which could not read that record, refuses
    /// to open the store instead of quarantining it.
    pub(crate) fn upgrade_before_write(&self) -> Result<()> {
        if self.format() < codec::STORE_FORMAT {
            let now = codec::upgrade_store(&self.meta, self.format())?;
            self.format.store(now, Ordering::Release);
        }
        Ok(())
    }

    pub(crate) fn now(&self) -> u64 {
        self.config.clock.now_ms()
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_record_size: self.config.max_record_size,
            max_key_len: self.config.max_key_len,
        }
    }

    /// Flushes if the configured durability asks for it after every write.
    pub(crate) fn after_write(&self) -> Result<()> {
        if self.config.durability == Durability::EveryWrite {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Encodes `user` and `values` as a record with a placeholder header (the write sets
    /// the real one), checking the user and record limits.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] for a user name or record over its limit, [`Error::EncodeRecord`]
    /// if the encoder fails.
    pub(crate) fn encode(&self, user: Option<&str>, values: &Values) -> Result<Vec<u8>> {
        if let Some(user) = user
            && user.len() > MAX_USER_LEN
        {
            return Err(Error::TooLarge {
                what: Oversized::User,
                size: user.len(),
                limit: MAX_USER_LEN,
            });
        }
        let bytes = codec::encode_record(&Header::PLACEHOLDER, user, values)
            .map_err(|e| Error::EncodeRecord(Box::new(e)))?;
        if bytes.len() > self.config.max_record_size {
            return Err(Error::TooLarge {
                what: Oversized::Record,
                size: bytes.len(),
                limit: self.config.max_record_size,
            });
        }
        Ok(bytes)
    }
}
