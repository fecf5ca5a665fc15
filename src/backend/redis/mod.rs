//! The Redis/Valkey backend: the same records on a server that several stores share.
//!
//! Keys, under a namespace `ns` (default `sessile`; see [`Config::redis_namespace`]):
//!
//! - `ns:s:<digest hex>`: a record, the same bytes as on sled, with a TTL as a safety
//!   net (the record's own expiry plus [`SAFETY_MARGIN`], counted on the store's clock
//!   when written), so sessions end even if no store runs its purge;
//! - `ns:expiry`: a sorted set, member the digest, score `expires_at`, walked in score
//!   order by the purge thread;
//! - `ns:u:<user>`: a sorted set per user, member the digest, score `created_at` (the
//!   per-user cap evicts in that order);
//! - `ns:l:<digest hex>`: the lease an [`update`](crate::Store::update) holds while its
//!   closure runs, so the read-modify-write of one store cannot interleave with another
//!   store's writes;
//! - `ns:quarantine`: a hash, digest -> the bytes of a record that did not decode;
//! - `ns:handles`: a hash, handle (the digest's first 32 hex digits) -> digest, so
//!   [`Store::destroy_by_handle`](crate::Store::destroy_by_handle) is one lookup; the
//!   scripts that write, move and delete records (revoke-all, the cap and the purge's
//!   drop of an expiry entry included) keep it; a handle it does not name is looked for
//!   in `ns:expiry` (see [`RedisBackend::records_with_prefix`]);
//! - `ns:revoked`, `ns:ended`, `ns:r:<handle hex>`, `ns:fingerprints`: the revocation
//!   marks and the fingerprint secret (see `marks.rs`);
//! - `ns:format`: the store format, in decimal.
//!
//! Every change is one Lua script, atomic on the server: a write compares the stored
//! bytes with the version the writer read (compare-and-swap), and moves the record's
//! expiry and user entries with it, so on Redis the indexes are exact. Revoke-all and
//! the per-user cap are scripts too: they list the user's set and delete in one step, so
//! no other store's regeneration or login can slip between the listing and the deletes.
//! They do not wait for leases, so no stream of updates can hold off a revoke: an update
//! whose session they delete fails its commit with `NotFound`.
//!
//! Nothing a token could be recovered from reaches the server: keys carry digests.
//!
//! [`Config::redis_namespace`]: crate::Config::redis_namespace

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::time::{Duration, Instant};

use redis::Commands;
use sled::IVec;

mod connect;
mod marks;
mod scripts;
mod verify;

use connect::Connector;
#[cfg(any(feature = "tower", feature = "tower-014"))]
use connect::Multiplexed;
use scripts::Scripts;

use crate::backend::Swap;
use crate::backend::{Cursor, ExpiryEntry, RecordKey, corrupt};
use crate::clock::Clock;
use crate::config::RedisTarget;
use crate::error::{Error, Result};
use crate::id::{Digest, from_hex, write_hex};
use crate::record::StoredRecord;

/// How long past its expiry a record stays on the server if no store deletes it.
pub(super) const SAFETY_MARGIN: Duration = Duration::from_secs(300);
/// How long an `update`'s lease lasts if its store dies while holding it; also how long a
/// writer waits for another store's lease before it gives up with `SessionBusy`.
const LEASE: Duration = Duration::from_secs(5);
/// How long a durable change waits for replicas to confirm it.
const REPLICA_WAIT_MS: u64 = 2000;

/// How long an operation waits for a free connection.
const POOL_WAIT: Duration = Duration::from_secs(2);
const SCAN_COUNT: usize = 512;

thread_local! {
    /// The lease this thread's running `update` holds: its digest and nonce. Its own
    /// commit passes the nonce, so the scripts let it through; a commit that lands also
    /// releases the lease and clears this.
    static HELD: RefCell<Option<(Digest, String)>> = const { RefCell::new(None) };
}

/// An `update`'s lease on one session, released (if still ours) when dropped, unless
/// the update's commit released it already (see [`RedisBackend::write`]).
pub(super) struct Lease<'a> {
    backend: &'a RedisBackend,
    digest: Digest,
    nonce: String,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if HELD.with(|h| h.borrow_mut().take()).is_none() {
            return; // released by the commit's write (see `write`)
        }
        let released = self.backend.conn().and_then(|mut conn| {
            self.backend
                .scripts
                .release
                .key(self.backend.lease_key(&self.digest))
                .arg(&self.nonce)
                .invoke::<i64>(&mut *conn)
                .map_err(Error::from)
        });
        if let Err(e) = released {
            // It lapses on its own after LEASE.
            tracing::warn!(handle = %self.digest.handle(), error = %e, "could not release an update lease");
        }
    }
}

