//! Races between the per-user operations: the per-user limit, `destroy_user`,
//! `destroy_by_handle`, `regenerate` and saves that reassign a session.
//!
//! Each racing test counts the rounds whose outcome is impossible under any serial order of
//! the racing calls and asserts that none failed. `SESSILE_RACE_ROUNDS` overrides every
//! test's round count. Every wait is bounded: a hang fails the test.

#[path = "backend/mod.rs"]
mod backend;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use sessile::{Error, ManualClock, Session, SessionHandle, SessionId, Store};

const TIMEOUT: Duration = Duration::from_secs(10);

fn rounds(default: usize) -> usize {
    std::env::var("SESSILE_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open(dir: &Path, clock: &ManualClock, max: Option<usize>) -> Store {
    let mut config = backend::config_at(dir.join("store"))
        .purge_thread(false)
        .clock(clock.clock());
    if let Some(n) = max {
        config = config.max_sessions_per_user(n);
    }
    config.open().expect("open")
}

fn assigned(store: &Store, user: &str) -> Session {
    let mut s = store.create().expect("create");
    s.set_user(Some(user));
    store.save(&s).expect("save");
    s
}

/// Starts `f` on its own thread once `barrier` releases it; the result comes on the channel.
fn spawn_after<T: Send + 'static>(
    barrier: &Arc<Barrier>,
    f: impl FnOnce() -> T + Send + 'static,
) -> mpsc::Receiver<T> {
    let (barrier, (tx, rx)) = (Arc::clone(barrier), mpsc::channel());
    std::thread::spawn(move || {
        barrier.wait();
        let _ = tx.send(f());
    });
    rx
}

/// The result of a racer, or a panic naming the round if it hung or panicked.
fn collect<T>(rx: &mpsc::Receiver<T>, round: usize) -> T {
    match rx.recv_timeout(TIMEOUT) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("round {round}: a racer hung for {TIMEOUT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("round {round}: a racer panicked"),
    }
}

type Job<T> = Box<dyn FnOnce() -> T + Send>;

/// Runs the jobs on their own threads, started together, and returns their results.
fn race<T: Send + 'static>(round: usize, jobs: Vec<Job<T>>) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let rxs: Vec<_> = jobs.into_iter().map(|j| spawn_after(&barrier, j)).collect();
    rxs.iter().map(|rx| collect(rx, round)).collect()
}

fn race2<A: Send + 'static, B: Send + 'static>(
    round: usize,
    a: impl FnOnce() -> A + Send + 'static,
    b: impl FnOnce() -> B + Send + 'static,
) -> (A, B) {
    let barrier = Arc::new(Barrier::new(2));
    let (ra, rb) = (spawn_after(&barrier, a), spawn_after(&barrier, b));
    (collect(&ra, round), collect(&rb, round))
}

/// Fails with "N of M rounds failed" and the first failing rounds, if any failed.
fn check(name: &str, failed: &[String], total: usize) {
    let shown: Vec<_> = failed.iter().take(15).collect();
    let n = failed.len();
    assert_eq!(
        n, 0,
        "{name}: {n} of {total} rounds failed; first: {shown:?}"
    );
}

fn errors<T>(results: Vec<Result<T, Error>>) -> Vec<Error> {
    results.into_iter().filter_map(Result::err).collect()
}

/// `threads` sessions are given to one user at the same moment under a limit of `n`:
/// afterwards the user has exactly min(n, threads) sessions (never more, and the racing
/// saves must not evict each other down to fewer).
fn cap_race(n: usize, threads: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &ManualClock::new(), Some(n));
    let (total, expected) = (rounds(300), n.min(threads));
    let mut failed = Vec::new();
    let mut histogram = vec![0usize; threads + 1];
    for round in 0..total {
        let user = format!("u{round}");
        let jobs = (0..threads)
            .map(|_| {
                let (store, mut s) = (store.clone(), store.create().expect("create"));
                s.set_user(Some(&user));
                Box::new(move || store.save(&s)) as Job<_>
            })
            .collect();
        let errors = errors(race(round, jobs));
        let left = store.sessions_of(&user).expect("sessions_of").len();
        histogram[left.min(threads)] += 1;
        if left != expected || !errors.is_empty() {
            failed.push(format!("round {round}: {left} sessions, errors {errors:?}"));
        }
    }
    println!("n={n}, {threads} threads: rounds by sessions left (index = count): {histogram:?}");
    let name = format!(
        "cap race n={n}, {threads} saves (want {expected}; rounds by count left {histogram:?})"
    );
    check(&name, &failed, total);
}

