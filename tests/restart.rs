//! Sessions survive a restart; the folder is locked while open.

mod support;

use sessile::{Error, Store};
use support::Fixture;

#[test]
fn everything_is_there_after_reopen() {
    let f = Fixture::new();
    let mut tokens = Vec::new();
    {
        let store = f.open();
        for i in 0..50u32 {
            let mut s = store.create().expect("create");
            s.insert("i", &i).expect("insert");
            if i % 5 == 0 {
                s.set_user(Some("alice"));
            }
            store.save(&s).expect("save");
            tokens.push((s.id().to_string(), i));
        }
        let gone = store.create().expect("create");
        store.destroy(gone.id()).expect("destroy");
        tokens.push((gone.id().to_string(), u32::MAX));
    }
    let store = f.open();
    for (token, i) in &tokens {
        let found = store.load(&token.parse().expect("parse")).expect("load");
        if *i == u32::MAX {
            assert!(found.is_none(), "destroyed session came back");
            continue;
        }
        let s = found.expect("session survived restart");
        assert_eq!(s.get::<u32>("i").expect("get"), Some(*i));
        assert_eq!(s.user(), (i % 5 == 0).then_some("alice"));
    }
    assert_eq!(store.len().expect("len"), 50);
    assert_eq!(store.sessions_of("alice").expect("list").len(), 10);
    assert!(store.verify(false).expect("verify").is_consistent());
}

#[test]
fn second_open_of_an_open_folder_is_locked_and_names_it() {
    let Some(f) = Fixture::sled_only() else {
        return;
    };
    let store = f.open();
    match f.config().open() {
        Err(Error::Locked { path }) => assert_eq!(path, f.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    let msg = Store::open(f.path()).expect_err("locked").to_string();
    assert!(msg.contains("already open"), "{msg}");
    drop(store);
    f.open();
}

#[test]
fn dropping_one_clone_keeps_the_store_open() {
    let Some(f) = Fixture::sled_only() else {
        return;
    };
    let store = f.open();
    let clone = store.clone();
    drop(store);
    assert!(matches!(f.config().open(), Err(Error::Locked { .. })));
    clone.create().expect("still usable");
    drop(clone);
    f.open();
}

#[test]
fn store_with_cleanup_thread_reopens_after_drop() {
    let f = Fixture::new();
    for _ in 0..3 {
        let store = f.base_config().open().expect("open");
        store.create().expect("create");
    }
    assert_eq!(f.base_config().open().expect("open").len().expect("len"), 3);
}

#[cfg(unix)]
#[test]
fn new_folder_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let Some(f) = Fixture::sled_only() else {
        return;
    };
    drop(f.open());
    let mode = std::fs::metadata(f.path())
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}
