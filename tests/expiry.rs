//! Idle and absolute timeouts, touch coalescing, and the cleanup of expired sessions.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sessile::{Error, Store};
use support::{ABSOLUTE, Fixture, IDLE};

fn version(store: &Store, handle: sessile::SessionHandle) -> u64 {
    store
        .inspect(&handle)
        .expect("inspect")
        .expect("stored")
        .version
}

#[test]
fn idle_session_expires_and_is_never_returned() {
    let f = Fixture::new();
    let store = f.open();
    let s = store.create().expect("create");
    f.clock.advance(IDLE - Duration::from_secs(1));
    assert!(store.load(s.id()).expect("load").is_some());
    f.clock.advance(Duration::from_secs(1));
    // Expired but not yet purged: dead for every API.
    assert!(store.load(s.id()).expect("load").is_none());
    assert!(!store.touch(s.id()).expect("touch"));
    assert_eq!(store.update(s.id(), |_| ()).expect("update"), None);
    assert!(matches!(store.save(&s), Err(Error::NotFound)));
    assert_eq!(store.len().expect("len"), 0);
    // destroy reports false but still removes the record
    assert!(!store.destroy(s.id()).expect("destroy"));
    assert!(store.inspect(&s.handle()).expect("inspect").is_none());
}

#[test]
fn save_and_touch_extend_the_idle_timeout() {
    let f = Fixture::new();
    let store = f.open();
    let s = store.create().expect("create");
    f.clock.advance(IDLE / 2);
    store.save(&s).expect("save");
    f.clock.advance(IDLE / 2 + Duration::from_secs(60));
    assert!(
        store.touch(s.id()).expect("touch"),
        "save extended the expiry"
    );
    f.clock.advance(IDLE - Duration::from_secs(1));
    assert!(
        store.load(s.id()).expect("load").is_some(),
        "touch extended the expiry"
    );
    f.clock.advance(Duration::from_secs(1));
    assert!(store.load(s.id()).expect("load").is_none());
}

#[test]
fn load_does_not_extend_the_expiry() {
    let f = Fixture::new();
    let store = f.open();
    let s = store.create().expect("create");
    let before = store
        .load(s.id())
        .expect("load")
        .expect("live")
        .expires_at();
    f.clock.advance(IDLE / 2);
    let after = store
        .load(s.id())
        .expect("load")
        .expect("live")
        .expires_at();
    assert_eq!(before, after);
}

#[test]
fn absolute_timeout_caps_activity() {
    let f = Fixture::new();
    let store = f.open();
    let s = store.create().expect("create");
    let created = s.created_at();
    let mut elapsed = Duration::ZERO;
    while elapsed + IDLE / 2 < ABSOLUTE {
        f.clock.advance(IDLE / 2);
        elapsed += IDLE / 2;
        assert!(store.touch(s.id()).expect("touch"), "alive at {elapsed:?}");
    }
    let live = store.load(s.id()).expect("load").expect("live");
    assert_eq!(live.expires_at(), created + ABSOLUTE);
    f.clock.set(created + ABSOLUTE);
    assert!(store.load(s.id()).expect("load").is_none());
    assert!(!store.touch(s.id()).expect("touch"));
}

#[test]
fn touch_within_granularity_writes_nothing() {
    let f = Fixture::new();
    let store = f.open();
    let s = store.create().expect("create");
    let v0 = version(&store, s.handle());
    // Default granularity is idle/20 = 90 s.
    f.clock.advance(Duration::from_secs(30));
    assert!(store.touch(s.id()).expect("touch"));
    assert_eq!(
        version(&store, s.handle()),
        v0,
        "a write happened inside the granularity"
    );
    f.clock.advance(Duration::from_secs(61));
    assert!(store.touch(s.id()).expect("touch"));
    assert_eq!(version(&store, s.handle()), v0 + 1);
}

#[test]
fn unchanged_save_within_granularity_writes_nothing() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    s.insert("a", &1u8).expect("insert");
    store.save(&s).expect("save");
    let v = version(&store, s.handle());
    f.clock.advance(Duration::from_secs(10));
    store.save(&s).expect("save");
    assert_eq!(version(&store, s.handle()), v);
    s.insert("a", &2u8).expect("insert");
    store.save(&s).expect("save");
    assert_eq!(
        version(&store, s.handle()),
        v + 1,
        "a changed value is always written"
    );
}

#[test]
fn purge_deletes_expired_and_keeps_live_and_refreshed_sessions() {
    let f = Fixture::new();
    let store = f.open();
    let doomed: Vec<_> = (0..10).map(|_| store.create().expect("create")).collect();
    let refreshed = store.create().expect("create");
    f.clock.advance(IDLE / 2);
    store.touch(refreshed.id()).expect("touch");
    let young = store.create().expect("create");
    f.clock.advance(IDLE / 2);
    assert_eq!(store.purge_expired().expect("purge"), 10);
    for s in &doomed {
        assert!(store.inspect(&s.handle()).expect("inspect").is_none());
    }
    assert!(store.load(refreshed.id()).expect("load").is_some());
    assert!(store.load(young.id()).expect("load").is_some());
    assert_eq!(store.purge_expired().expect("purge"), 0);
    let report = store.verify(false).expect("verify");
    assert!(report.is_consistent());
    assert_eq!(
        report.stale_expiry_entries, 0,
        "the refreshed session's old entry was dropped"
    );
    let stats = store.stats();
    assert_eq!(stats.expired_purged, 10);
    assert!(stats.purge_passes >= 2);
}

