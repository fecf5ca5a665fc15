//! Per-session lifetimes: "remember me" sessions that outlive the store's timeouts and
//! short-lived ones that die early, through every operation, the cleanup, a restart and
//! the ceilings. Time moves with a manual clock.

mod support;

use std::time::Duration;

use sessile::{Config, Lifetime, Session, Store};
use support::{Fixture, IDLE};

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

fn remember_me() -> Lifetime {
    Lifetime::default()
        .with_idle(30 * DAY)
        .with_absolute(90 * DAY)
}

fn with_lifetime(store: &Store, lifetime: Lifetime) -> Session {
    let mut s = store.create().expect("create");
    s.set_lifetime(lifetime);
    store.save(&s).expect("save");
    s
}

fn live(store: &Store, s: &Session) -> bool {
    store.load(s.id()).expect("load").is_some()
}

fn version(store: &Store, s: &Session) -> u64 {
    store
        .inspect(&s.handle())
        .expect("inspect")
        .expect("stored")
        .version
}

#[test]
fn a_remembered_session_outlives_the_store_timeouts_and_ordinary_ones_do_not() {
    let f = Fixture::new();
    let store = f.open(); // 30 min idle, 12 h absolute
    let ordinary = store.create().expect("create");
    let remembered = with_lifetime(&store, remember_me());
    f.clock.advance(IDLE + MINUTE);
    assert!(
        !live(&store, &ordinary),
        "the store's idle timeout still applies"
    );
    assert!(live(&store, &remembered));
    f.clock.advance(20 * DAY);
    assert!(store.touch(remembered.id()).expect("touch"));
    f.clock.advance(29 * DAY);
    assert!(
        live(&store, &remembered),
        "the touch moved it by its own 30 days"
    );
    f.clock.advance(2 * DAY);
    assert!(!live(&store, &remembered), "30 days without activity");
}

#[test]
fn its_own_absolute_timeout_ends_an_active_session() {
    let f = Fixture::new();
    let store = f.open();
    let s = with_lifetime(&store, remember_me());
    for _ in 0..17 {
        f.clock.advance(5 * DAY + MINUTE);
        assert!(store.touch(s.id()).expect("touch"), "active within 90 days");
    }
    f.clock.advance(5 * DAY);
    assert!(!live(&store, &s), "90 days after creation, however active");
}

#[test]
fn a_short_lived_session_dies_early() {
    let f = Fixture::new();
    let store = f.open();
    let reset = with_lifetime(&store, Lifetime::default().with_idle(10 * MINUTE));
    f.clock.advance(9 * MINUTE);
    assert!(live(&store, &reset));
    f.clock.advance(2 * MINUTE);
    assert!(!live(&store, &reset), "10 minutes, not the store's 30");
    assert!(!store.touch(reset.id()).expect("touch"));
    assert_eq!(store.update(reset.id(), |_| ()).expect("update"), None);
    assert_eq!(store.len().expect("len"), 0);
    // The cleanup deletes it at its own time, not the store's.
    assert_eq!(store.purge_expired().expect("purge"), 1);
}

#[test]
fn the_cleanup_deletes_each_session_at_its_own_time() {
    let f = Fixture::new();
    let store = f.open();
    let short = with_lifetime(&store, Lifetime::default().with_idle(5 * MINUTE));
    let ordinary = store.create().expect("create");
    let long = with_lifetime(&store, remember_me());
    f.clock.advance(6 * MINUTE);
    assert_eq!(store.purge_expired().expect("purge"), 1);
    f.clock.advance(IDLE);
    assert_eq!(store.purge_expired().expect("purge"), 1);
    assert!(!live(&store, &short) && !live(&store, &ordinary));
    f.clock.advance(10 * DAY);
    assert_eq!(store.purge_expired().expect("purge"), 0);
    assert!(live(&store, &long));
}

#[test]
fn touch_granularity_scales_with_the_sessions_own_idle_timeout() {
    let f = Fixture::new();
    let store = f.open(); // granularity 1/20 of 30 min = 90 s; for 30 days: 36 h
    let s = with_lifetime(&store, remember_me());
    let v = version(&store, &s);
    f.clock.advance(Duration::from_secs(3_600));
    assert!(store.touch(s.id()).expect("touch"));
    assert_eq!(
        version(&store, &s),
        v,
        "an hour is inside its 36 h step: no write"
    );
    f.clock.advance(2 * DAY);
    assert!(store.touch(s.id()).expect("touch"));
    assert_eq!(version(&store, &s), v + 1, "two days is not");
}