pub(super) struct RedisBackend {
    pool: r2d2::Pool<Connector>,
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    multiplexed: Multiplexed,
    scripts: Scripts,
    ns: String,
    clock: Clock,
    /// See [`Config::redis_min_replicas`](crate::Config::redis_min_replicas).
    min_replicas: usize,
}

type Conn = r2d2::PooledConnection<Connector>;

impl RedisBackend {
    /// Connects (at least one connection must open within 2 s).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the server cannot be reached.
    pub(super) fn connect(target: &RedisTarget, clock: Clock) -> Result<RedisBackend> {
        // On a Cluster the namespace is every key's hash tag: one slot, one shard.
        let ns = if target.cluster.is_some() {
            format!("{{{}}}", target.namespace)
        } else {
            target.namespace.clone()
        };
        let pool = r2d2::Pool::builder()
            .max_size(target.pool_size)
            .min_idle(Some(1))
            .connection_timeout(POOL_WAIT)
            .test_on_check_out(true)
            .build(Connector::new(target, &ns)?)
            .map_err(|e| Error::no_connection(target.redacted(), e))?;
        Ok(RedisBackend {
            pool,
            #[cfg(any(feature = "tower", feature = "tower-014"))]
            multiplexed: Multiplexed::new(target)?,
            scripts: Scripts::new(),
            ns,
            clock,
            min_replicas: target.min_replicas,
        })
    }

    fn conn(&self) -> Result<Conn> {
        Ok(self.pool.get()?)
    }

    /// The server's `maxmemory-policy` if it may evict keys (anything but `noeviction`);
    /// `None` under `noeviction` or where `CONFIG` is refused (some managed services).
    pub(super) fn eviction_policy(&self) -> Result<Option<String>> {
        let mut conn = self.conn()?;
        let mut setting = |name: &str| -> Result<Option<String>> {
            let answer: redis::RedisResult<Vec<String>> =
                conn.on_node_of(&self.ns, redis::cmd("CONFIG").arg("GET").arg(name));
            match answer {
                Ok(pair) => Ok(pair.into_iter().nth(1)),
                Err(e) if e.is_io_error() || e.is_timeout() => Err(e.into()),
                Err(_) => Ok(None), // CONFIG refused
            }
        };
        let policy = setting("maxmemory-policy")?.filter(|p| p != "noeviction");
        // Without a memory limit nothing is ever evicted, whatever the policy.
        if policy.is_some() && setting("maxmemory")?.as_deref() == Some("0") {
            return Ok(None);
        }
        Ok(policy)
    }

    fn record_key(&self, digest: &Digest) -> String {
        format!("{}:s:{}", self.ns, hex(&digest.0))
    }

    fn record_prefix(&self) -> String {
        format!("{}:s:", self.ns)
    }

    fn expiry_key(&self) -> String {
        format!("{}:expiry", self.ns)
    }

    fn user_key(&self, user: Option<&str>) -> Vec<u8> {
        let mut key = format!("{}:u:", self.ns).into_bytes();
        key.extend_from_slice(user.unwrap_or_default().as_bytes());
        key
    }

    fn lease_key(&self, digest: &Digest) -> String {
        format!("{}:l:{}", self.ns, hex(&digest.0))
    }

    fn handles_key(&self) -> String {
        format!("{}:handles", self.ns)
    }

    fn quarantine_key(&self) -> String {
        format!("{}:quarantine", self.ns)
    }

    /// The TTL a record gets: its expiry from now on the store's clock, plus the margin.
    fn ttl_ms(&self, expires_at: u64) -> u64 {
        let margin = u64::try_from(SAFETY_MARGIN.as_millis()).unwrap_or(u64::MAX);
        expires_at
            .saturating_sub(self.clock.now_ms())
            .saturating_add(margin)
    }

    /// The nonce to pass for `digest`: this thread's lease on it, or none.
    fn nonce(digest: &Digest) -> String {
        HELD.with(|h| match &*h.borrow() {
            Some((held, nonce)) if held == digest => nonce.clone(),
            _ => String::new(),
        })
    }

