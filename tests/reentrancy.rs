//! `update` closures that call the store again: reads of other sessions, listings, writes,
//! and two updates whose closures write each other's session. None may hang. Every call
//! runs on a worker thread and a missing answer within the timeout fails the test (a hung
//! worker is left behind holding its store). `SESSILE_RACE_ROUNDS` overrides round counts.

#[path = "backend/mod.rs"]
mod backend;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use sessile::{Error, ManualClock, Session, Store};

const TIMEOUT: Duration = Duration::from_secs(5);

fn open(dir: &Path, cache_entries: Option<usize>) -> Store {
    let mut config = backend::config_at(dir.join("store"))
        .purge_thread(false)
        .clock(ManualClock::new().clock());
    if let Some(n) = cache_entries {
        config = config.cache_entries(n);
    }
    config.open().expect("open")
}

/// Runs `f` on a worker thread and waits at most `timeout` for its result.
fn within<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, &'static str> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(v) => Ok(v),
        Err(RecvTimeoutError::Timeout) => Err("hung"),
        Err(RecvTimeoutError::Disconnected) => Err("panicked"),
    }
}

#[test]
fn update_closure_loading_other_sessions_without_cache_finishes() {
    // Other sessions only: the same session is documented as forbidden. With the cache
    // off every load takes a stripe lock; 400 sessions over 1024 stripes collide often.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Some(0));
    let ids: Arc<Vec<_>> = Arc::new(
        (0..400)
            .map(|_| store.create().expect("create").id().clone())
            .collect(),
    );
    let progress = Arc::new(AtomicUsize::new(0));
    let outcome = within(Duration::from_secs(20), {
        let (store, ids, progress) = (store.clone(), Arc::clone(&ids), Arc::clone(&progress));
        move || {
            let mut bad = Vec::new();
            for (i, a) in ids.iter().take(40).enumerate() {
                let inner = store.update(a, |_| {
                    ids.iter()
                        .filter(|b| *b != a)
                        .filter(|b| !matches!(store.load(b), Ok(Some(_))))
                        .count()
                });
                if !matches!(inner, Ok(Some(0))) {
                    bad.push(format!(
                        "update {i}: {inner:?} (count of inner loads not Ok(Some))"
                    ));
                }
                progress.store(i + 1, Ordering::Release);
            }
            bad
        }
    });
    let done = progress.load(Ordering::Acquire);
    match outcome {
        Ok(bad) => assert!(bad.is_empty(), "inner loads failed: {bad:?}"),
        Err(why) => panic!("{why}: only {done} of 40 updates (each loading 399 others) finished"),
    }
}

#[test]
fn update_closure_listing_its_own_user_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), None);
    let mut s = store.create().expect("create");
    s.set_user(Some("alice"));
    store.save(&s).expect("save");
    let id = s.id().clone();
    let outcome = within(TIMEOUT, move || {
        store.update(&id, |_| store.sessions_of("alice").map(|l| l.len()))
    });
    match outcome {
        Ok(Ok(Some(Ok(1)))) => {}
        other => panic!("update(a, |_| sessions_of(a's user)): {other:?}"),
    }
}

#[test]
fn update_closure_calling_len_and_stats_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), None);
    let id = store.create().expect("create").id().clone();
    let outcome = within(TIMEOUT, move || {
        store.update(&id, |_| (store.len().ok(), store.stats().quarantined))
    });
    match outcome {
        Ok(Ok(Some((Some(1), 0)))) => {}
        other => panic!("update(a, |_| (len, stats)): {other:?}"),
    }
}

type Case = fn(&Store, &Session, &Session) -> String;

fn load_a_in_update_a(st: &Store, a: &Session, _: &Session) -> String {
    format!(
        "{:?}",
        st.update(a.id(), |_| st.load(a.id()).map(|s| s.is_some()))
    )
}