#[test]
fn the_lifetime_survives_update_regenerate_and_a_restart() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = with_lifetime(&store, remember_me());
    store
        .update(s.id(), |s| s.insert("n", &1u32))
        .expect("update")
        .expect("live")
        .expect("insert");
    s = store.load(s.id()).expect("load").expect("live"); // with the update's value
    store.regenerate(&mut s).expect("regenerate");
    assert_eq!(s.lifetime(), remember_me());
    drop(store);
    let store = f.open();
    f.clock.advance(10 * DAY);
    let loaded = store
        .load(s.id())
        .expect("load")
        .expect("live after a restart");
    assert_eq!(loaded.lifetime(), remember_me());
    assert_eq!(loaded.get::<u32>("n").expect("get"), Some(1));
    let listed = {
        let mut t = loaded.clone();
        t.set_user(Some("ann"));
        store.save(&t).expect("save");
        store.sessions_of("ann").expect("list")
    };
    assert_eq!(listed[0].expires_at, f.clock.now() + 30 * DAY);
}

#[test]
fn the_default_lifetime_returns_a_session_to_the_store_timeouts() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = with_lifetime(&store, remember_me());
    s.set_lifetime(Lifetime::default());
    store.save(&s).expect("save");
    assert_eq!(
        store.load(s.id()).expect("load").expect("live").lifetime(),
        Lifetime::default()
    );
    f.clock.advance(IDLE + MINUTE);
    assert!(!live(&store, &s));
}

#[test]
fn lifetimes_over_the_ceilings_are_cut_and_lower_ceilings_apply_at_once() {
    let f = Fixture::new();
    let store = f.open(); // ceilings: 90 days idle, 400 days absolute
    let greedy = Lifetime::default()
        .with_idle(Duration::MAX)
        .with_absolute(Duration::MAX);
    let s = with_lifetime(&store, greedy);
    let loaded = store.load(s.id()).expect("load").expect("live");
    assert_eq!(
        loaded.lifetime().idle(),
        Some(sessile::DEFAULT_MAX_IDLE_TIMEOUT)
    );
    assert_eq!(
        loaded.lifetime().absolute(),
        Some(sessile::DEFAULT_MAX_ABSOLUTE_TIMEOUT)
    );
    f.clock.advance(20 * DAY);
    assert!(live(&store, &s));
    drop(store);
    // A restart with a lower ceiling cuts the stored lifetime at once.
    let store = f.config().max_idle_timeout(7 * DAY).open().expect("open");
    assert!(!live(&store, &s), "idle 20 days > the new 7-day ceiling");
}

#[test]
fn ceilings_below_the_store_timeouts_are_refused() {
    let f = Fixture::new();
    let too_low = f.config().max_idle_timeout(MINUTE).open();
    assert!(matches!(too_low, Err(sessile::Error::InvalidConfig { .. })));
    let too_low = f.config().max_absolute_timeout(MINUTE).open();
    assert!(matches!(too_low, Err(sessile::Error::InvalidConfig { .. })));
    let ok: Result<Store, _> = f
        .config()
        .no_absolute_timeout()
        .max_absolute_timeout(DAY)
        .open();
    assert!(ok.is_ok());
}