    /// Runs `script` until no other store's lease is in the way (-1), for at most
    /// [`LEASE`]; returns its answer.
    fn past_leases(&self, mut script: impl FnMut(&mut Conn) -> Result<i64>) -> Result<i64> {
        let deadline = Instant::now() + LEASE;
        let mut pause = Duration::from_millis(1);
        loop {
            let answer = script(&mut self.conn()?)?;
            if answer != -1 {
                return Ok(answer);
            }
            if Instant::now() >= deadline {
                return Err(Error::SessionBusy);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Takes the lease on `digest` for an `update`, waiting up to [`LEASE`] for another
    /// store's to end.
    ///
    /// # Errors
    ///
    /// [`Error::SessionBusy`] if it stayed taken; [`Error::Storage`].
    pub(super) fn lease(&self, digest: &Digest) -> Result<Lease<'_>> {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let px = u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
        let taken = self.past_leases(|conn| {
            let set: Option<String> = redis::cmd("SET")
                .arg(self.lease_key(digest))
                .arg(&nonce)
                .arg("NX")
                .arg("PX")
                .arg(px)
                .query(&mut **conn)?;
            Ok(if set.is_some() { 1 } else { -1 })
        });
        taken?;
        HELD.with(|h| *h.borrow_mut() = Some((*digest, nonce.clone())));
        Ok(Lease {
            backend: self,
            digest: *digest,
            nonce,
        })
    }

    /// [`get`](Self::get) awaited on the multiplexed connection, for the async adapters:
    /// no blocking-pool hop, and the requests of every task share one connection.
    /// `None` where that connection is not available, or after it failed (then reset):
    /// the caller takes the pooled path, which reports the error.
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    pub(super) async fn get_async(&self, digest: &Digest) -> Option<Option<IVec>> {
        let mut conn = self.multiplexed.get().await?;
        let got: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GET")
            .arg(self.record_key(digest))
            .query_async(&mut conn)
            .await;
        match got {
            Ok(bytes) => Some(bytes.map(IVec::from)),
            Err(e) => {
                self.multiplexed.failed(&e);
                None
            }
        }
    }

    /// [`write`](Self::write) over `old` on the multiplexed connection (see
    /// [`get_async`](Self::get_async)). `None` if that connection is not available, after
    /// an error (it is reset), or if an `update` lease holds the session (another
    /// store's, or this store's on another thread: the async path holds none).
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    pub(super) async fn write_async(
        &self,
        digest: &Digest,
        old: &StoredRecord,
        new: &StoredRecord,
    ) -> Option<Swap> {
        let mut conn = self.multiplexed.get().await?;
        let (call, source) = self.write_call(digest, Some(old), new, "");
        let mut answer: redis::RedisResult<i64> = call.query_async(&mut conn).await;
        if let Err(e) = &answer
            && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        {
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(source);
            answer = match load.query_async::<String>(&mut conn).await {
                Ok(_) => call.query_async(&mut conn).await,
                Err(e) => Err(e),
            };
        }
        match answer {
            Ok(1) => Some(Swap::Done),
            Ok(0) => Some(Swap::Conflict),
            Ok(_) => None, // -1: leased
            Err(e) => {
                self.multiplexed.failed(&e);
                None
            }
        }
    }

    pub(super) fn get(&self, digest: &Digest) -> Result<Option<IVec>> {
        let bytes: Option<Vec<u8>> = self.conn()?.get(self.record_key(digest))?;
        Ok(bytes.map(IVec::from))
    }

    /// The call that writes `new` over `old` (or where nothing is stored), and the source
    /// of its script (sent by hash; loaded again if the server lost it). A save that
    /// changes neither the user, the stored expiry nor the creation time runs the
    /// `replace` script (compare, then `SET`); anything else runs `write`, which writes
    /// the index entries too.
    fn write_call(
        &self,
        digest: &Digest,
        old: Option<&StoredRecord>,
        new: &StoredRecord,
        nonce: &str,
    ) -> (redis::Cmd, &'static str) {
        let mut call = redis::cmd("EVALSHA");
        if let Some(old) = old
            && old.user == new.user
            && old.header.expires_at == new.header.expires_at
            && old.header.created_at == new.header.created_at
        {
            call.arg(self.scripts.replace.get_hash())
                .arg(2) // the number of keys that follow
                .arg(self.record_key(digest))
                .arg(self.lease_key(digest))
                .arg(&old.bytes[..])
                .arg(&new.bytes[..])
                .arg(self.ttl_ms(new.header.expires_at))
                .arg(nonce);
            return (call, scripts::REPLACE);
        }
        let member = hex(&digest.0);
        let old_user = old.and_then(|e| e.user.as_deref());
        call.arg(self.scripts.write.get_hash())
            .arg(6) // the number of keys that follow
            .arg(self.record_key(digest))
            .arg(self.expiry_key())
            .arg(self.lease_key(digest))
            .arg(self.user_key(old_user))
            .arg(self.user_key(new.user.as_deref()))
            .arg(self.handles_key());
        match old {
            None => call.arg("absent").arg(""),
            Some(e) => call.arg("match").arg(&e.bytes[..]),
        };
        call.arg(&new.bytes[..])
            .arg(self.ttl_ms(new.header.expires_at))
            .arg(new.header.expires_at)
            .arg(new.header.created_at)
            .arg(&member)
            .arg(nonce)
            .arg(flag(old_user.is_some()))
            .arg(flag(new.user.is_some()));
        (call, scripts::WRITE)
    }

    pub(super) fn write(
        &self,
        digest: &Digest,
        old: Option<&StoredRecord>,
        new: &StoredRecord,
    ) -> Result<Swap> {
        let nonce = Self::nonce(digest);
        let (call, source) = self.write_call(digest, old, new, &nonce);
        let answer = self.past_leases(|conn| self.eval(conn, &call, source))?;
        if answer == 1 && !nonce.is_empty() {
            // The script released this thread's lease with the write: the lease's drop
            // has nothing left to send.
            HELD.with(|h| h.borrow_mut().take());
        }
        swap(answer)
    }

    /// Stores each of `records` where no record is stored under its digest, all in one
    /// pipeline of `write` scripts (a round trip for the lot, not two each). Returns, for
    /// each, whether it was stored: not if a record or another store's `update` lease
    /// was there.
    pub(super) fn create_many(&self, records: &[(&Digest, &StoredRecord)]) -> Result<Vec<bool>> {
        let mut conn = self.conn()?;
        self.load(&mut conn, scripts::WRITE)?;
        let calls = records
            .iter()
            .map(|(digest, record)| {
                self.write_call(digest, None, record, &Self::nonce(digest))
                    .0
            })
            .collect();
        let answers: Vec<i64> = conn.pipeline(calls)?;
        Ok(answers.into_iter().map(|a| a == 1).collect())
    }

    pub(super) fn delete(&self, digest: &Digest, old: &StoredRecord) -> Result<Swap> {
        let answer: i64 = self
            .scripts
            .delete
            .key(self.record_key(digest))
            .key(self.expiry_key())
            .key(self.user_key(old.user.as_deref()))
            .key(self.handles_key())
            .arg(&old.bytes[..])
            .arg(hex(&digest.0))
            .arg(flag(old.user.is_some()))
            .invoke(&mut *self.conn()?)?;
        swap(answer)
    }

    pub(super) fn move_record(
        &self,
        old: &Digest,
        entry: &StoredRecord,
        new: &Digest,
        record: &StoredRecord,
    ) -> Result<Swap> {
        let nonce = Self::nonce(old);
        let answer = self.past_leases(|conn| {
            Ok(self
                .scripts
                .move_record
                .key(self.record_key(old))
                .key(self.record_key(new))
                .key(self.expiry_key())
                .key(self.lease_key(old))
                .key(self.user_key(entry.user.as_deref()))
                .key(self.user_key(record.user.as_deref()))
                .key(self.handles_key())
                .arg(&entry.bytes[..])
                .arg(&record.bytes[..])
                .arg(self.ttl_ms(record.header.expires_at))
                .arg(record.header.expires_at)
                .arg(record.header.created_at)
                .arg(hex(&old.0))
                .arg(hex(&new.0))
                .arg(&nonce)
                .arg(flag(entry.user.is_some()))
                .arg(flag(record.user.is_some()))
                .invoke(&mut **conn)?)
        })?;
        match answer {
            1 => Ok(Swap::Done),
            0 => Ok(Swap::Conflict),
            2 => Err(Error::TokenCollision),
            other => Err(Error::protocol(format!("move_record returned {other}"))),
        }
    }

    pub(super) fn quarantine(&self, digest: &Digest, bytes: &[u8]) -> Result<bool> {
        let removed: i64 = self
            .scripts
            .quarantine
            .key(self.quarantine_key())
            .key(self.record_key(digest))
            .arg(hex(&digest.0))
            .arg(bytes)
            .invoke(&mut *self.conn()?)?;
        Ok(removed == 1)
    }

    pub(super) fn user_digests(&self, user: &str) -> Result<(Vec<Digest>, u64)> {
        let members: Vec<Vec<u8>> = self.conn()?.zrange(self.user_key(Some(user)), 0, -1)?;
        let mut digests = Vec::with_capacity(members.len());
        let mut dropped = 0;
        for member in members {
            match digest_of_hex(&member) {
                Some(digest) => digests.push(digest),
                None => {
                    let _: i64 = self.conn()?.zrem(self.user_key(Some(user)), &member)?;
                    dropped += 1;
                }
            }
        }
        Ok((digests, dropped))
    }

    pub(super) fn drop_user_entry(&self, user: &str, digest: &Digest) -> Result<()> {
        let _: i64 = self
            .scripts
            .drop_if_absent
            .key(self.record_key(digest))
            .key(self.user_key(Some(user)))
            .arg(hex(&digest.0))
            .invoke(&mut *self.conn()?)?;
        Ok(())
    }

    pub(super) fn due(
        &self,
        now: u64,
        after: &mut Cursor,
        limit: usize,
    ) -> Result<Vec<ExpiryEntry>> {
        let found: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.expiry_key())
            .arg("-inf")
            .arg(now)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(after.kept)
            .arg(limit)
            .query(&mut *self.conn()?)?;
        Ok(found
            .into_iter()
            .map(|(member, score)| match digest_of_hex(&member) {
                // Scores are whole milliseconds, below 2^53: exact as f64.
                Some(digest) if score >= 0.0 => ExpiryEntry::Due(score as u64, digest),
                _ => ExpiryEntry::Bad(member),
            })
            .collect())
    }

    pub(super) fn drop_expiry_entry(&self, entry: &ExpiryEntry) -> Result<bool> {
        let mut conn = self.conn()?;
        let removed: i64 = match entry {
            ExpiryEntry::Due(_, digest) => self
                .scripts
                .drop_if_absent
                .key(self.record_key(digest))
                .key(self.expiry_key())
                .key(self.handles_key())
                .arg(hex(&digest.0))
                .invoke(&mut *conn)?,
            ExpiryEntry::Bad(member) => conn.zrem(self.expiry_key(), member)?,
        };
        Ok(removed > 0)
    }

    pub(super) fn records(&self) -> Box<dyn Iterator<Item = Result<(RecordKey, IVec)>> + '_> {
        Box::new(Scan::new(self, format!("{}*", self.record_prefix())))
    }

