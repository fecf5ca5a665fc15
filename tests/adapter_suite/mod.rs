//! The conformance suite both adapters pass, written once: every check goes through real
//! HTTP requests to a server built on the framework's own session middleware.
//!
//! A backend starts a server over a sessile store with these routes (JSON answers):
//! `GET /get/{key}` -> `{"value": v | null}`, `POST /set/{key}/{value}` (a string),
//! `POST /remove/{key}`, `POST /incr` -> `{"value": n}` (counter `n`), `POST /cycle` (new
//! session ID), `POST /login/{user}` (new ID, then the user), `POST /logout` (session
//! destroyed). The cookie is named `id`.

#![allow(dead_code, reason = "each test binary uses part of the helpers")]

pub mod http;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use sessile::{Config, ManualClock, Store};

use self::http::Client;

pub const COOKIE: &str = "id";
/// The signing key both test servers use, so cookies survive a restart.
pub const KEY: [u8; 64] = [42; 64];

/// Holds a request inside its handler (after it loaded the session, before it changes
/// it) until the test releases it: `POST /slow/{key}/{value}` passes through it.
pub struct Gate {
    arrived: AtomicBool,
    released: AtomicBool,
}

impl Gate {
    pub const fn new() -> Gate {
        Gate {
            arrived: AtomicBool::new(false),
            released: AtomicBool::new(false),
        }
    }

    /// Called by the slow handler: waits (asynchronously) for the release.
    pub async fn pass(&self) {
        self.arrived.store(true, Ordering::SeqCst);
        while !self.released.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until a request is held (bounded).
    fn wait_arrival(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !self.arrived.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the slow request never arrived"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

/// A framework under test.
pub trait Backend {
    /// Serves the suite's routes over `store` on `listener` until the server is dropped,
    /// with `ttl` as the framework's session lifetime (tower's inactivity expiry,
    /// actix's state TTL).
    fn serve(store: Store, listener: std::net::TcpListener, ttl: Duration) -> Server;
    /// The gate of this backend's `/slow` route.
    fn gate() -> &'static Gate;
    /// The gates of this backend's `/slow-cycle/{n}` route: after the handler asked for
    /// a new ID (tower's `cycle_id` deletes the old record there), before the save (one
    /// per test that uses it).
    fn gates_after_cycle() -> &'static [Gate; 2];
    /// The gates of this backend's `/gate-then-cycle/{n}` route: after the load, before
    /// the handler asks for a new ID (one per test that uses it).
    fn gates_before_cycle() -> &'static [Gate; 2];
}

/// A running test server. Dropping it stops the server, waits for it, and drops every
/// handle on the store, so the folder can be opened again.
pub struct Server {
    pub addr: SocketAddr,
    /// A handle on the server's store, for checks the HTTP routes cannot make.
    pub store: Option<Store>,
    stop: Option<Box<dyn FnOnce() + Send>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn new(
        addr: SocketAddr,
        store: Store,
        stop: Box<dyn FnOnce() + Send>,
        thread: JoinHandle<()>,
    ) -> Server {
        Server {
            addr,
            store: Some(store),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("running")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.store = None;
        if let Some(stop) = self.stop.take() {
            stop();
        }
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result.expect("server thread panicked");
            }
        }
    }
}

/// Opens `path` and starts `B` on it; retries briefly while a stopped server's last
/// handles are being dropped.
pub fn start<B: Backend>(config: impl Fn() -> Config, ttl: Duration) -> Server {
    let mut tries = 0;
    let store = loop {
        match config().open() {
            Ok(store) => break store,
            Err(sessile::Error::Locked { .. }) if tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("open: {e}"),
        }
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    B::serve(store, listener, ttl)
}

fn plain(path: &Path) -> impl Fn() -> Config + use<> {
    let path = path.to_path_buf();
    move || crate::backend::config_at(&path)
}

const HOUR: Duration = Duration::from_secs(3600);

fn value(client: &mut Client, key: &str) -> Value {
    let r = client.get(&format!("/get/{key}"));
    assert_eq!(r.status, 200, "GET /get/{key}: {r:?}");
    r.json()["value"].clone()
}

fn ok(r: http::Response) -> http::Response {
    assert!(r.status == 200, "unexpected answer {r:?}");
    r
}

pub fn insert_get_remove<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start::<B>(plain(&dir.path().join("s")), HOUR);
    let mut alice = server.client();
    let mut bob = server.client();
    assert_eq!(value(&mut alice, "a"), Value::Null);
    ok(alice.post("/set/a/one"));
    ok(alice.post("/set/b/two"));
    assert!(alice.cookie(COOKIE).is_some(), "a session cookie was set");
    assert_eq!(value(&mut alice, "a"), json!("one"));
    assert_eq!(value(&mut bob, "a"), Value::Null, "sessions are separate");
    ok(alice.post("/remove/a"));
    assert_eq!(value(&mut alice, "a"), Value::Null);
    assert_eq!(value(&mut alice, "b"), json!("two"));
    assert_eq!(
        server.store().len().expect("len"),
        1,
        "bob never stored anything"
    );
}

pub fn bogus_cookies_give_a_fresh_session<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start::<B>(plain(&dir.path().join("s")), HOUR);
    let mut alice = server.client();
    ok(alice.post("/set/a/secret"));
    let real = alice.cookie(COOKIE).expect("cookie");
    let mut tampered = real.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let bogus = [
        String::new(),
        "garbage".to_owned(),
        "%00%ff".to_owned(),
        "A".repeat(22),
        "A".repeat(43),
        "x".repeat(3000),
        tampered,
        format!("{real}x"),
    ];
    for cookie in bogus {
        let mut mallory = server.client();
        mallory.cookies.insert(COOKIE.to_owned(), cookie.clone());
        assert_eq!(value(&mut mallory, "a"), Value::Null, "cookie {cookie:?}");
        ok(mallory.post("/set/m/1"));
        let fresh = mallory.cookie(COOKIE).expect("a fresh cookie");
        assert_ne!(fresh, cookie, "a bogus cookie never becomes a session");
        assert_ne!(fresh, real);
        assert_eq!(value(&mut mallory, "m"), json!("1"));
        assert_eq!(value(&mut mallory, "a"), Value::Null);
    }
    assert_eq!(
        value(&mut alice, "a"),
        json!("secret"),
        "the real session is intact"
    );
}

pub fn expiry_with_a_short_ttl<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ttl = Duration::from_secs(2);
    let server = start::<B>(plain(&dir.path().join("s")), ttl);
    let mut alice = server.client();
    ok(alice.post("/set/a/1"));
    let cookie = alice.cookie(COOKIE).expect("cookie");
    std::thread::sleep(ttl + Duration::from_millis(300));
    // The client still sends the cookie: the server must not honour it.
    alice.cookies.insert(COOKIE.to_owned(), cookie);
    assert_eq!(
        value(&mut alice, "a"),
        Value::Null,
        "expired session was loaded"
    );
    assert_eq!(server.store().len().expect("len"), 0);
}

