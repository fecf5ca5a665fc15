//! Overlapping requests lose nothing: two copies of one session, changed and saved in
//! turn or at once, keep each other's changes (a save writes what its copy changed, onto
//! the version stored at that moment), and nothing brings back what a revoke ended.
//!
//! On Redis (`SESSILE_TEST_BACKEND=redis`) the second copy goes through a second `Store`
//! on the same namespace, as a second server would. Every wait is bounded.

mod support;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use sessile::{Error, Lifetime, Session, Store};
use support::{Fixture, on_redis};

const TIMEOUT: Duration = Duration::from_secs(60);

fn rounds(default: usize) -> usize {
    std::env::var("SESSILE_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fixture's store and a second one for the other request: on Redis a second store
/// on the same namespace (another server), on sled the same store.
fn two(f: &Fixture) -> (Store, Store) {
    let first = f.open();
    let second = if on_redis() { f.open() } else { first.clone() };
    (first, second)
}

fn load(store: &Store, s: &Session) -> Session {
    store.load(s.id()).expect("load").expect("live")
}

fn value(s: &Session, key: &str) -> Option<u32> {
    s.get::<u32>(key).expect("decode")
}

/// Runs `jobs` on threads released together by a barrier; fails on a hang.
fn together<T: Send + 'static>(jobs: Vec<Box<dyn FnOnce() -> T + Send>>) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let (tx, rx) = mpsc::channel();
    let n = jobs.len();
    for (i, job) in jobs.into_iter().enumerate() {
        let barrier = Arc::clone(&barrier);
        let tx = tx.clone();
        std::thread::spawn(move || {
            barrier.wait();
            let _ = tx.send((i, job()));
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for _ in 0..n {
        match rx.recv_timeout(TIMEOUT) {
            Ok((i, v)) => out[i] = Some(v),
            Err(RecvTimeoutError::Timeout) => panic!("a racing thread hung"),
            Err(RecvTimeoutError::Disconnected) => panic!("a racing thread panicked"),
        }
    }
    out.into_iter().map(|v| v.expect("every result")).collect()
}

#[test]
fn two_tabs_changing_different_keys_keep_both() {
    let f = Fixture::new();
    let (a, b) = two(&f);
    let mut s = a.create().expect("create");
    s.insert("theme", &1u32).expect("insert");
    a.save(&s).expect("save");
    let mut tab1 = load(&a, &s);
    let mut tab2 = load(&b, &s);
    tab1.insert("cart", &7u32).expect("insert");
    tab2.insert("theme", &2u32).expect("insert");
    a.save(&tab1).expect("save tab 1");
    b.save(&tab2).expect("save tab 2");
    let now = load(&a, &s);
    assert_eq!(
        value(&now, "cart"),
        Some(7),
        "the first save's key survives"
    );
    assert_eq!(value(&now, "theme"), Some(2));
    assert_eq!(now.len(), 2);
}

#[test]
fn the_same_key_saved_twice_ends_with_the_later_save() {
    let f = Fixture::new();
    let (a, b) = two(&f);
    let s = a.create().expect("create");
    let mut first = load(&a, &s);
    let mut second = load(&b, &s);
    first.insert("k", &1u32).expect("insert");
    second.insert("k", &2u32).expect("insert");
    b.save(&second).expect("save");
    a.save(&first).expect("save");
    assert_eq!(value(&load(&b, &s), "k"), Some(1));
}

#[test]
fn a_removal_and_a_change_of_another_key_both_land_and_untouched_keys_are_not_put_back() {
    let f = Fixture::new();
    let (a, b) = two(&f);
    let mut s = a.create().expect("create");
    s.insert("flash", &1u32).expect("insert");
    s.insert("n", &1u32).expect("insert");
    a.save(&s).expect("save");
    let mut reader = load(&a, &s); // shows the flash message and removes it
    let mut counter = load(&b, &s);
    counter.insert("n", &2u32).expect("insert");
    assert!(reader.remove("flash"));
    b.save(&counter).expect("save");
    a.save(&reader).expect("save");
    let now = load(&a, &s);
    assert_eq!(value(&now, "flash"), None);
    assert_eq!(
        value(&now, "n"),
        Some(2),
        "the reader did not put back n = 1"
    );
    // And the other order: a save of an untouched key never restores a removed one.
    let mut remover = load(&a, &s);
    let mut other = load(&b, &s);
    assert!(remover.remove("n"));
    other.insert("x", &1u32).expect("insert");
    a.save(&remover).expect("save");
    b.save(&other).expect("save");
    let now = load(&a, &s);
    assert_eq!(
        value(&now, "n"),
        None,
        "a copy that still had n did not bring it back"
    );
    assert_eq!(value(&now, "x"), Some(1));
}

#[test]
fn a_clear_removes_every_value_stored_at_its_save() {
    let f = Fixture::new();
    let (a, b) = two(&f);
    let mut s = a.create().expect("create");
    s.insert("old", &1u32).expect("insert");
    a.save(&s).expect("save");
    let mut clearing = load(&a, &s);
    let mut adding = load(&b, &s);
    adding.insert("added", &2u32).expect("insert");
    b.save(&adding).expect("save");
    clearing.clear();
    clearing.insert("fresh", &3u32).expect("insert");
    a.save(&clearing).expect("save");
    let now = load(&a, &s);
    assert_eq!(now.keys().collect::<Vec<_>>(), ["fresh"]);
}

#[test]
fn a_login_or_logout_is_not_undone_by_a_request_that_loaded_before_it() {
    let f = Fixture::new();
    let (a, b) = two(&f);
    let s = a.create().expect("create");
    let mut login = load(&a, &s);
    let mut cart = load(&b, &s);
    login.set_user(Some("ann"));
    a.save(&login).expect("login");
    cart.insert("cart", &1u32).expect("insert");
    b.save(&cart).expect("save the cart");
    let now = load(&a, &s);
    assert_eq!(now.user(), Some("ann"), "the cart save kept the login");
    assert_eq!(value(&now, "cart"), Some(1));
    assert_eq!(a.sessions_of("ann").expect("list").len(), 1);

    let mut logout = load(&a, &s);
    let mut late = load(&b, &s);
    logout.set_user(None);
    logout.clear();
    a.save(&logout).expect("logout");
    late.insert("late", &1u32).expect("insert");
    b.save(&late).expect("a late save");
    let now = load(&a, &s);
    assert_eq!(now.user(), None, "the late save did not log ann back in");
    assert!(a.sessions_of("ann").expect("list").is_empty());
    assert_eq!(
        value(&now, "cart"),
        None,
        "the late save did not put the cart back"
    );
    assert_eq!(value(&now, "late"), Some(1));
}

#[test]
fn a_lifetime_set_by_one_request_stays_through_anothers_save() {
    let f = Fixture::new();
    let (a, b) = two(&f);
    let s = a.create().expect("create");
    let mut remember = load(&a, &s);
    let mut other = load(&b, &s);
    let long = Lifetime::default().with_idle(Duration::from_secs(7 * 24 * 3600));
    remember.set_lifetime(long);
    a.save(&remember).expect("save");
    other.insert("x", &1u32).expect("insert");
    b.save(&other).expect("save");
    assert_eq!(
        load(&a, &s).lifetime().idle(),
        long.idle(),
        "the other save kept the lifetime"
    );
}

#[test]
fn a_save_of_a_destroyed_session_writes_nothing() {
    let f = Fixture::new();
    let (a, b) = two(&f);
    let s = a.create().expect("create");
    let mut copy = load(&b, &s);
    a.destroy(s.id()).expect("destroy");
    copy.insert("x", &1u32).expect("insert");
    assert!(matches!(b.save(&copy), Err(Error::NotFound)));
    assert!(a.load(s.id()).expect("load").is_none());
}

#[test]
fn a_regeneration_of_an_old_copy_keeps_what_others_saved() {
    let f = Fixture::new();
    let (a, b) = two(&f);
    let s = a.create().expect("create");
    let mut rotating = load(&a, &s);
    let mut other = load(&b, &s);
    other.insert("cart", &1u32).expect("insert");
    b.save(&other).expect("save");
    rotating.set_user(Some("ann"));
    a.regenerate(&mut rotating).expect("regenerate");
    let now = load(&a, &rotating);
    assert_eq!(now.user(), Some("ann"));
    assert_eq!(value(&now, "cart"), Some(1));
    // A later save of the regenerated copy keeps it too.
    rotating.insert("more", &2u32).expect("insert");
    a.save(&rotating).expect("save");
    let now = load(&a, &rotating);
    assert_eq!(value(&now, "cart"), Some(1));
    assert_eq!(value(&now, "more"), Some(2));
}

#[test]
fn eight_overlapping_requests_each_setting_a_key_lose_none() {
    let f = Fixture::new();
    let (a, b) = two(&f);
    for _ in 0..rounds(40) {
        let s = a.create().expect("create");
        let jobs = (0..8u32)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let s = s.clone();
                Box::new(move || {
                    let mut copy = load(&store, &s);
                    copy.insert(&format!("k{i}"), &i).expect("insert");
                    store.save(&copy)
                }) as Box<dyn FnOnce() -> Result<(), Error> + Send>
            })
            .collect();
        for saved in together(jobs) {
            saved.expect("save");
        }
        let now = load(&a, &s);
        for i in 0..8u32 {
            assert_eq!(value(&now, &format!("k{i}")), Some(i), "key k{i} was lost");
        }
    }
}

/// Overlapping saves racing an operation that reads and then writes: whatever the
/// order, every save that returned `Ok` is in the session if it lives on, and a
/// revoked login never comes back.
#[test]
fn overlapping_saves_racing_revoke_all_rotation_and_the_cap() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let capped = if on_redis() {
        support::backend::config_at(dir.path().join("capped"))
    } else {
        sessile::Config::new(dir.path().join("capped"))
    }
    .purge_thread(false)
    .max_sessions_per_user(1)
    .open()
    .expect("open");
    let (a, b) = two(&f);
    for round in 0..rounds(30) {
        // Against revoke-all: afterwards nothing of ann's is live.
        let mut s = a.create().expect("create");
        s.set_user(Some("ann"));
        a.save(&s).expect("login");
        let saves = saving_jobs(&a, &b, &s, 4);
        let revoker = a.clone();
        let mut jobs = saves;
        jobs.push(Box::new(move || {
            revoker.destroy_user("ann", None).map(|_| String::new())
        }));
        let _ = together(jobs);
        assert!(a.load(s.id()).expect("load").is_none(), "round {round}");
        assert!(a.sessions_of("ann").expect("list").is_empty());

        // Against rotation: every save that landed before the move is carried over.
        let s = a.create().expect("create");
        let mut jobs = saving_jobs(&a, &b, &s, 4);
        let (tx, rx) = mpsc::channel();
        let rotator = a.clone();
        let mut rotating = s.clone();
        jobs.push(Box::new(move || {
            rotator.regenerate(&mut rotating)?;
            let _ = tx.send(rotating);
            Ok(String::new())
        }));
        let results = together(jobs);
        let moved = rx.recv_timeout(TIMEOUT).expect("regenerated");
        let now = load(&a, &moved);
        for saved in results.into_iter().flatten().filter(|k| !k.is_empty()) {
            assert!(now.contains_key(&saved), "round {round}: {saved} was lost");
        }

        // Against the cap: the session the cap ended stays ended.
        let mut first = capped.create().expect("create");
        first.set_user(Some("bob"));
        capped.save(&first).expect("login");
        let mut jobs = saving_jobs(&capped, &capped, &first, 4);
        let other = capped.clone();
        jobs.push(Box::new(move || {
            let mut second = other.create()?;
            second.set_user(Some("bob"));
            other.save(&second).map(|()| String::new())
        }));
        let _ = together(jobs);
        assert!(capped.load(first.id()).expect("load").is_none());
        assert_eq!(capped.sessions_of("bob").expect("list").len(), 1);
        capped.destroy_user("bob", None).expect("reset");
    }
}

/// `n` jobs that each load `s`, set their own key and save: each returns the key it
/// saved (`Ok` only if the save landed).
fn saving_jobs(
    a: &Store,
    b: &Store,
    s: &Session,
    n: u32,
) -> Vec<Box<dyn FnOnce() -> Result<String, Error> + Send>> {
    (0..n)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let s = s.clone();
            Box::new(move || {
                let key = format!("k{i}");
                let Some(mut copy) = store.load(s.id())? else {
                    return Err(Error::NotFound);
                };
                copy.insert(&key, &i)?;
                store.save(&copy).map(|()| key)
            }) as Box<dyn FnOnce() -> Result<String, Error> + Send>
        })
        .collect()
}

#[test]
fn a_copy_read_before_a_restore_is_applied_as_changes_after_it() {
    let f = Fixture::new();
    let (a, _) = two(&f);
    let mut s = a.create().expect("create");
    s.insert("k", &1u32).expect("insert");
    a.save(&s).expect("save"); // version 2
    let dump = a.inspect(&s.handle()).expect("inspect").expect("dumped");
    let mut newer = load(&a, &s);
    newer.insert("k", &2u32).expect("insert");
    a.save(&newer).expect("save"); // version 3
    let mut stale = load(&a, &s); // a copy of version 3
    a.restore(&dump).expect("restore"); // back to k = 1
    let mut other = load(&a, &s);
    other.insert("x", &1u32).expect("insert");
    a.save(&other).expect("save");
    stale.insert("y", &1u32).expect("insert");
    a.save(&stale).expect("save");
    let now = load(&a, &s);
    assert_eq!(
        value(&now, "x"),
        Some(1),
        "the stale copy was written whole"
    );
    assert_eq!(value(&now, "y"), Some(1));
    assert_eq!(value(&now, "k"), Some(1), "the stale copy put back k = 2");
}