#[test]
fn cap_race_two_saves_limit_one_keeps_exactly_one() {
    cap_race(1, 2);
}

#[test]
fn cap_race_four_saves_limit_two_keeps_exactly_two() {
    cap_race(2, 4);
}

/// Rotates `s` until it fails or 50 times (publishing each new handle); returns the
/// latest token and the error that stopped it.
fn rotate(
    store: &Store,
    s: &mut Session,
    publish: &Mutex<SessionHandle>,
) -> (SessionId, Option<Error>) {
    for _ in 0..50 {
        if let Err(e) = store.regenerate(s) {
            return (s.id().clone(), Some(e));
        }
        *publish.lock().expect("lock") = s.handle();
    }
    (s.id().clone(), None)
}

#[test]
fn destroy_user_racing_regenerate_leaves_nothing_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &ManualClock::new(), None);
    let total = rounds(200);
    let mut failed = Vec::new();
    for round in 0..total {
        let user = format!("v{round}");
        let mut s = assigned(&store, &user);
        let current = Mutex::new(s.handle());
        let (st1, st2, u) = (store.clone(), store.clone(), user.clone());
        let ((latest, error), revoked) = race2(
            round,
            move || rotate(&st1, &mut s, &current),
            move || st2.destroy_user(&u, None),
        );
        let listed = store.sessions_of(&user).expect("sessions_of").len();
        let live = store.load(&latest).expect("load").is_some();
        let unexpected = error
            .as_ref()
            .is_some_and(|e| !matches!(e, Error::NotFound));
        if listed != 0 || live || revoked.is_err() || unexpected {
            failed.push(format!(
                "round {round}: listed {listed}, latest live {live}, destroy_user {revoked:?}, regenerate stopped by {error:?}"
            ));
        }
    }
    check("revoke vs rotation (session survived)", &failed, total);
}

#[test]
fn destroy_user_racing_reassignment_never_destroys_the_new_users_session() {
    // The two serial orders: destroy first (save fails NotFound, 1 destroyed, gone) or save
    // first (save Ok, 0 destroyed, live with user b). "save Ok and destroy_user counted it"
    // is possible in neither: the session was destroyed as user a's after it became b's.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &ManualClock::new(), None);
    let total = rounds(300);
    let (mut failed, mut wrong_user) = (Vec::new(), 0);
    for round in 0..total {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        let mut s = assigned(&store, &a);
        let id = s.id().clone();
        s.set_user(Some(&b));
        let (st1, st2, a2) = (store.clone(), store.clone(), a.clone());
        let (saved, revoked) = race2(
            round,
            move || st1.save(&s),
            move || st2.destroy_user(&a2, None),
        );
        let revoked = revoked.expect("destroy_user");
        let now = store.load(&id).expect("load");
        let user = now.as_ref().map(|s| s.user().map(str::to_owned));
        let of_b = store.sessions_of(&b).expect("sessions_of").len();
        let destroy_first =
            matches!(saved, Err(Error::NotFound)) && revoked == 1 && now.is_none() && of_b == 0;
        let save_first =
            saved.is_ok() && revoked == 0 && user == Some(Some(b.clone())) && of_b == 1;
        wrong_user += usize::from(saved.is_ok() && revoked == 1);
        if !(destroy_first || save_first) {
            failed.push(format!(
                "round {round}: save {saved:?}, destroy_user {revoked}, then user {user:?}, sessions_of(b) {of_b}"
            ));
        }
    }
    let name = format!(
        "revoke vs reassignment ({wrong_user} destroyed as a's after the save gave it to b)"
    );
    check(&name, &failed, total);
}

