//! The per-user index: listing, revoking, limits, reassignment and expiry.

mod support;

use sessile::{Session, Store};
use support::{Fixture, IDLE};

fn login(store: &Store, user: &str) -> Session {
    let mut s = store.create().expect("create");
    s.set_user(Some(user));
    store.save(&s).expect("save");
    s
}

#[test]
fn sessions_of_lists_live_sessions_oldest_first() {
    let f = Fixture::new();
    let store = f.open();
    let a = login(&store, "alice");
    f.clock.advance(std::time::Duration::from_secs(1));
    let b = login(&store, "alice");
    login(&store, "bob");
    let list = store.sessions_of("alice").expect("list");
    assert_eq!(
        list.iter().map(|i| i.handle).collect::<Vec<_>>(),
        [a.handle(), b.handle()]
    );
    assert_eq!(list[0].created_at, a.created_at());
    assert!(list[0].expires_at > list[0].last_seen);
    assert!(
        store.sessions_of("al").expect("list").is_empty(),
        "prefix must not match"
    );
    assert!(store.sessions_of("nobody").expect("list").is_empty());
}

#[test]
fn destroy_user_with_and_without_except() {
    let f = Fixture::new();
    let store = f.open();
    let keep = login(&store, "alice");
    let others: Vec<_> = (0..3).map(|_| login(&store, "alice")).collect();
    let bob = login(&store, "bob");
    assert_eq!(
        store
            .destroy_user("alice", Some(keep.id()))
            .expect("revoke others"),
        3
    );
    for s in &others {
        assert!(store.load(s.id()).expect("load").is_none());
    }
    assert!(store.load(keep.id()).expect("load").is_some());
    assert_eq!(store.destroy_user("alice", None).expect("revoke all"), 1);
    assert!(store.load(keep.id()).expect("load").is_none());
    assert!(store.load(bob.id()).expect("load").is_some());
    assert!(store.sessions_of("alice").expect("list").is_empty());
    assert_eq!(store.destroy_user("alice", None).expect("again"), 0);
}

#[test]
fn destroy_by_handle_revokes_one_device() {
    let f = Fixture::new();
    let store = f.open();
    let a = login(&store, "alice");
    let b = login(&store, "alice");
    let handle = store.sessions_of("alice").expect("list")[0].handle;
    let (gone, kept) = if handle == a.handle() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(store.destroy_by_handle(&handle).expect("revoke"));
    assert!(!store.destroy_by_handle(&handle).expect("again"));
    assert!(store.load(gone.id()).expect("load").is_none());
    assert!(store.load(kept.id()).expect("load").is_some());
    // A handle cannot be used as a cookie.
    assert!(handle.to_string().parse::<sessile::SessionId>().is_err());
}

#[test]
fn max_sessions_per_user_evicts_the_oldest() {
    let f = Fixture::new();
    let store = f.config().max_sessions_per_user(2).open().expect("open");
    let first = login(&store, "alice");
    f.clock.advance(std::time::Duration::from_secs(1));
    let second = login(&store, "alice");
    f.clock.advance(std::time::Duration::from_secs(1));
    let bob = login(&store, "bob");
    let third = login(&store, "alice");
    assert!(
        store.load(first.id()).expect("load").is_none(),
        "oldest evicted"
    );
    assert!(store.load(second.id()).expect("load").is_some());
    assert!(store.load(third.id()).expect("load").is_some());
    assert!(store.load(bob.id()).expect("load").is_some());
    assert_eq!(store.sessions_of("alice").expect("list").len(), 2);
    // Saving an existing session again does not evict anything.
    store.save(&second).expect("save");
    assert_eq!(store.sessions_of("alice").expect("list").len(), 2);
}

#[test]
fn reassigning_moves_the_index_entry() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = login(&store, "alice");
    s.set_user(Some("bob"));
    store.save(&s).expect("save");
    assert!(store.sessions_of("alice").expect("list").is_empty());
    assert_eq!(store.sessions_of("bob").expect("list").len(), 1);
    s.set_user(None);
    store.save(&s).expect("save");
    assert!(store.sessions_of("bob").expect("list").is_empty());
    let report = store.verify(false).expect("verify");
    assert!(report.is_consistent());
    assert_eq!(report.stale_user_entries, 0);
}

#[test]
fn expiry_sweep_removes_user_entries() {
    let f = Fixture::new();
    let store = f.open();
    for _ in 0..5 {
        login(&store, "alice");
    }
    f.clock.advance(IDLE);
    assert!(
        store.sessions_of("alice").expect("list").is_empty(),
        "expired not listed"
    );
    assert_eq!(
        store.destroy_user("alice", None).expect("revoke"),
        0,
        "expired not counted"
    );
    store.purge_expired().expect("purge");
    let report = store.verify(false).expect("verify");
    assert_eq!(report.records, 0);
    assert_eq!(report.stale_user_entries, 0);
    assert_eq!(report.stale_expiry_entries, 0);
}

#[test]
fn update_can_assign_a_user() {
    let f = Fixture::new();
    let store = f.open();
    let s = store.create().expect("create");
    store
        .update(s.id(), |s| s.set_user(Some("carol")))
        .expect("update");
    assert_eq!(store.sessions_of("carol").expect("list").len(), 1);
}
