//! Concurrency stress: many threads mix update, touch, load, save, destroy, regenerate and
//! purge on overlapping sessions while the purge thread runs and expired sessions are
//! purged. Afterwards nothing has panicked, `verify` finds the invariants intact, every
//! counter incremented through `update` is exact, and no destroyed session is back.
//! Bounded by an operation count and a wall-clock budget (about two seconds).

#[path = "backend/mod.rs"]
mod backend;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sessile::{Error, ManualClock, Session, SessionId};

const THREADS: usize = 8;
const COUNTERS: usize = 4;
const OPS_PER_THREAD: usize = 4_000;
const BUDGET: Duration = Duration::from_secs(2);

fn read_n(s: &Session) -> u64 {
    s.get_bytes("n")
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

#[test]
fn concurrent_mixed_operations_keep_the_invariants_and_exact_counters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let store = backend::config_at(dir.path().join("store"))
        .idle_timeout(Duration::from_secs(60))
        .touch_granularity(Duration::ZERO)
        .purge_interval(Duration::from_millis(5))
        .purge_batch(8)
        .cache_entries(64)
        .clock(clock.clock())
        .open()
        .expect("open");

    // Sessions that expire halfway through, for the purges and the purge thread.
    let doomed: Vec<SessionId> = (0..200)
        .map(|_| store.create().expect("create").id().clone())
        .collect();
    clock.advance(Duration::from_secs(30));
    // Counters: only update, touch and load touch them, so every increment must count.
    let counters: Vec<SessionId> = (0..COUNTERS)
        .map(|_| store.create().expect("create").id().clone())
        .collect();
    // Victims: everything at once, including destroy and regenerate.
    let victims: Arc<Mutex<Vec<Session>>> = Arc::new(Mutex::new(
        (0..32).map(|_| store.create().expect("create")).collect(),
    ));
    let increments: Arc<Vec<AtomicU64>> =
        Arc::new((0..COUNTERS).map(|_| AtomicU64::new(0)).collect());
    let destroyed: Arc<Mutex<Vec<SessionId>>> = Arc::new(Mutex::new(Vec::new()));
    let start = Arc::new(Barrier::new(THREADS + 1));
    let deadline = Instant::now() + BUDGET;

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, counters, victims, increments, destroyed, start) = (
                store.clone(),
                counters.clone(),
                Arc::clone(&victims),
                Arc::clone(&increments),
                Arc::clone(&destroyed),
                Arc::clone(&start),
            );
            std::thread::spawn(move || {
                let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ ((t as u64 + 1) * 0x9E37_79B9);
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                start.wait();
                let mut ops = 0;
                while ops < OPS_PER_THREAD && Instant::now() < deadline {
                    ops += 1;
                    let r = next();
                    let c = (r >> 8) as usize % COUNTERS;
                    match r % 16 {
                        0..=5 => {
                            let got = store
                                .update(&counters[c], |s| {
                                    let n = read_n(s) + 1;
                                    s.insert_bytes("n", n.to_le_bytes().to_vec()).map(|()| n)
                                })
                                .expect("update");
                            let n = got.expect("counter live").expect("insert");
                            assert!(n > 0);
                            increments[c].fetch_add(1, Ordering::Relaxed);
                        }
                        6 => assert!(store.touch(&counters[c]).expect("touch")),
                        7 => assert!(store.load(&counters[c]).expect("load").is_some()),
                        8 | 9 => {
                            // update, touch or load a victim that may be gone meanwhile.
                            let id = {
                                let v = victims.lock();
                                (!v.is_empty())
                                    .then(|| v[(r >> 16) as usize % v.len()].id().clone())
                            };
                            if let Some(id) = id {
                                // On Redis a revoke-all does not wait for an update, which
                                // then finds its session gone: NotFound.
                                match store.update(&id, |s| s.insert("x", &r)) {
                                    Ok(_) => {}
                                    Err(Error::NotFound) if backend::on_redis() => {}
                                    Err(e) => panic!("update: {e}"),
                                }
                                let _ = store.touch(&id).expect("touch");
                                let _ = store.load(&id).expect("load");
                            }
                        }
                        10 => {
                            let s = {
                                let v = victims.lock();
                                (!v.is_empty()).then(|| v[(r >> 16) as usize % v.len()].clone())
                            };
                            if let Some(mut s) = s {
                                s.set_user(Some(["a", "b"][(r >> 20) as usize % 2]));
                                match store.save(&s) {
                                    Ok(()) | Err(Error::NotFound) => {}
                                    Err(e) => panic!("save: {e}"),
                                }
                            }
                        }
                        11 => {
                            let s = {
                                let mut v = victims.lock();
                                (!v.is_empty()).then(|| {
                                    let i = (r >> 16) as usize % v.len();
                                    v.swap_remove(i)
                                })
                            };
                            if let Some(s) = s {
                                store.destroy(s.id()).expect("destroy");
                                destroyed.lock().push(s.id().clone());
                                victims.lock().push(store.create().expect("create"));
                            }
                        }
                        12 | 13 => {
                            let s = {
                                let mut v = victims.lock();
                                (!v.is_empty()).then(|| {
                                    let i = (r >> 16) as usize % v.len();
                                    v.swap_remove(i)
                                })
                            };
                            if let Some(mut s) = s {
                                let old = s.id().clone();
                                match store.regenerate(&mut s) {
                                    Ok(()) => {
                                        destroyed.lock().push(old);
                                        victims.lock().push(s);
                                    }
                                    Err(Error::NotFound) => victims.lock().push(s),
                                    Err(e) => panic!("regenerate: {e}"),
                                }
                            }
                        }
                        14 => {
                            store.purge_expired().expect("purge");
                        }
                        _ => {
                            let _ = store.sessions_of("a").expect("sessions_of");
                            let _ = store.destroy_user("b", None).expect("destroy_user");
                        }
                    }
                }
                ops
            })
        })
        .collect();

    start.wait();
    // Halfway through, the doomed sessions expire under the workers' feet.
    std::thread::sleep(BUDGET / 4);
    clock.advance(Duration::from_secs(31));
    let mut total_ops = 0;
    for w in workers {
        total_ops += w.join().expect("a worker panicked");
    }
    assert!(
        total_ops > THREADS * 50,
        "the workers barely ran: {total_ops}"
    );

    let report = store.verify(false).expect("verify");
    assert!(report.is_consistent(), "{report:?}");
    assert_eq!(report.quarantined, 0);
    assert_eq!(store.stats().purge_errors, 0);
    for (id, expected) in counters.iter().zip(increments.iter()) {
        let s = store.load(id).expect("load").expect("counter live");
        assert_eq!(
            read_n(&s),
            expected.load(Ordering::Relaxed),
            "lost increments"
        );
    }
    for id in destroyed.lock().iter() {
        assert!(
            store.load(id).expect("load").is_none(),
            "destroyed session is back"
        );
    }
    for id in &doomed {
        assert!(
            store.load(id).expect("load").is_none(),
            "expired session loaded"
        );
    }
    store.purge_expired().expect("purge");
    let report = store.verify(false).expect("verify");
    assert!(report.is_consistent(), "{report:?}");
    assert_eq!(report.expired, 0, "purge left expired records: {report:?}");
    assert_eq!(report.stale_expiry_entries, 0, "{report:?}");
}