#[test]
fn destroy_by_handle_racing_regenerate_leaves_nothing_live() {
    // The revoker chases the handle the rotator last published until a destroy succeeds;
    // once destroy_by_handle said true, the session must be live under no token.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &ManualClock::new(), None);
    let total = rounds(200);
    let mut failed = Vec::new();
    for round in 0..total {
        let user = format!("h{round}");
        let mut s = assigned(&store, &user);
        let current = Arc::new(Mutex::new(s.handle()));
        let (st1, st2, cur) = (store.clone(), store.clone(), Arc::clone(&current));
        let ((latest, _), destroyed) = race2(
            round,
            move || rotate(&st1, &mut s, &cur),
            move || {
                for _ in 0..1000 {
                    #[allow(clippy::clone_on_copy)] // compiles whether or not it stays Copy
                    let handle = current.lock().expect("lock").clone();
                    if st2.destroy_by_handle(&handle)? {
                        return Ok(true);
                    }
                }
                Ok::<_, Error>(false)
            },
        );
        if !destroyed.expect("destroy_by_handle") {
            continue;
        }
        let live = store.load(&latest).expect("load").is_some();
        let listed = store.sessions_of(&user).expect("sessions_of").len();
        if live || listed != 0 {
            failed.push(format!(
                "round {round}: destroyed, yet latest live {live}, listed {listed}"
            ));
        }
    }
    check("destroy_by_handle vs regenerate", &failed, total);
}

/// xorshift: deterministic choices without a dependency.
fn next(seed: &mut u64) -> usize {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 16) as usize
}