/// A framework lifetime longer than the store's timeouts ("remember me": 30 days idle,
/// on a store with the default 30 minutes idle and 12 hours absolute) becomes the
/// session's own lifetime: it outlives both store timeouts, dies when its own idle
/// timeout passes, and at the latest 30 days after creation (no sleeping: the store runs
/// on a manual clock).
pub fn framework_ttl_outlives_the_store_timeouts<B: Backend>() {
    const DAY: Duration = Duration::from_secs(86_400);
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let path = dir.path().join("s");
    let c = clock.clone();
    let config = move || crate::backend::config_at(&path).clock(c.clock());
    let server = start::<B>(config, 30 * DAY);
    let mut alice = server.client();
    ok(alice.post("/set/a/1"));
    clock.advance(DAY);
    assert_eq!(
        value(&mut alice, "a"),
        json!("1"),
        "past the store's 30 min and 12 h"
    );
    clock.advance(20 * DAY);
    ok(alice.post("/set/a/2")); // activity moves the idle expiry
    clock.advance(8 * DAY);
    assert_eq!(value(&mut alice, "a"), json!("2"), "inside its own 30 days");
    clock.advance(DAY + Duration::from_secs(1));
    assert_eq!(
        value(&mut alice, "a"),
        Value::Null,
        "30 days after creation"
    );

    let mut bob = server.client();
    ok(bob.post("/set/b/1"));
    clock.advance(30 * DAY + Duration::from_secs(1));
    assert_eq!(
        value(&mut bob, "b"),
        Value::Null,
        "its own idle timeout passed"
    );
}