/// A ceiling nobody set rises to the store's own timeouts (a store configured for a year of
/// inactivity opens, as it did before per-session lifetimes); one that was set and is too
/// low is refused, naming the setting to change.
#[test]
fn unset_ceilings_rise_to_the_store_timeouts_and_set_ones_are_checked() {
    let f = Fixture::new();
    let year = 365 * DAY;
    let store = f
        .config()
        .idle_timeout(year)
        .absolute_timeout(2 * year)
        .open()
        .expect("a year of idle time opens without touching the ceilings");
    let s = store.create().expect("create");
    f.clock.advance(300 * DAY);
    assert!(
        live(&store, &s),
        "the store's own year-long idle timeout holds"
    );
    drop(store);
    match f.config().idle_timeout(year).max_idle_timeout(DAY).open() {
        Err(sessile::Error::InvalidConfig { setting, reason }) => {
            assert_eq!(setting, "max_idle_timeout");
            assert!(reason.contains("idle_timeout"), "{reason}");
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn dump_and_restore_keep_the_lifetime() {
    let f = Fixture::new();
    let store = f.open();
    let s = with_lifetime(&store, remember_me());
    let dumps: Vec<_> = store.dump().collect::<Result<_, _>>().expect("dump");
    assert_eq!(dumps[0].lifetime(), remember_me());
    let other = tempfile::tempdir().expect("tempdir");
    let copy = Config::new(other.path().join("copy"))
        .clock(f.clock.clock())
        .purge_thread(false)
        .open()
        .expect("open");
    copy.restore(&dumps[0]).expect("restore");
    f.clock.advance(DAY);
    let loaded = copy
        .load(s.id())
        .expect("load")
        .expect("the same token works");
    assert_eq!(loaded.lifetime(), remember_me());
}

#[test]
fn a_lifetime_that_has_already_ended_ends_the_session_at_save() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    s.set_user(Some("ann"));
    store.save(&s).expect("save");
    let events = store.subscribe();
    f.clock.advance(10 * MINUTE);
    s.set_lifetime(Lifetime::default().with_absolute(MINUTE));
    assert!(matches!(store.save(&s), Err(sessile::Error::NotFound)));
    assert_eq!(
        events.try_recv().ok(),
        Some(sessile::Event::Expired {
            handle: s.handle(),
            user: Some("ann".into())
        }),
        "the end is reported with the session's user"
    );
    assert!(!live(&store, &s));
    assert!(
        store.inspect(&s.handle()).expect("inspect").is_none(),
        "deleted, not written dead"
    );
}

/// A save or update that ends a session because its lifetime has run out is a logout:
/// on disk before it returns. A copy of the folder taken right then (what a crash would
/// leave) does not hold the session.
#[test]
fn a_session_ended_by_its_lifetime_is_gone_from_disk_when_the_call_returns() {
    let Some(f) = Fixture::sled_only() else {
        return;
    };
    let store = f
        .config()
        .durability(sessile::Durability::Background)
        .open()
        .expect("open");
    let mut by_save = store.create().expect("create");
    let by_update = store.create().expect("create");
    store.flush().expect("flush"); // both are on disk
    f.clock.advance(10 * MINUTE);
    by_save.set_lifetime(Lifetime::default().with_absolute(MINUTE));
    assert!(matches!(
        store.save(&by_save),
        Err(sessile::Error::NotFound)
    ));
    let ended = store.update(by_update.id(), |s| {
        s.set_lifetime(Lifetime::default().with_absolute(MINUTE));
    });
    assert!(matches!(ended, Err(sessile::Error::NotFound)));

    // What is on disk now, while the store is open and before sled's own flush.
    let copy = f.dir.path().join("copy");
    copy_folder(&f.path(), &copy);
    let reopened = Config::new(&copy)
        .purge_thread(false)
        .clock(f.clock.clock())
        .open()
        .expect("open the copy");
    for (what, s) in [("save", &by_save), ("update", &by_update)] {
        assert!(
            reopened.inspect(&s.handle()).expect("inspect").is_none(),
            "the session ended by {what} is still on disk"
        );
    }
}

fn copy_folder(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_folder(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_rotation_to_a_lifetime_that_has_already_ended_ends_the_session() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    let old = s.id().clone();
    let events = store.subscribe();
    f.clock.advance(10 * MINUTE);
    s.set_lifetime(Lifetime::default().with_absolute(MINUTE));
    assert!(matches!(
        store.regenerate(&mut s),
        Err(sessile::Error::NotFound)
    ));
    assert_eq!(
        events.try_recv().ok(),
        Some(sessile::Event::Expired {
            handle: s.handle(),
            user: None
        }),
        "the end is reported"
    );
    assert_eq!(s.id(), &old, "the session keeps its token");
    assert!(store.load(&old).expect("load").is_none());
    assert_eq!(
        store.len().expect("len"),
        0,
        "no dead record under a new token either"
    );
    assert!(store.verify(false).expect("verify").is_consistent());
}

#[test]
fn a_restored_dump_from_the_future_cannot_outlive_the_store_timeouts() {
    let f = Fixture::new();
    let store = f.open();
    let s = store.create().expect("create");
    let mut dump = store.dump().next().expect("one").expect("dump");
    dump.created_at = u64::MAX;
    dump.last_seen = u64::MAX;
    dump.expires_at = u64::MAX;
    store.restore(&dump).expect("restore");
    assert!(live(&store, &s));
    f.clock.advance(IDLE + MINUTE);
    assert!(
        !live(&store, &s),
        "times from the future were brought back to now"
    );
}