#[test]
fn user_limit_holds_under_saves_rotations_and_revocations() {
    // Each round: three users at the limit; two threads give new sessions to them while a
    // third keeps rotating the existing ones (now and then to another user) and a fourth
    // revokes the first user. Afterwards no user may have more than the limit.
    const N: usize = 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &ManualClock::new(), Some(N));
    let total = rounds(300);
    let mut failed = Vec::new();
    for round in 0..total {
        let users: Arc<Vec<String>> = Arc::new((0..3).map(|u| format!("e{round}_{u}")).collect());
        let mut pool: Vec<Session> = users
            .iter()
            .flat_map(|u| (0..N).map(|_| assigned(&store, u)))
            .collect();
        let assigning = Arc::new(AtomicUsize::new(2));
        let mut jobs: Vec<Job<Result<(), Error>>> = Vec::new();
        for t in 0..2u64 {
            let (store, users, assigning) =
                (store.clone(), Arc::clone(&users), Arc::clone(&assigning));
            jobs.push(Box::new(move || {
                let mut seed = (round as u64 + 1) * 7919 + t;
                let result = (0..4).try_for_each(|_| {
                    let mut s = store.create()?;
                    s.set_user(Some(&users[next(&mut seed) % users.len()]));
                    store.save(&s)
                });
                assigning.fetch_sub(1, Ordering::AcqRel);
                result
            }));
        }
        let (st, us) = (store.clone(), Arc::clone(&users));
        jobs.push(Box::new(move || {
            let mut seed = round as u64 * 31 + 17;
            for i in 0..400 {
                if assigning.load(Ordering::Acquire) == 0 {
                    break;
                }
                let k = i % pool.len();
                if i % 7 == 6 {
                    pool[k].set_user(Some(&us[next(&mut seed) % us.len()]));
                }
                match st.regenerate(&mut pool[k]) {
                    Ok(()) | Err(Error::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }));
        let (st, us) = (store.clone(), Arc::clone(&users));
        jobs.push(Box::new(move || st.destroy_user(&us[0], None).map(|_| ())));
        let errors = errors(race(round, jobs));
        let counts: Vec<usize> = users
            .iter()
            .map(|u| store.sessions_of(u).expect("sessions_of").len())
            .collect();
        if counts.iter().any(|&c| c > N) || !errors.is_empty() {
            failed.push(format!(
                "round {round}: sessions per user {counts:?}, errors {errors:?}"
            ));
        }
    }
    check(&format!("user limit {N} under mixed races"), &failed, total);
}

/// A restore racing the cleanup of the same expired records: every record left on disk
/// keeps its expiry index entry (invariant I1), so the cleanup will find it.
#[test]
fn restores_racing_a_purge_keep_every_record_indexed() {
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let store = backend::config_at(dir.path().join("store"))
        .purge_thread(false)
        .purge_batch(64)
        .clock(clock.clock())
        .open()
        .expect("open");
    for _ in 0..2_000 {
        store.create().expect("create");
    }
    let dumps: Vec<_> = store.dump().collect::<Result<_, _>>().expect("dump");
    clock.advance(Duration::from_secs(3_600)); // all expired
    std::thread::scope(|s| {
        let restorer = s.spawn(|| {
            for d in &dumps {
                store.restore(d).expect("restore");
            }
        });
        store.purge_expired().expect("purge");
        restorer.join().expect("restorer");
    });
    let report = store.verify(false).expect("verify");
    assert!(report.is_consistent(), "{report:?}");
}

/// `verify(true)` (repair) lists records and index entries, then adds and removes
/// entries; it races saves that move expiries and users, regenerations, touches, updates,
/// loads and destroys. After the race the invariants hold, and each user's listing is
/// exactly the live sessions that carry that user.
#[test]
fn repair_racing_writes_keeps_the_indexes_right() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let store = backend::config_at(dir.path().join("store"))
        .purge_thread(false)
        .touch_granularity(Duration::ZERO)
        .cache_entries(8)
        .clock(clock.clock())
        .open()
        .expect("open");
    let users = ["a", "b", "c"];
    let sessions: Vec<Session> = (0..40)
        .map(|i| {
            let mut s = store.create().expect("create");
            s.set_user(Some(users[i % 3]));
            store.save(&s).expect("save");
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let finished = std::thread::scope(|scope| {
        let repairer = scope.spawn(|| {
            let mut passes = 0;
            while Instant::now() < deadline {
                store.verify(true).expect("repair");
                passes += 1;
            }
            passes
        });
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let (store, clock) = (&store, &clock);
                let mut mine: Vec<Session> = sessions.iter().skip(t).step_by(2).cloned().collect();
                scope.spawn(move || {
                    let mut n = 0usize;
                    while Instant::now() < deadline {
                        n += 1;
                        let i = n % mine.len();
                        let s = &mut mine[i];
                        match n % 5 {
                            0 | 1 => {
                                s.set_user(Some(users[n % 3]));
                                let _ = store.save(s);
                            }
                            2 => {
                                let _ = store.regenerate(s);
                            }
                            3 => {
                                clock.advance(Duration::from_millis(1));
                                let _ = store.touch(s.id());
                            }
                            _ if n % 50 == 4 => {
                                store.destroy(s.id()).expect("destroy");
                            }
                            _ if n % 10 == 9 => {
                                store
                                    .update(s.id(), |u| u.set_user(Some(users[n % 3])))
                                    .expect("update");
                            }
                            _ => {
                                let _ = store.load(s.id()).expect("load");
                            }
                        }
                    }
                    mine
                })
            })
            .collect();
        let mine: Vec<Session> = writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer"))
            .collect();
        (repairer.join().expect("repairer"), mine)
    });
    let (passes, held) = finished;
    assert!(passes > 0, "the repair ran");
    assert!(store.verify(false).expect("verify").is_consistent());
    for user in users {
        let listed: std::collections::BTreeSet<SessionHandle> = store
            .sessions_of(user)
            .expect("sessions_of")
            .into_iter()
            .map(|i| i.handle)
            .collect();
        let carrying: std::collections::BTreeSet<SessionHandle> = held
            .iter()
            .filter_map(|s| store.load(s.id()).expect("load"))
            .filter(|s| s.user() == Some(user))
            .map(|s| s.handle())
            .collect();
        assert_eq!(listed, carrying, "{user}'s listing");
    }
}