    /// The records whose digest starts with `prefix` (a handle): one `HGET` in the
    /// handle index, then the record. A handle the index does not name (a session written
    /// by an earlier version, or whose entry was lost) is looked for in the namespace's
    /// `expiry` set, where every record has its entry (`ZSCAN MATCH`, in steps: that one
    /// set, never the server's keyspace), so a revocation never misses a live session.
    pub(super) fn records_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Digest, IVec)>> {
        let member: Option<Vec<u8>> = self.conn()?.hget(self.handles_key(), hex(prefix))?;
        if let Some(digest) = member.as_deref().and_then(digest_of_hex)
            && digest.0.starts_with(prefix)
            && let Some(bytes) = self.get(&digest)?
        {
            return Ok(vec![(digest, bytes)]);
        }
        let pattern = format!("{}*", hex(prefix));
        let items: Vec<String> = {
            let mut conn = self.conn()?;
            let mut zscan = redis::cmd("ZSCAN");
            zscan
                .arg(self.expiry_key())
                .cursor_arg(0)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            zscan
                .iter::<String>(&mut *conn)?
                .collect::<std::result::Result<_, _>>()?
        };
        // Members and scores alternate; a member may come twice while the server rehashes.
        let digests: BTreeSet<Digest> = items
            .iter()
            .step_by(2)
            .filter_map(|m| digest_of_hex(m.as_bytes()))
            .collect();
        let mut found = Vec::new();
        for digest in digests {
            if let Some(bytes) = self.get(&digest)? {
                found.push((digest, bytes));
            }
        }
        Ok(found)
    }

    /// With [`Config::redis_min_replicas`](crate::Config::redis_min_replicas): waits until
    /// that many replicas (or every connected one, if fewer) have every write made before
    /// this call. A replica receives the primary's writes in order, so it is enough to
    /// write one key and `WAIT` on that same connection.
    pub(super) fn flush(&self) -> Result<()> {
        if self.min_replicas == 0 {
            return Ok(());
        }
        let mut conn = self.conn()?;
        // INFO and WAIT go to the node that holds the namespace (on a Cluster, by its
        // hash tag), on the connection its writes went through.
        let info: String = conn.on_node_of(&self.ns, redis::cmd("INFO").arg("replication"))?;
        let connected = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_slaves:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let wanted = self.min_replicas.min(connected);
        if wanted == 0 {
            return Ok(());
        }
        let _: i64 = redis::cmd("INCR")
            .arg(format!("{}:sync", self.ns))
            .query(&mut *conn)?;
        let acknowledged: usize = conn.on_node_of(
            &self.ns,
            redis::cmd("WAIT").arg(wanted).arg(REPLICA_WAIT_MS),
        )?;
        if acknowledged < wanted {
            return Err(Error::NotReplicated {
                acknowledged,
                wanted,
            });
        }
        Ok(())
    }

    pub(super) fn format(&self) -> Result<Option<u32>> {
        let found: Option<String> = self.conn()?.get(format!("{}:format", self.ns))?;
        found
            .map(|v| {
                v.parse()
                    .map_err(|_| corrupt(format!("{}:format is {v:?}, not a number", self.ns)))
            })
            .transpose()
    }

    pub(super) fn set_format(&self, format: u32) -> Result<()> {
        let _: () = self.conn()?.set(format!("{}:format", self.ns), format)?;
        Ok(())
    }

    /// Revoke-all as one script: deletes every live session in `user`'s set but the one
    /// whose digest starts with `keep`, and returns them. A member that is not a digest
    /// (only a hand-edited set has one) is deleted and skipped here.
    pub(super) fn revoke_user(
        &self,
        user: &str,
        keep: Option<&[u8]>,
        now: u64,
    ) -> Result<Vec<Digest>> {
        let out: Vec<Vec<u8>> = self
            .scripts
            .revoke
            .key(self.user_key(Some(user)))
            .key(self.expiry_key())
            .key(self.ended_key())
            .key(self.handles_key())
            .arg(self.record_prefix())
            .arg(keep.map(hex).unwrap_or_default())
            .arg(now)
            .arg(crate::backend::ENDED_MARGIN_MS)
            .invoke(&mut *self.conn()?)?;
        Ok(out.iter().filter_map(|m| digest_of_hex(m)).collect())
    }

    /// The per-user cap as one script. Returns the digests evicted (members that are not
    /// digests are evicted and skipped, as for [`revoke_user`](Self::revoke_user)).
    pub(super) fn cap_user(
        &self,
        user: &str,
        max: usize,
        keep: &Digest,
        now: u64,
    ) -> Result<Vec<Digest>> {
        let out: Vec<Vec<u8>> = self
            .scripts
            .cap
            .key(self.user_key(Some(user)))
            .key(self.expiry_key())
            .key(self.ended_key())
            .key(self.handles_key())
            .arg(self.record_prefix())
            .arg(max)
            .arg(hex(&keep.0))
            .arg(now)
            .arg(crate::backend::ENDED_MARGIN_MS)
            .invoke(&mut *self.conn()?)?;
        Ok(out.iter().filter_map(|m| digest_of_hex(m)).collect())
    }
}