#[test]
fn update_closures_writing_the_store_return() {
    // Every nested write returns Error::WriteInsideUpdate at once; nested reads work and
    // see the stored session. Each case gets its own store, so one that hangs does not
    // block the next.
    let cases: [(&str, Case); 8] = [
        ("save(b)", |st, a, b| {
            format!("{:?}", st.update(a.id(), |_| st.save(b)))
        }),
        ("touch(b)", |st, a, b| {
            format!("{:?}", st.update(a.id(), |_| st.touch(b.id())))
        }),
        ("destroy(b)", |st, a, b| {
            format!("{:?}", st.update(a.id(), |_| st.destroy(b.id())))
        }),
        ("create()", |st, a, _| {
            format!(
                "{:?}",
                st.update(a.id(), |_| st.create().map(|s| s.handle()))
            )
        }),
        ("update(a) inside update(a)", |st, a, _| {
            format!("{:?}", st.update(a.id(), |_| st.update(a.id(), |_| ())))
        }),
        ("load(a) inside update(a)", load_a_in_update_a),
        ("load(a) inside update(a), cache off", load_a_in_update_a),
        ("save(a) inside update(a)", |st, a, _| {
            format!("{:?}", st.update(a.id(), |_| st.save(a)))
        }),
    ];
    let dirs: Vec<_> = cases
        .iter()
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let pending: Vec<_> = cases
        .iter()
        .zip(&dirs)
        .map(|(&(name, case), dir)| {
            let store = open(dir.path(), name.ends_with("cache off").then_some(0));
            let (a, b) = (store.create().expect("a"), store.create().expect("b"));
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(case(&store, &a, &b));
            });
            (name, rx)
        })
        .collect();
    // One deadline for all cases, so several hangs cost one timeout.
    let deadline = Instant::now() + TIMEOUT;
    let mut hung = Vec::new();
    for (name, rx) in pending {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(result) => {
                // A touch within the granularity needs no write, so it answers.
                let expected = if name.starts_with("load") || name.starts_with("touch") {
                    "Ok(Some(Ok(true)))"
                } else {
                    "Ok(Some(Err(WriteInsideUpdate)))"
                };
                assert_eq!(result, expected, "update(a, |_| {name})");
            }
            Err(e) => {
                println!("update(a, |_| {name}) -> {e:?}");
                hung.push(name);
            }
        }
    }
    assert!(
        hung.is_empty(),
        "did not return within {TIMEOUT:?}: {hung:?}"
    );
}

#[test]
fn crossed_updates_saving_each_others_session_do_not_deadlock() {
    let total = std::env::var("SESSILE_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), None);
    let (sa, sb) = (store.create().expect("a"), store.create().expect("b"));
    let mut refused = 0;
    for round in 0..total {
        let barrier = Arc::new(Barrier::new(2));
        let run = |mine: &Session, other: &Session| {
            let (store, barrier) = (store.clone(), Arc::clone(&barrier));
            let (mine, other) = (mine.id().clone(), other.clone());
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                barrier.wait();
                let _ = tx.send(store.update(&mine, |_| store.save(&other)));
            });
            rx
        };
        let (one, two) = (run(&sa, &sb), run(&sb, &sa));
        let deadline = Instant::now() + TIMEOUT;
        for rx in [one, two] {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(result) => {
                    assert!(
                        matches!(result, Ok(Some(Err(Error::WriteInsideUpdate)))),
                        "round {round}: {result:?}"
                    );
                    refused += 1;
                }
                Err(e) => panic!(
                    "crossed updates: round {round} of {total} did not finish within {TIMEOUT:?} ({e:?}); \
                     {round} rounds completed before the deadlock"
                ),
            }
        }
    }
    assert_eq!(
        refused,
        2 * total,
        "every nested save was refused, none hung"
    );
}

/// Two stores whose update closures write to each other: each closure's write is refused
/// at once instead of waiting for the stripe the other update holds.
#[test]
fn crossed_updates_on_two_stores_do_not_deadlock() {
    let (dx, dy) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (x, y) = (open(dx.path(), None), open(dy.path(), None));
    let (a, b) = (x.create().expect("a"), y.create().expect("b"));
    for round in 0..50 {
        let barrier = Arc::new(Barrier::new(2));
        let run = |mine: &Store, id: &Session, other: &Store, theirs: &Session| {
            let (mine, other, barrier) = (mine.clone(), other.clone(), Arc::clone(&barrier));
            let (id, theirs) = (id.id().clone(), theirs.clone());
            within(TIMEOUT, move || {
                barrier.wait();
                mine.update(&id, |_| other.save(&theirs))
            })
        };
        let (one, two) = std::thread::scope(|s| {
            let one = s.spawn(|| run(&x, &a, &y, &b));
            let two = s.spawn(|| run(&y, &b, &x, &a));
            (one.join().expect("join"), two.join().expect("join"))
        });
        for got in [one, two] {
            let got = got.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(
                matches!(got, Ok(Some(Err(Error::WriteInsideUpdate)))),
                "round {round}: {got:?}"
            );
        }
    }
}

/// An update whose closure runs for a while holds only its session's stripe: revokes of
/// other users (some of whom share the user lock stripe of the session's user) finish
/// while it runs.
#[test]
fn a_running_update_does_not_hold_up_revokes_of_other_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), None);
    let mut s = store.create().expect("create");
    s.set_user(Some("u"));
    store.save(&s).expect("save");
    let outcome = within(Duration::from_secs(20), {
        let store = store.clone();
        move || {
            store.update(s.id(), |_| {
                // 600 users over 256 user-lock stripes: several share u's.
                let revoker = store.clone();
                within(Duration::from_secs(10), move || {
                    (0..600)
                        .map(|i| revoker.destroy_user(&format!("other{i}"), None))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
        }
    });
    let inner = outcome
        .expect("the update returned")
        .expect("update")
        .expect("live");
    let revoked = inner.expect("the revokes finished while the update ran");
    assert!(revoked.expect("revokes").iter().all(|n| *n == 0));
}