/// A framework lifetime shorter than the store's idle timeout ends the session early.
pub fn short_framework_ttl_ends_the_session_early<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let path = dir.path().join("s");
    let c = clock.clone();
    let config = move || crate::backend::config_at(&path).clock(c.clock());
    let server = start::<B>(config, Duration::from_secs(120));
    let mut alice = server.client();
    ok(alice.post("/set/a/1"));
    clock.advance(Duration::from_secs(100));
    assert_eq!(value(&mut alice, "a"), json!("1"));
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        value(&mut alice, "a"),
        Value::Null,
        "dead after 2 min, not 30"
    );
}

pub fn id_cycling<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start::<B>(plain(&dir.path().join("s")), HOUR);
    let mut alice = server.client();
    ok(alice.post("/set/a/1"));
    let before = alice.clone();
    ok(alice.post("/cycle"));
    assert_ne!(alice.cookie(COOKIE), before.cookie(COOKIE), "a new ID");
    assert_eq!(value(&mut alice, "a"), json!("1"), "the data moved along");
    let mut old = before;
    assert_eq!(value(&mut old, "a"), Value::Null, "the old ID is dead");
    assert_eq!(server.store().len().expect("len"), 1);
}

pub fn login_and_logout<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start::<B>(plain(&dir.path().join("s")), HOUR);
    let mut alice = server.client();
    ok(alice.post("/set/a/1"));
    let anonymous = alice.clone();
    ok(alice.post("/login/alice"));
    assert_eq!(value(&mut alice, "sessile.user"), json!("alice"));
    assert_eq!(server.store().sessions_of("alice").expect("list").len(), 1);
    let mut fixated = anonymous;
    assert_eq!(
        value(&mut fixated, "a"),
        Value::Null,
        "login changed the ID"
    );

    let replay = alice.clone();
    ok(alice.post("/logout"));
    assert_eq!(value(&mut alice, "a"), Value::Null);
    let mut replay = replay;
    assert_eq!(
        value(&mut replay, "a"),
        Value::Null,
        "a logged-out cookie is dead"
    );
    assert!(
        server
            .store()
            .sessions_of("alice")
            .expect("list")
            .is_empty()
    );
    assert_eq!(server.store().len().expect("len"), 0);
}

pub fn concurrent_requests_share_one_session<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start::<B>(plain(&dir.path().join("s")), HOUR);
    let mut alice = server.client();
    ok(alice.post("/incr"));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let mut client = alice.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    ok(client.post("/incr"));
                    assert!(value(&mut client, "n").is_u64(), "lost the session");
                }
                client
            })
        })
        .collect();
    for t in threads {
        // Whatever cookie each client ended with (actix re-encrypts it on every write)
        // still opens the one session.
        let mut client = t.join().expect("client thread");
        assert!(value(&mut client, "n").is_u64());
    }
    let n = value(&mut alice, "n").as_u64().expect("a number");
    // Each request saves what it changed; increments of the one key "n" by overlapping
    // requests end with the later save (use a store-side update for exact counts), but never
    // corrupt or split the session.
    assert!((2..=31).contains(&n), "counter {n}");
    assert_eq!(server.store().len().expect("len"), 1, "no stray sessions");
}