/// The records under a key pattern, fetched a SCAN page (and one MGET) at a time.
struct Scan<'a> {
    backend: &'a RedisBackend,
    pattern: String,
    cursor: u64,
    started: bool,
    ready: VecDeque<(RecordKey, IVec)>,
    /// SCAN may return a key more than once (while the server rehashes): each is passed
    /// on once. Holds the names (after the record prefix) seen so far.
    seen: HashSet<Vec<u8>>,
}

impl<'a> Scan<'a> {
    fn new(backend: &'a RedisBackend, pattern: String) -> Scan<'a> {
        Scan {
            backend,
            pattern,
            cursor: 0,
            started: false,
            ready: VecDeque::new(),
            seen: HashSet::new(),
        }
    }
}

impl Scan<'_> {
    fn next_page(&mut self) -> Result<()> {
        let mut conn = self.backend.conn()?;
        let (cursor, keys) = self
            .backend
            .scan_page(&mut conn, self.cursor, &self.pattern)?;
        self.cursor = cursor;
        self.started = true;
        if keys.is_empty() {
            return Ok(());
        }
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query(&mut *conn)?;
        let prefix = self.backend.record_prefix().len();
        for (key, value) in keys.into_iter().zip(values) {
            // A record deleted between the SCAN and the MGET is skipped.
            let name = key.get(prefix..).unwrap_or_default();
            if let Some(value) = value
                && self.seen.insert(name.to_vec())
            {
                let key = digest_of_hex(name)
                    .map_or_else(|| RecordKey::Stray(name.to_vec()), RecordKey::Digest);
                self.ready.push_back((key, IVec::from(value)));
            }
        }
        Ok(())
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<(RecordKey, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(Ok(item));
            }
            if self.started && self.cursor == 0 {
                return None;
            }
            if let Err(e) = self.next_page() {
                self.started = true;
                self.cursor = 0; // end the scan after an error
                return Some(Err(e));
            }
        }
    }
}

