//! Atomic ID rotation.

mod support;

use sessile::Error;
use support::{ABSOLUTE, Fixture, IDLE};

#[test]
fn regenerate_moves_everything_to_a_fresh_token() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    s.insert("cart", &vec![1u32]).expect("insert");
    s.set_user(Some("alice"));
    store.save(&s).expect("save");
    let old = s.id().clone();
    let old_handle = s.handle();
    let created = s.created_at();
    f.clock.advance(IDLE / 2);
    s.insert("unsaved", &true).expect("insert");
    store.regenerate(&mut s).expect("regenerate");
    assert_ne!(s.id(), &old);
    assert!(
        store.load(&old).expect("load").is_none(),
        "old token still works"
    );
    assert!(!store.touch(&old).expect("touch"));
    let new = store.load(s.id()).expect("load").expect("new token works");
    assert_eq!(new.get::<Vec<u32>>("cart").expect("get"), Some(vec![1]));
    assert_eq!(new.get::<bool>("unsaved").expect("get"), Some(true));
    assert_eq!(new.user(), Some("alice"));
    assert_eq!(new.created_at(), created);
    let list = store.sessions_of("alice").expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].handle, s.handle());
    assert_ne!(list[0].handle, old_handle);
    assert!(store.verify(false).expect("verify").is_consistent());
}

#[test]
fn absolute_timeout_counts_from_the_original_creation() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    let created = s.created_at();
    let mut t = std::time::Duration::ZERO;
    while t + IDLE / 2 < ABSOLUTE {
        f.clock.advance(IDLE / 2);
        t += IDLE / 2;
        store.regenerate(&mut s).expect("regenerate");
    }
    assert_eq!(s.expires_at(), created + ABSOLUTE);
    f.clock.set(created + ABSOLUTE);
    assert!(store.load(s.id()).expect("load").is_none());
}

#[test]
fn regenerate_of_a_dead_session_fails_and_writes_nothing() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    store.destroy(s.id()).expect("destroy");
    let before = s.id().clone();
    assert!(matches!(store.regenerate(&mut s), Err(Error::NotFound)));
    assert_eq!(s.id(), &before);
    assert_eq!(store.verify(false).expect("verify").records, 0);

    let mut e = store.create().expect("create");
    f.clock.advance(IDLE);
    assert!(matches!(store.regenerate(&mut e), Err(Error::NotFound)));
}

#[test]
fn login_rotation_with_a_new_user_updates_the_index() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    s.set_user(Some("alice"));
    store.regenerate(&mut s).expect("regenerate");
    assert_eq!(
        store.sessions_of("alice").expect("list")[0].handle,
        s.handle()
    );
    s.set_user(Some("bob"));
    store.regenerate(&mut s).expect("regenerate");
    assert!(store.sessions_of("alice").expect("list").is_empty());
    assert_eq!(store.sessions_of("bob").expect("list").len(), 1);
}