pub fn saves_racing_a_logout_never_bring_it_back<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start::<B>(plain(&dir.path().join("s")), HOUR);
    let mut alice = server.client();
    ok(alice.post("/login/alice"));
    let logged_in = alice.clone();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let mut client = logged_in.clone();
            std::thread::spawn(move || {
                for _ in 0..6 {
                    ok(client.post("/incr"));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    ok(alice.post("/logout"));
    for w in writers {
        w.join().expect("writer");
    }
    let mut replay = logged_in;
    assert_eq!(
        value(&mut replay, "sessile.user"),
        Value::Null,
        "the session came back"
    );
    assert!(
        server
            .store()
            .sessions_of("alice")
            .expect("list")
            .is_empty(),
        "a save after the logout brought the user's session back"
    );
}

/// Two overlapping requests of one session: a slow one that loaded the session before a
/// fast one saved, then changes another key. Both changes are there afterwards (the
/// slow save does not put back the value the fast one replaced).
pub fn overlapping_requests_keep_both_changes<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start::<B>(plain(&dir.path().join("s")), HOUR);
    let mut alice = server.client();
    ok(alice.post("/set/theme/light"));
    ok(alice.post("/set/flash/hello"));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut slow = alice.clone();
    std::thread::spawn(move || {
        let _ = tx.send(slow.post("/slow/cart/42").status);
    });
    B::gate().wait_arrival();
    ok(alice.post("/set/theme/dark"));
    ok(alice.post("/remove/flash"));
    B::gate().release();
    let status = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the slow request finished");
    assert_eq!(status, 200);
    assert_eq!(
        value(&mut alice, "cart"),
        json!("42"),
        "the slow request's change"
    );
    assert_eq!(
        value(&mut alice, "theme"),
        json!("dark"),
        "the slow request put back a value it never changed"
    );
    assert_eq!(
        value(&mut alice, "flash"),
        Value::Null,
        "the slow request put back a value the fast one removed"
    );
    assert_eq!(server.store().len().expect("len"), 1);
}

/// A "log out everywhere" landing while a request of the user's session rotates its ID
/// (between tower's delete and create, or before actix's delete and save): the request's
/// save does not bring the login back, and a new login afterwards works.
pub fn a_revoke_during_an_id_rotation_is_final<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start::<B>(plain(&dir.path().join("s")), HOUR);
    let mut alice = server.client();
    ok(alice.post("/login/alice"));
    ok(alice.post("/set/cart/1"));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut rotating = alice.clone();
    std::thread::spawn(move || {
        let status = rotating.post("/slow-cycle/0").status;
        let _ = tx.send((status, rotating));
    });
    B::gates_after_cycle()[0].wait_arrival();
    server.store().destroy_user("alice", None).expect("revoke");
    B::gates_after_cycle()[0].release();
    let (status, mut rotated) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the rotating request finished");
    assert_eq!(status, 200);
    assert!(
        server
            .store()
            .sessions_of("alice")
            .expect("list")
            .is_empty(),
        "the rotation brought the revoked login back"
    );
    assert_eq!(value(&mut rotated, "sessile.user"), Value::Null);
    assert_eq!(value(&mut rotated, "cart"), Value::Null);
    // A login after the revoke works, from the anonymous session the client now has.
    ok(rotated.post("/login/alice"));
    assert_eq!(value(&mut rotated, "sessile.user"), json!("alice"));
    assert_eq!(server.store().sessions_of("alice").expect("list").len(), 1);
}

/// A request held after loading the user's session, then rotating its ID, while
/// `revoke` ends that session (a revoke of the device by handle, or the per-user cap):
/// the rotation does not bring it back.
fn a_revoke_before_a_rotation_is_final<B: Backend>(
    gate: usize,
    config: impl Fn() -> Config,
    revoke: impl FnOnce(&Server),
) {
    let server = start::<B>(config, HOUR);
    let mut alice = server.client();
    ok(alice.post("/login/alice"));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut rotating = alice.clone();
    std::thread::spawn(move || {
        let status = rotating.post(&format!("/gate-then-cycle/{gate}")).status;
        let _ = tx.send((status, rotating));
    });
    let held = &B::gates_before_cycle()[gate];
    held.wait_arrival();
    revoke(&server);
    held.release();
    let (status, mut rotated) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the rotating request finished");
    assert_eq!(status, 200);
    assert_eq!(
        value(&mut rotated, "sessile.user"),
        Value::Null,
        "the rotation brought the revoked session back"
    );
}

pub fn a_revoke_by_handle_before_a_rotation_is_final<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    a_revoke_before_a_rotation_is_final::<B>(0, plain(&dir.path().join("s")), |server| {
        let store = server.store();
        let listed = store.sessions_of("alice").expect("list");
        assert_eq!(listed.len(), 1);
        assert!(store.destroy_by_handle(&listed[0].handle).expect("revoke"));
        assert!(store.sessions_of("alice").expect("list").is_empty());
    });
}

