//! Deleting expired sessions: the purge pass and the thread that runs it on a timer.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, select};

use crate::backend::Swap;
use crate::backend::{Cursor, ExpiryEntry};
use crate::engine::Engine;
use crate::engine::read::Via;
use crate::error::Result;
use crate::events::Event;
use crate::id::Digest;
use crate::stats::Counter;

/// What the purge did with one `expiry` entry.
enum Expired {
    /// The record was deleted; the entry goes with it.
    Purged,
    /// The entry matches no record with that expiry: it is dropped (`true`), or on Redis
    /// kept if its record exists (`false`: the record's own entry, which has moved).
    Stale(bool),
    /// The record has that expiry but is not due by the clock read under its lock (the
    /// wall clock stepped back during the pass): record and entry stay.
    NotYet,
}

/// Deletes every session whose indexed expiry is at or before now, walking the expiry
/// index in time order and stopping at the first entry in the future. Reads the index in
/// batches of `purge_batch` entries; each session is deleted under its own stripe lock
/// and no lock is held between sessions, so foreground work goes on.
pub(crate) fn purge(shared: &Engine) -> Result<usize> {
    purge_until(shared, || false)
}

/// [`purge`], giving up between two batches once `stop()` says so (the store is being
/// dropped: a backlog of a million sessions must not hold up the drop). What is left is
/// purged by the next pass.
fn purge_until(shared: &Engine, stop: impl Fn() -> bool) -> Result<usize> {
    let now = shared.now();
    let mut cursor = Cursor::default();
    let mut purged = 0;
    loop {
        let batch = shared
            .backend
            .due(now, &mut cursor, shared.config.purge_batch)?;
        if batch.is_empty() {
            break;
        }
        let full = batch.len() == shared.config.purge_batch;
        let mut stale = 0;
        for entry in &batch {
            let outcome = match entry {
                ExpiryEntry::Due(expires_at, digest) => expire_one(shared, digest, *expires_at)?,
                ExpiryEntry::Bad(_) => Expired::Stale(shared.backend.drop_expiry_entry(entry)?),
            };
            // What stays in the index is skipped by the next batch (Redis reads by
            // offset), so an entry that cannot be dropped is not read again and again.
            match outcome {
                Expired::Purged => purged += 1,
                Expired::Stale(true) => stale += 1,
                Expired::Stale(false) | Expired::NotYet => cursor.kept += 1,
            }
        }
        shared
            .counters
            .add(Counter::StaleIndexEntriesRemoved, stale);
        if !full || stop() {
            break;
        }
    }
    // The end marks of revoked sessions that would have expired by now (see the
    // engine's `revoke` module): a rotation of such a session is refused anyway.
    shared.backend.prune_ended(now)?;
    shared.counters.add(Counter::ExpiredPurged, purged as u64);
    shared.counters.add(Counter::PurgePasses, 1);
    if purged > 0 {
        tracing::debug!(purged, "deleted expired sessions");
    }
    Ok(purged)
}

/// Deletes the record of `digest` if its stored expiry is still `expires_at` (a session
/// refreshed since the index entry was written survives) and that time has come by the
/// clock read under the stripe lock (a clock stepped back since the pass began spares
/// the session). The entry goes with the record, or alone if stale, always under the
/// stripe lock: removed later, it could take the entry of a record written meanwhile
/// with the same expiry (a restore), breaking invariant I1.
fn expire_one(shared: &Engine, digest: &Digest, expires_at: u64) -> Result<Expired> {
    let user = {
        let held = shared.locks.stripe(digest)?;
        let old = shared.record(digest, Via::Locked(&held))?;
        let Some(old) = old.filter(|e| e.header.expires_at == expires_at) else {
            let dropped = shared
                .backend
                .drop_expiry_entry(&ExpiryEntry::Due(expires_at, *digest))?;
            return Ok(Expired::Stale(dropped));
        };
        if expires_at > shared.now() {
            return Ok(Expired::NotYet);
        }
        if shared.delete_record(digest, &old, &held)? == Swap::Conflict {
            return Ok(Expired::NotYet);
        }
        old.user.clone()
    };
    shared.events.emit(&shared.counters, || Event::Expired {
        handle: digest.handle(),
        user,
    });
    Ok(Expired::Purged)
}

/// The background thread of one open store.
pub(crate) struct PurgeThread {
    stop: Sender<()>,
    wake: Sender<()>,
    handle: JoinHandle<()>,
}

impl PurgeThread {
    pub(crate) fn spawn(shared: Arc<Engine>) -> std::io::Result<PurgeThread> {
        let (stop, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let (wake, wake_rx) = crossbeam_channel::bounded::<()>(1);
        let handle = std::thread::Builder::new()
            .name("sessile-purge".into())
            .spawn(move || {
                let ticker = crossbeam_channel::tick(shared.config.purge_interval);
                // A stop asked for during a pass ends it after the batch in hand.
                let stopping = || !stop_rx.is_empty();
                loop {
                    select! {
                        recv(stop_rx) -> _ => break,
                        recv(wake_rx) -> _ => run_pass(&shared, stopping),
                        recv(ticker) -> _ => run_pass(&shared, stopping),
                    }
                }
            })?;
        Ok(PurgeThread { stop, wake, handle })
    }

    pub(crate) fn wake(&self) {
        // A full channel means a pass is already requested.
        let _ = self.wake.try_send(());
    }

    /// Signals the thread and waits for it to exit. A pass in progress stops after the
    /// batch it is deleting.
    pub(crate) fn stop(self) {
        let _ = self.stop.try_send(());
        if self.handle.join().is_err() {
            tracing::error!("the purge thread panicked");
        }
    }
}

fn run_pass(shared: &Engine, stop: impl Fn() -> bool) {
    if let Err(e) = purge_until(shared, stop) {
        shared.counters.add(Counter::PurgeErrors, 1);
        tracing::warn!(error = %e, "purge pass failed; retrying next interval");
    }
}