/// Logins under a per-user cap, reassignments between users, rotations and revoke-all
/// race for about two seconds. Afterwards every user has at most the cap, the per-user
/// index agrees with the records, and every session the revoker saw before a revoke of
/// its user is dead under whatever token it had rotated to.
#[test]
fn revokes_caps_and_rotations_keep_per_user_counts() {
    use std::collections::HashMap;

    use sessile::SessionHandle;

    const CAP: usize = 2;
    // "a" and "b" trade sessions; "r" is revoked over and over (and never traded, so a
    // session seen as r's before a revoke must be dead after it).
    const USERS: [&str; 3] = ["a", "b", "r"];
    let dir = tempfile::tempdir().expect("tempdir");
    let store = backend::config_at(dir.path().join("store"))
        .max_sessions_per_user(CAP)
        .purge_thread(false)
        .cache_entries(16)
        .open()
        .expect("open");
    let sessions: Arc<Mutex<Vec<Session>>> = Arc::default();
    // old handle -> new handle, for every rotation that completed
    let rotated: Arc<Mutex<HashMap<SessionHandle, SessionHandle>>> = Arc::default();
    // handles seen as r's right before a revoke of r
    let revoked: Arc<Mutex<Vec<SessionHandle>>> = Arc::default();
    let start = Arc::new(Barrier::new(5));
    let deadline = Instant::now() + BUDGET;
    let spawn = |role: usize| {
        let (store, sessions, rotated, revoked, start) = (
            store.clone(),
            Arc::clone(&sessions),
            Arc::clone(&rotated),
            Arc::clone(&revoked),
            Arc::clone(&start),
        );
        std::thread::spawn(move || {
            start.wait();
            let mut n = 0usize;
            while Instant::now() < deadline && n < 20_000 {
                n += 1;
                let pick =
                    |v: &mut Vec<Session>| (!v.is_empty()).then(|| v.swap_remove(n % v.len()));
                match role {
                    // logins
                    0 => {
                        let mut s = store.create().expect("create");
                        s.set_user(Some(USERS[n % 3]));
                        store.save(&s).expect("save of a fresh session");
                        sessions.lock().push(s);
                    }
                    // rotations
                    1 => {
                        let Some(mut s) = pick(&mut sessions.lock()) else {
                            continue;
                        };
                        let old = s.handle();
                        match store.regenerate(&mut s) {
                            Ok(()) => {
                                rotated.lock().insert(old, s.handle());
                                sessions.lock().push(s);
                            }
                            Err(Error::NotFound) => {} // evicted or revoked meanwhile
                            Err(e) => panic!("regenerate: {e}"),
                        }
                    }
                    // a and b trade sessions
                    2 => {
                        let Some(mut s) = pick(&mut sessions.lock()) else {
                            continue;
                        };
                        if s.user() != Some("r") {
                            s.set_user(Some(if s.user() == Some("a") { "b" } else { "a" }));
                            match store.save(&s) {
                                Ok(()) | Err(Error::NotFound) => {}
                                Err(e) => panic!("save: {e}"),
                            }
                        }
                        sessions.lock().push(s);
                    }
                    // revoke-all of r
                    _ => {
                        let before = store.sessions_of("r").expect("sessions_of");
                        revoked.lock().extend(before.iter().map(|i| i.handle));
                        store.destroy_user("r", None).expect("destroy_user");
                    }
                }
            }
        })
    };
    let workers: Vec<_> = (0..4).map(spawn).collect();
    start.wait();
    for w in workers {
        w.join().expect("a worker panicked");
    }

    // Ground truth from the records themselves, through the sessions the test holds
    // (a session it no longer holds was dropped after an error: it is not counted).
    let mut live_per_user: HashMap<String, usize> = HashMap::new();
    for s in sessions.lock().iter() {
        if let Some(loaded) = store.load(s.id()).expect("load") {
            let user = loaded.user().expect("every session has a user").to_owned();
            *live_per_user.entry(user).or_default() += 1;
        }
    }
    for user in USERS {
        let listed = store.sessions_of(user).expect("sessions_of").len();
        assert!(listed <= CAP, "{user} has {listed} sessions, cap {CAP}");
        let held = live_per_user.get(user).copied().unwrap_or(0);
        assert!(
            held <= listed,
            "{user}: {held} live sessions held, {listed} listed"
        );
    }
    let rotated = rotated.lock();
    for handle in revoked.lock().iter() {
        let mut last = *handle;
        while let Some(next) = rotated.get(&last) {
            last = *next;
        }
        assert!(
            store.inspect(&last).expect("inspect").is_none(),
            "a session of r seen before a revoke is still stored as {last}"
        );
    }
    assert!(store.verify(false).expect("verify").is_consistent());
}