impl RedisBackend {
    /// One `SCAN` step over the keys matching `pattern`, on the node holding the
    /// namespace: the next cursor and the keys.
    fn scan_page(
        &self,
        conn: &mut Conn,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        Ok(conn.on_node_of(
            &self.ns,
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT),
        )?)
    }

    /// Loads the script `source` on the node that holds the namespace (on a Cluster, only
    /// there: a shard that is down elsewhere does not matter).
    fn load(&self, conn: &mut Conn, source: &str) -> Result<()> {
        let _: String = conn.on_node_of(&self.ns, redis::cmd("SCRIPT").arg("LOAD").arg(source))?;
        Ok(())
    }

    /// Runs `call`, an `EVALSHA` of the script `source`, loading the script first if the
    /// server does not know it (after a restart or failover).
    fn eval(&self, conn: &mut Conn, call: &redis::Cmd, source: &str) -> Result<i64> {
        match call.query(&mut **conn) {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load(conn, source)?;
                Ok(call.query(&mut **conn)?)
            }
            answer => Ok(answer?),
        }
    }

    /// Every key matching `pattern` (each once, though `SCAN` may name one twice).
    fn keys_matching(&self, pattern: &str) -> Result<BTreeSet<Vec<u8>>> {
        let mut conn = self.conn()?;
        let mut keys = BTreeSet::new();
        let mut cursor = 0;
        loop {
            let (next, page) = self.scan_page(&mut conn, cursor, pattern)?;
            keys.extend(page);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

fn swap(answer: i64) -> Result<Swap> {
    match answer {
        1 => Ok(Swap::Done),
        0 => Ok(Swap::Conflict),
        other => Err(Error::protocol(format!("a write returned {other}"))),
    }
}

fn flag(set: bool) -> &'static str {
    if set { "1" } else { "0" }
}

/// `bytes` as lowercase hex, as digests appear in keys and members.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    // Writing into a String cannot fail.
    let _ = write_hex(&mut out, bytes);
    out
}