/// A revoke of the device by the handle listed before, landing after the framework
/// deleted the old ID (tower) or before it does (actix): the rotation stores nothing.
pub fn a_revoke_by_handle_during_a_rotation_is_final<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start::<B>(plain(&dir.path().join("s")), HOUR);
    let mut alice = server.client();
    ok(alice.post("/login/alice"));
    let listed = server.store().sessions_of("alice").expect("list");
    assert_eq!(listed.len(), 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut rotating = alice.clone();
    std::thread::spawn(move || {
        let status = rotating.post("/slow-cycle/1").status;
        let _ = tx.send((status, rotating));
    });
    let held = &B::gates_after_cycle()[1];
    held.wait_arrival();
    // tower deleted the record already (false), actix not yet (true): either way it ends.
    let _ = server
        .store()
        .destroy_by_handle(&listed[0].handle)
        .expect("revoke");
    held.release();
    let (status, mut rotated) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the rotating request finished");
    assert_eq!(status, 200);
    assert!(
        server
            .store()
            .sessions_of("alice")
            .expect("list")
            .is_empty(),
        "the rotation brought the revoked device back"
    );
    assert_eq!(value(&mut rotated, "sessile.user"), Value::Null);
}

pub fn a_session_the_cap_ends_before_a_rotation_stays_ended<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    let capped = move || plain(&path)().max_sessions_per_user(1);
    a_revoke_before_a_rotation_is_final::<B>(1, capped, |server| {
        let mut other = server.client();
        ok(other.post("/login/alice")); // the cap ends the first session
        assert_eq!(server.store().sessions_of("alice").expect("list").len(), 1);
    });
}

pub fn restart_keeps_the_session<B: Backend>() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s");
    let server = start::<B>(plain(&path), HOUR);
    let mut alice = server.client();
    ok(alice.post("/login/alice"));
    ok(alice.post("/set/a/kept"));
    assert_eq!(ok(alice.post("/incr")).json()["value"], json!(1));
    drop(server);

    let server = start::<B>(plain(&path), HOUR);
    alice.addr = server.addr;
    assert_eq!(value(&mut alice, "a"), json!("kept"));
    assert_eq!(value(&mut alice, "sessile.user"), json!("alice"));
    assert_eq!(ok(alice.post("/incr")).json()["value"], json!(2));
    assert_eq!(server.store().sessions_of("alice").expect("list").len(), 1);
}

/// Instantiates the whole suite for one backend.
macro_rules! conformance_suite {
    ($module:ident, $backend:ty) => {
        mod $module {
            use super::adapter_suite as suite;

            #[test]
            fn insert_get_remove() {
                suite::insert_get_remove::<$backend>();
            }
            #[test]
            fn bogus_cookies_give_a_fresh_session() {
                suite::bogus_cookies_give_a_fresh_session::<$backend>();
            }
            #[test]
            fn expiry_with_a_short_ttl() {
                suite::expiry_with_a_short_ttl::<$backend>();
            }
            #[test]
            fn framework_ttl_outlives_the_store_timeouts() {
                suite::framework_ttl_outlives_the_store_timeouts::<$backend>();
            }

            #[test]
            fn short_framework_ttl_ends_the_session_early() {
                suite::short_framework_ttl_ends_the_session_early::<$backend>();
            }
            #[test]
            fn id_cycling() {
                suite::id_cycling::<$backend>();
            }
            #[test]
            fn login_and_logout() {
                suite::login_and_logout::<$backend>();
            }
            #[test]
            fn concurrent_requests_share_one_session() {
                suite::concurrent_requests_share_one_session::<$backend>();
            }
            #[test]
            fn saves_racing_a_logout_never_bring_it_back() {
                suite::saves_racing_a_logout_never_bring_it_back::<$backend>();
            }
            #[test]
            fn overlapping_requests_keep_both_changes() {
                suite::overlapping_requests_keep_both_changes::<$backend>();
            }
            #[test]
            fn a_revoke_during_an_id_rotation_is_final() {
                suite::a_revoke_during_an_id_rotation_is_final::<$backend>();
            }
            #[test]
            fn a_revoke_by_handle_before_a_rotation_is_final() {
                suite::a_revoke_by_handle_before_a_rotation_is_final::<$backend>();
            }
            #[test]
            fn a_revoke_by_handle_during_a_rotation_is_final() {
                suite::a_revoke_by_handle_during_a_rotation_is_final::<$backend>();
            }
            #[test]
            fn a_session_the_cap_ends_before_a_rotation_stays_ended() {
                suite::a_session_the_cap_ends_before_a_rotation_stays_ended::<$backend>();
            }
            #[test]
            fn restart_keeps_the_session() {
                suite::restart_keeps_the_session::<$backend>();
            }
        }
    };
}