#[test]
fn backlog_is_purged_in_batches_while_live_lookups_go_on() {
    let f = Fixture::new();
    let store = f.config().purge_batch(1000).open().expect("open");
    // Each write is a round trip on Redis: a smaller backlog keeps CI's Redis pass short.
    let backlog = if support::on_redis() { 10_000 } else { 100_000 };
    for _ in 0..backlog {
        store.create().expect("create");
    }
    f.clock.advance(IDLE);
    let live: Vec<_> = (0..100).map(|_| store.create().expect("create")).collect();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let done = Arc::clone(&done);
        let ids: Vec<_> = live.iter().map(|s| s.id().clone()).collect();
        std::thread::spawn(move || {
            let mut lookups = 0u64;
            while !done.load(Ordering::Acquire) || lookups == 0 {
                for id in &ids {
                    assert!(store.load(id).expect("load").is_some(), "live session lost");
                    lookups += 1;
                }
            }
            lookups
        })
    };
    assert_eq!(store.purge_expired().expect("purge"), backlog);
    done.store(true, Ordering::Release);
    assert!(reader.join().expect("reader") > 0);
    assert_eq!(store.len().expect("len"), live.len());
    assert!(store.verify(false).expect("verify").is_consistent());
}

#[test]
fn the_cleanup_thread_purges_on_its_own() {
    let f = Fixture::new();
    let store = f
        .config()
        .purge_thread(true)
        .purge_interval(Duration::from_millis(20))
        .open()
        .expect("open");
    let s = store.create().expect("create");
    f.clock.advance(IDLE);
    // Real time passes here: the thread runs on a wall-clock interval.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.inspect(&s.handle()).expect("inspect").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "purge thread never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(store.stats().expired_purged, 1);
}

#[test]
fn schedule_purge_wakes_the_thread() {
    let f = Fixture::new();
    let store = f
        .config()
        .purge_thread(true)
        .purge_interval(Duration::from_secs(3600))
        .open()
        .expect("open");
    let s = store.create().expect("create");
    f.clock.advance(IDLE);
    store.schedule_purge();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.inspect(&s.handle()).expect("inspect").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "woken thread never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn shortening_the_idle_timeout_applies_to_existing_sessions() {
    let f = Fixture::new();
    let token = {
        let store = f.open();
        store.create().expect("create").id().clone()
    };
    f.clock.advance(Duration::from_secs(10 * 60));
    let store = f
        .config()
        .idle_timeout(Duration::from_secs(5 * 60))
        .open()
        .expect("open");
    assert!(store.load(&token).expect("load").is_none());
}

/// A wall clock stepped back while a purge runs: the purge read "now" once at its start,
/// but re-reads the clock under each session's lock, so sessions that are live at the new
/// time survive with their index entries and expire later as they should.
#[test]
fn a_clock_stepped_back_during_a_purge_spares_sessions_live_at_the_new_time() {
    use std::collections::VecDeque;
    use std::time::SystemTime;

    let f = Fixture::new();
    let manual = f.clock.clone();
    // Times handed out before the manual clock is consulted: the purge's first reading.
    let script: Arc<parking_lot::Mutex<VecDeque<SystemTime>>> = Arc::default();
    let clock = {
        let script = Arc::clone(&script);
        sessile::Clock::from_fn(move || script.lock().pop_front().unwrap_or_else(|| manual.now()))
    };
    let store = f.config().clock(clock).open().expect("open");
    let a = store.create().expect("create");
    let b = store.create().expect("create");
    let due = f.clock.now() + IDLE + Duration::from_secs(60);
    // The purge starts at `due` (both sessions expired), then the clock steps back 5
    // minutes before their expiry.
    f.clock.advance(IDLE - Duration::from_secs(300));
    script.lock().push_back(due);
    assert_eq!(store.purge_expired().expect("purge"), 0);
    for s in [&a, &b] {
        assert!(
            store.load(s.id()).expect("load").is_some(),
            "live at the new time"
        );
    }
    assert!(store.verify(false).expect("verify").is_consistent());
    // Their time comes: the entries kept above let the next purge find them.
    f.clock.advance(Duration::from_secs(301));
    assert_eq!(store.purge_expired().expect("purge"), 2);
    assert_eq!(store.len().expect("len"), 0);
}

/// Dropping a store whose purge thread is in the middle of a long pass stops the pass
/// after the batch in hand instead of waiting for the whole backlog; the rest is left for
/// the next pass.
#[test]
fn dropping_the_store_stops_a_purge_pass_between_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let clock = sessile::ManualClock::new();
    let config = || {
        sessile::Config::new(&path)
            .clock(clock.clock())
            .purge_batch(1)
            .purge_interval(Duration::from_secs(3600))
    };
    let store = config().open().expect("open");
    for _ in 0..2_000 {
        store.create().expect("create");
    }
    clock.advance(Duration::from_secs(86_400));
    let events = store.subscribe();
    store.schedule_purge();
    // The pass is under way once the first expired session is gone.
    match events.recv_timeout(Duration::from_secs(30)) {
        Ok(sessile::Event::Expired { .. }) => {}
        other => panic!("expected the purge to start, got {other:?}"),
    }
    drop(store);
    let store = config().purge_thread(false).open().expect("reopen");
    let report = store.verify(false).expect("verify");
    assert!(
        report.expired > 1_000,
        "the drop waited for the whole pass: {report:?}"
    );
    assert_eq!(store.purge_expired().expect("purge") as u64, report.expired);
}