/// The digest a sorted-set member or key names: 64 lowercase hex digits, as sessile
/// writes them (any other spelling is not one of its entries).
fn digest_of_hex(text: &[u8]) -> Option<Digest> {
    if text.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    from_hex(text).map(Digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_what_is_not_a_digest() {
        let digest = Digest([0xa5; 32]);
        assert_eq!(digest_of_hex(hex(&digest.0).as_bytes()), Some(digest));
        assert_eq!(digest_of_hex(b"00"), None);
        assert_eq!(digest_of_hex(&[b'g'; 64]), None);
        assert_eq!(digest_of_hex(&[b'A'; 64]), None);
    }

    #[test]
    fn the_url_is_redacted_before_the_at() {
        let target = |url: &str| RedisTarget::new(url.into()).redacted();
        assert_eq!(target("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(target("redis://u:pw@h/"), "redis://***@h/");
        assert_eq!(target("redis://h:6379/"), "redis://h:6379/");
        assert_eq!(target("redis://h/a@b"), "redis://***@b");
        assert_eq!(target("redis://:ab/cd@h/"), "redis://***@h/");
        assert_eq!(target("redis://:ab?cd@h/"), "redis://***@h/");
        assert_eq!(
            target("redis+unix:///tmp/s.sock?db=1&pass=pw"),
            "redis+unix:///tmp/s.sock?***"
        );
        assert_eq!(target("redis://u:pw@h/0?protocol=3"), "redis://***@h/0?***");
    }
}
