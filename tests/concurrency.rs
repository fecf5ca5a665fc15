//! Many threads on one session lose nothing.

mod support;

use support::Fixture;

#[test]
fn eight_threads_times_a_thousand_updates_count_exactly() {
    let f = Fixture::new();
    let store = f.open();
    let id = store.create().expect("create").id().clone();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    let done = store
                        .update(&id, |s| {
                            let n = s.get::<u64>("n").expect("get").unwrap_or(0);
                            s.insert("n", &(n + 1)).expect("insert");
                        })
                        .expect("update");
                    assert!(done.is_some());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let s = store.load(&id).expect("load").expect("live");
    assert_eq!(s.get::<u64>("n").expect("get"), Some(8000));
    drop(store);
    let store = f.open();
    let s = store.load(&id).expect("load").expect("live after reopen");
    assert_eq!(s.get::<u64>("n").expect("get"), Some(8000));
}

#[test]
fn destroy_racing_saves_is_never_undone() {
    let f = Fixture::new();
    let store = f.open();
    for _ in 0..50 {
        let mut s = store.create().expect("create");
        s.insert("x", &1u8).expect("insert");
        let saver = {
            let store = store.clone();
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let _ = store.save(&s);
                }
            })
        };
        store.destroy(s.id()).expect("destroy");
        saver.join().expect("saver");
        assert!(
            store.load(s.id()).expect("load").is_none(),
            "a save resurrected the session"
        );
    }
    assert!(store.verify(false).expect("verify").is_consistent());
}
