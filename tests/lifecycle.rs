//! The basic life of a session: create, fill, save, load, touch, update, destroy.

mod support;

use sessile::{Error, SessionId};
use support::Fixture;

#[test]
fn create_save_load_round_trips_typed_values() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    assert!(s.is_empty());
    s.insert("cart", &vec![1u32, 2]).expect("insert");
    s.insert("name", "ada").expect("insert");
    s.insert("flag", &true).expect("insert");
    store.save(&s).expect("save");

    let id: SessionId = s.id().to_string().parse().expect("parse");
    let loaded = store.load(&id).expect("load").expect("present");
    assert_eq!(
        loaded.get::<Vec<u32>>("cart").expect("get"),
        Some(vec![1, 2])
    );
    assert_eq!(
        loaded.get::<String>("name").expect("get").as_deref(),
        Some("ada")
    );
    assert_eq!(loaded.get::<bool>("flag").expect("get"), Some(true));
    assert_eq!(loaded.get::<u8>("missing").expect("get"), None);
    assert_eq!(loaded.keys().collect::<Vec<_>>(), ["cart", "flag", "name"]);
    assert_eq!(loaded.created_at(), s.created_at());
}

#[test]
fn unsaved_changes_are_not_visible() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    s.insert("k", &1u8).expect("insert");
    let loaded = store.load(s.id()).expect("load").expect("present");
    assert!(loaded.is_empty());
}

#[test]
fn remove_and_clear() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    s.insert("a", &1u8).expect("insert");
    s.insert("b", &2u8).expect("insert");
    assert!(s.remove("a"));
    assert!(!s.remove("a"));
    store.save(&s).expect("save");
    let loaded = store.load(s.id()).expect("load").expect("present");
    assert_eq!(loaded.keys().collect::<Vec<_>>(), ["b"]);
    s.clear();
    assert!(s.is_empty());
    store.save(&s).expect("save");
    assert!(
        store
            .load(s.id())
            .expect("load")
            .expect("present")
            .is_empty()
    );
}

#[test]
fn wrong_type_is_a_decode_error_and_other_values_survive() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    s.insert("text", "not a number at all").expect("insert");
    s.insert("n", &7u64).expect("insert");
    store.save(&s).expect("save");
    let loaded = store.load(s.id()).expect("load").expect("present");
    assert!(matches!(
        loaded.get::<u64>("text"),
        Err(Error::Decode { .. })
    ));
    assert_eq!(loaded.get::<u64>("n").expect("get"), Some(7));
}

#[test]
fn unknown_token_is_never_adopted() {
    let f = Fixture::new();
    let store = f.open();
    let made_up: SessionId = "A".repeat(43).parse().expect("well-formed");
    assert!(store.load(&made_up).expect("load").is_none());
    assert!(!store.touch(&made_up).expect("touch"));
    assert_eq!(store.update(&made_up, |_| ()).expect("update"), None);
    assert!(!store.destroy(&made_up).expect("destroy"));
    assert_eq!(store.len().expect("len"), 0);
}

#[test]
fn destroy_is_final_and_save_never_resurrects() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    s.insert("k", &1u8).expect("insert");
    store.save(&s).expect("save");
    assert!(store.destroy(s.id()).expect("destroy"));
    assert!(!store.destroy(s.id()).expect("second destroy"));
    assert!(store.load(s.id()).expect("load").is_none());
    assert!(matches!(store.save(&s), Err(Error::NotFound)));
    assert!(store.load(s.id()).expect("load").is_none());
    assert!(!store.touch(s.id()).expect("touch"));
    assert_eq!(store.len().expect("len"), 0);
}

#[test]
fn update_changes_atomically_and_returns_the_closure_result() {
    let f = Fixture::new();
    let store = f.open();
    let s = store.create().expect("create");
    for expected in 1..=3u64 {
        let got = store
            .update(s.id(), |s| {
                let n = s.get::<u64>("n").expect("get").unwrap_or(0) + 1;
                s.insert("n", &n).expect("insert");
                n
            })
            .expect("update");
        assert_eq!(got, Some(expected));
    }
    let loaded = store.load(s.id()).expect("load").expect("present");
    assert_eq!(loaded.get::<u64>("n").expect("get"), Some(3));
}

#[test]
fn len_counts_live_sessions_only() {
    let f = Fixture::new();
    let store = f.open();
    assert!(store.is_empty().expect("is_empty"));
    let a = store.create().expect("create");
    store.create().expect("create");
    assert_eq!(store.len().expect("len"), 2);
    store.destroy(a.id()).expect("destroy");
    assert_eq!(store.len().expect("len"), 1);
    f.clock.advance(support::IDLE);
    assert_eq!(store.len().expect("len"), 0);
    assert!(store.is_empty().expect("is_empty"));
}

#[test]
fn store_handles_are_clone_send_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<sessile::Store>();
    let f = Fixture::new();
    let store = f.open();
    let other = store.clone();
    let s = store.create().expect("create");
    let id = s.id().clone();
    let found = std::thread::spawn(move || other.load(&id).expect("load").is_some())
        .join()
        .expect("thread");
    assert!(found);
}
