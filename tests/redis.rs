//! The Redis backend as several servers use it: two `Store`s on one namespace are one
//! store (writes, revokes, concurrent updates, rotations and caps across them), a sled
//! store migrates with every token still loading, a server that goes away gives
//! `Error::Storage` and the store recovers, and what the server holds (no tokens, the
//! format marker, quarantine, the safety-net TTL).
//!
//! Each test starts from its own namespace on the shared test server (see
//! `tests/backend`); the outage test starts and kills a server of its own. Every wait is
//! bounded: a hang fails the test.

#![cfg(feature = "redis")]

#[path = "backend/mod.rs"]
mod backend;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use backend::RedisServer;
use redis::Commands;
use sessile::{Config, Error, Lifetime, ManualClock, Session, SessionId, Store};

const TIMEOUT: Duration = Duration::from_secs(30);

fn rounds(default: usize) -> usize {
    std::env::var("SESSILE_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh namespace on the shared server, or `None` (skip) without redis-server outside
/// CI.
fn namespace() -> Option<(String, String)> {
    let url = backend::shared_url()?;
    let ns = format!("r{:016x}", rand::random::<u64>());
    Some((url, ns))
}

fn config(url: &str, ns: &str, clock: &ManualClock) -> Config {
    Config::redis(url)
        .redis_namespace(ns)
        .purge_thread(false)
        .clock(clock.clock())
}

/// Two stores on one namespace, as two servers behind a load balancer would have.
fn two_stores(url: &str, ns: &str, clock: &ManualClock, max: Option<usize>) -> (Store, Store) {
    let open = || {
        let mut c = config(url, ns, clock);
        if let Some(n) = max {
            c = c.max_sessions_per_user(n);
        }
        c.open().expect("open")
    };
    (open(), open())
}

fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("connection")
}

/// Every key of namespace `ns` with its value (strings, hashes and sorted sets flattened).
fn everything_under(url: &str, ns: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut conn = raw(url);
    let keys: Vec<Vec<u8>> = conn.keys(format!("{ns}:*")).expect("keys");
    keys.into_iter()
        .map(|key| {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).expect("type");
            let value: Vec<u8> = match kind.as_str() {
                "string" => conn.get(&key).expect("get"),
                "hash" => {
                    let all: Vec<Vec<u8>> = conn.hgetall(&key).expect("hgetall");
                    all.concat()
                }
                "zset" => {
                    let all: Vec<Vec<u8>> = conn.zrange(&key, 0, -1).expect("zrange");
                    all.concat()
                }
                other => panic!("unexpected key type {other}"),
            };
            (key, value)
        })
        .collect()
}

/// The result of a racer, or a panic if it hung.
fn collect<T>(rx: &mpsc::Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(TIMEOUT) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: hung for {TIMEOUT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

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

fn logged_in(store: &Store, user: &str) -> Session {
    let mut s = store.create().expect("create");
    s.set_user(Some(user));
    store.save(&s).expect("save");
    s
}

#[test]
fn two_stores_see_each_others_writes_and_revokes_at_once() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let (a, b) = two_stores(&url, &ns, &clock, None);

    let mut s = a.create().expect("create on a");
    s.insert("cart", &3u32).expect("insert");
    a.save(&s).expect("save on a");
    let mut on_b = b.load(s.id()).expect("load on b").expect("visible on b");
    assert_eq!(on_b.get::<u32>("cart").expect("get"), Some(3));

    on_b.insert("cart", &4u32).expect("insert");
    b.save(&on_b).expect("save on b");
    let on_a = a.load(s.id()).expect("load on a").expect("live");
    assert_eq!(
        on_a.get::<u32>("cart").expect("get"),
        Some(4),
        "a saw b's save"
    );

    // A logout through one server is seen by the other's very next load.
    assert!(b.destroy(s.id()).expect("destroy on b"));
    assert!(a.load(s.id()).expect("load on a").is_none());

    // Revoke-all through one server, then rotation and listing through the other.
    let x = logged_in(&a, "ada");
    let y = logged_in(&b, "ada");
    assert_eq!(b.sessions_of("ada").expect("list").len(), 2);
    assert_eq!(a.destroy_user("ada", None).expect("revoke"), 2);
    assert!(b.load(x.id()).expect("load").is_none());
    assert!(b.load(y.id()).expect("load").is_none());
    assert!(b.sessions_of("ada").expect("list").is_empty());
    assert_eq!(a.len().expect("len"), 0);
    assert!(b.verify(false).expect("verify").is_consistent());
}

#[test]
fn concurrent_updates_through_two_stores_lose_nothing() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let (a, b) = two_stores(&url, &ns, &clock, None);
    let s = a.create().expect("create");
    const PER_THREAD: u64 = 100;
    let barrier = Arc::new(Barrier::new(4));
    let racers: Vec<_> = [&a, &a, &b, &b]
        .into_iter()
        .map(|store| {
            let (store, id) = (store.clone(), s.id().clone());
            spawn_after(&barrier, move || {
                for _ in 0..PER_THREAD {
                    store
                        .update(&id, |s| {
                            let n = s.get::<u64>("n").expect("get").unwrap_or(0);
                            s.insert("n", &(n + 1)).expect("insert");
                        })
                        .expect("update")
                        .expect("live");
                }
            })
        })
        .collect();
    for rx in &racers {
        collect(rx, "an updater");
    }
    let n = b
        .load(s.id())
        .expect("load")
        .expect("live")
        .get::<u64>("n")
        .expect("get");
    assert_eq!(n, Some(4 * PER_THREAD), "every increment landed once");
}

/// Revoke-all through one store racing a rotation through the other: whatever the order,
/// no token of the user is live afterwards (the rotation lands before the revoke and its
/// new token is revoked, or after and fails).
#[test]
fn revoke_through_one_store_racing_rotation_through_the_other_leaves_nothing_live() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let (a, b) = two_stores(&url, &ns, &clock, None);
    let mut failures = Vec::new();
    for round in 0..rounds(100) {
        let user = format!("u{round}");
        let mut s = logged_in(&a, &user);
        let barrier = Arc::new(Barrier::new(2));
        let revoke = {
            let (a, user) = (a.clone(), user.clone());
            spawn_after(&barrier, move || a.destroy_user(&user, None))
        };
        let rotate = {
            let b = b.clone();
            spawn_after(&barrier, move || {
                let rotated = b.regenerate(&mut s);
                (rotated, s)
            })
        };
        let revoked = collect(&revoke, "revoke");
        let (rotated, s) = collect(&rotate, "rotation");
        assert!(revoked.is_ok(), "round {round}: {revoked:?}");
        assert!(
            matches!(rotated, Ok(()) | Err(Error::NotFound)),
            "round {round}: {rotated:?}"
        );
        let live = a.load(s.id()).expect("load").is_some();
        let listed = b.sessions_of(&user).expect("list").len();
        if live || listed > 0 {
            failures.push(format!("round {round}: live {live}, listed {listed}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// Logins through both stores under a cap of 1: exactly one session survives each round.
#[test]
fn a_cap_holds_across_two_stores() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let (a, b) = two_stores(&url, &ns, &clock, Some(1));
    let mut failures = Vec::new();
    for round in 0..rounds(100) {
        let user = format!("u{round}");
        let barrier = Arc::new(Barrier::new(2));
        let logins: Vec<_> = [&a, &b]
            .into_iter()
            .map(|store| {
                let (store, user) = (store.clone(), user.clone());
                spawn_after(&barrier, move || {
                    let mut s = store.create().expect("create");
                    s.set_user(Some(user.as_str()));
                    store.save(&s).map(|()| s)
                })
            })
            .collect();
        let saved: Vec<_> = logins.iter().map(|rx| collect(rx, "login")).collect();
        let live = saved
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|s| a.load(s.id()).expect("load").is_some())
            .count();
        let listed = b.sessions_of(&user).expect("list").len();
        if live != 1 || listed != 1 {
            failures.push(format!("round {round}: live {live}, listed {listed}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// A sled store in `dir` holding `n` sessions: session `i` has the value `i` under "i",
/// every third a user (ada or bob), every tenth an idle timeout of 30 days of its own.
fn sled_with_sessions(dir: &std::path::Path, clock: &ManualClock, n: u32) -> (Store, Vec<Session>) {
    let sled = Config::new(dir.join("s"))
        .purge_thread(false)
        .clock(clock.clock())
        .open()
        .expect("open sled");
    let sessions = (0..n)
        .map(|i| {
            let mut s = sled.create().expect("create");
            s.insert("i", &i).expect("insert");
            if i % 3 == 0 {
                s.set_user(Some(["ada", "bob"][i as usize % 2]));
            }
            if i % 10 == 0 {
                s.set_lifetime(Lifetime::default().with_idle(Duration::from_secs(30 * 24 * 3600)));
            }
            sled.save(&s).expect("save");
            s
        })
        .collect();
    (sled, sessions)
}

#[test]
fn a_sled_store_migrates_with_every_token_still_loading() {
    let Some((url, ns)) = namespace() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let (sled, sessions) = sled_with_sessions(dir.path(), &clock, 200);
    let ids: Vec<(String, u32)> = (0..)
        .zip(&sessions)
        .map(|(i, s)| (s.id().to_string(), i))
        .collect();
    let before_ada = sled.sessions_of("ada").expect("list").len();

    let redis = config(&url, &ns, &clock).open().expect("open redis");
    let mut moved = 0;
    for dump in sled.dump() {
        redis.restore(&dump.expect("dump")).expect("restore");
        moved += 1;
    }
    assert_eq!(moved, 200);
    drop(sled);

    for (token, i) in &ids {
        let id: SessionId = token.parse().expect("token");
        let s = redis
            .load(&id)
            .expect("load")
            .expect("the old cookie still works");
        assert_eq!(s.get::<u32>("i").expect("get"), Some(*i));
        if i % 10 == 0 {
            assert_eq!(
                s.lifetime().idle(),
                Some(Duration::from_secs(30 * 24 * 3600))
            );
        }
    }
    assert_eq!(redis.sessions_of("ada").expect("list").len(), before_ada);
    assert_eq!(redis.len().expect("len"), 200);
    let report = redis.verify(false).expect("verify");
    assert!(report.is_consistent(), "{report:?}");
    assert_eq!(report.records, 200);
}

#[test]
fn no_token_reaches_the_server() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let store = config(&url, &ns, &clock).open().expect("open");
    let mut tokens = Vec::new();
    for _ in 0..20 {
        let mut s = logged_in(&store, "ada");
        tokens.push(s.id().to_string());
        store.regenerate(&mut s).expect("rotate");
        tokens.push(s.id().to_string());
    }
    let stored = everything_under(&url, &ns);
    assert!(stored.len() > 20, "the namespace holds the sessions");
    for token in &tokens {
        for (key, value) in &stored {
            let hay = [key.as_slice(), value.as_slice()].concat();
            assert!(
                !hay.windows(token.len()).any(|w| w == token.as_bytes()),
                "a token is on the server"
            );
        }
    }
}

#[test]
fn a_format_from_the_future_is_refused_and_nothing_changes() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    drop(config(&url, &ns, &clock).open().expect("open"));
    let mut conn = raw(&url);
    let _: () = conn.set(format!("{ns}:format"), 99).expect("set");
    match config(&url, &ns, &clock).open() {
        Err(Error::UnsupportedFormat { found: 99, .. }) => {}
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
    let _: () = conn.set(format!("{ns}:format"), "two").expect("set");
    assert!(matches!(
        config(&url, &ns, &clock).open(),
        Err(Error::Corrupt { .. })
    ));
    let format: String = conn.get(format!("{ns}:format")).expect("get");
    assert_eq!(format, "two", "a refused open writes nothing");
}

#[test]
fn an_undecodable_record_is_quarantined_and_the_others_survive() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let store = config(&url, &ns, &clock).open().expect("open");
    let bad = store.create().expect("create");
    let good = store.create().expect("create");
    let key = {
        let mut conn = raw(&url);
        let keys: Vec<String> = conn
            .keys(format!("{ns}:s:{}*", bad.id().handle()))
            .expect("keys");
        assert_eq!(keys.len(), 1, "the record is under its digest");
        let _: () = conn
            .set(&keys[0], b"\xff\xffgarbage".as_slice())
            .expect("set");
        keys[0].clone()
    };
    assert!(store.load(bad.id()).expect("load").is_none());
    assert!(store.load(good.id()).expect("load").is_some());
    let mut conn = raw(&url);
    let exists: bool = conn.exists(&key).expect("exists");
    assert!(!exists, "moved out of the way");
    let kept: usize = conn.hlen(format!("{ns}:quarantine")).expect("hlen");
    assert_eq!(kept, 1, "the bytes are kept");
    assert_eq!(store.stats().quarantined, 1);
    let report = store.verify(true).expect("repair");
    assert_eq!(report.quarantined, 1);
    assert!(store.verify(false).expect("verify").is_consistent());
}

#[test]
fn a_record_under_a_stray_key_is_quarantined_by_repair_as_on_sled() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let store = config(&url, &ns, &clock).open().expect("open");
    let live = store.create().expect("create");
    let mut conn = raw(&url);
    // 32 bytes, like a digest, but not the hex a digest is stored under.
    let stray = format!("{ns}:s:{}", "x".repeat(32));
    let _: () = conn.set(&stray, b"junk".as_slice()).expect("set");
    // A user set whose name is not UTF-8: no user's, so its member is stale.
    let mut odd_set = format!("{ns}:u:").into_bytes();
    odd_set.push(0xff);
    let member = live.handle().to_string().repeat(2);
    let _: () = conn.zadd(&odd_set, &member, 1).expect("zadd");
    let report = store.verify(false).expect("verify");
    assert_eq!((report.records, report.undecodable), (2, 1));
    assert_eq!(report.stale_user_entries, 1);
    assert!(!report.is_consistent());
    let report = store.verify(true).expect("repair");
    assert_eq!(report.undecodable, 1);
    let exists: bool = conn.exists(&stray).expect("exists");
    assert!(!exists, "moved out of the way");
    let kept: Vec<u8> = conn
        .hget(format!("{ns}:quarantine"), "x".repeat(32))
        .expect("hget");
    assert_eq!(kept, b"junk", "the bytes are kept");
    let odd_left: usize = conn.zcard(&odd_set).expect("zcard");
    assert_eq!(odd_left, 0, "the stale member is dropped");
    let report = store.verify(false).expect("verify");
    assert!(report.is_consistent(), "{report:?}");
    assert_eq!((report.records, report.quarantined), (1, 1));
    assert_eq!(report.stale_user_entries, 0);
    assert!(store.load(live.id()).expect("load").is_some());
}

#[test]
fn records_carry_a_ttl_past_their_expiry_as_a_safety_net() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let store = config(&url, &ns, &clock)
        .idle_timeout(Duration::from_secs(60))
        .open()
        .expect("open");
    let s = store.create().expect("create");
    let mut conn = raw(&url);
    let keys: Vec<String> = conn
        .keys(format!("{ns}:s:{}*", s.id().handle()))
        .expect("keys");
    let ttl: i64 = conn.pttl(&keys[0]).expect("pttl");
    // The idle timeout plus five minutes, counted from the write.
    assert!((300_000..=360_000).contains(&ttl), "ttl {ttl} ms");
}

#[test]
fn a_server_that_goes_away_gives_storage_errors_and_the_store_recovers() {
    let Some(server) = RedisServer::start(None) else {
        return;
    };
    let port = server.port;
    let url = server.url();
    let clock = ManualClock::new();
    let store = config(&url, "outage", &clock)
        .purge_thread(true)
        .purge_interval(Duration::from_millis(10))
        .open()
        .expect("open");
    let s = store.create().expect("create");
    server.kill();

    let started = Instant::now();
    for result in [
        store.load(s.id()).map(drop),
        store.create().map(drop),
        store.save(&s),
        store.destroy_user("ada", None).map(drop),
        store.purge_expired().map(drop),
    ] {
        match result {
            Err(Error::Storage(cause)) => {
                assert!(cause.to_string().starts_with("redis"), "{cause}");
            }
            other => panic!("expected Error::Storage, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "errors come within the timeouts"
    );
    std::thread::sleep(Duration::from_millis(50)); // the purge thread fails a pass or two

    let _back = RedisServer::start(Some(port)).expect("restart on the same port");
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        match store.create() {
            Ok(s) => break s,
            Err(Error::Storage(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    };
    assert!(store.load(fresh.id()).expect("load").is_some());
    assert!(
        store.stats().purge_errors > 0,
        "the purge thread kept going"
    );
}

/// A Redis restart while the store sits idle: its pooled connections died without it
/// noticing, and the first calls after the server is back must not be the ones to find
/// out (found in review: the first request after a restart answered 500).
#[test]
fn the_first_calls_after_a_restart_do_not_fail_on_dead_idle_connections() {
    let Some(server) = RedisServer::start(None) else {
        return;
    };
    let port = server.port;
    let clock = ManualClock::new();
    let a = config(&server.url(), "restart", &clock)
        .open()
        .expect("open");
    let b = config(&server.url(), "restart", &clock)
        .open()
        .expect("open");
    // Several pooled connections, all idle afterwards.
    let jobs: Vec<_> = (0..4)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || a.create().expect("create"))
        })
        .collect();
    let sessions: Vec<Session> = jobs.into_iter().map(|j| j.join().expect("job")).collect();
    b.create().expect("create");
    std::thread::sleep(Duration::from_millis(1500));
    server.kill();
    let _back = RedisServer::start(Some(port)).expect("restart on the same port");
    // The restarted server kept nothing (no persistence here): the sessions are gone,
    // and every call answers.
    for s in &sessions {
        assert!(a.load(s.id()).expect("a load after the restart").is_none());
    }
    assert!(
        b.load(sessions[0].id())
            .expect("a load after the restart")
            .is_none()
    );
    let fresh = b.create().expect("a create after the restart");
    assert!(a.load(fresh.id()).expect("load").is_some());
}

/// A server that may evict keys is reported: by `eviction_policy`, in `verify`, and
/// (through `tracing`) at open; `noeviction` is not.
#[test]
fn an_evicting_server_is_reported() {
    let Some(server) = RedisServer::start(None) else {
        return;
    };
    let clock = ManualClock::new();
    let store = config(&server.url(), "evict", &clock).open().expect("open");
    assert_eq!(
        store.eviction_policy().expect("read"),
        None,
        "noeviction is the default"
    );
    backend::make_evicting(&server.url(), "allkeys-lru");
    assert_eq!(
        store.eviction_policy().expect("read").as_deref(),
        Some("allkeys-lru")
    );
    assert_eq!(
        store
            .verify(false)
            .expect("verify")
            .eviction_policy
            .as_deref(),
        Some("allkeys-lru")
    );
}

/// TLS with a private CA and client certificates: the store works over `rediss://`; a
/// missing client certificate, a server certificate from an untrusted CA and a plain
/// `redis://` URL at the TLS port are each refused, within 10 s.
#[test]
fn tls_with_a_private_ca_and_client_certificates() {
    let Some(certs) = backend::Certificates::make() else {
        return;
    };
    let Some((_server, port)) = certs.server() else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{port}/");
    let clock = ManualClock::new();
    let with = |c: Config| {
        c.redis_namespace("tls")
            .purge_thread(false)
            .clock(clock.clock())
    };
    let store = with(Config::redis(&url))
        .redis_tls_root_ca(certs.path("ca.crt"))
        .redis_tls_client_auth(certs.path("client.crt"), certs.path("client.key"))
        .open()
        .expect("open over TLS");
    let mut s = store.create().expect("create");
    s.insert("k", &1u32).expect("insert");
    store.save(&s).expect("save");
    let loaded = store.load(s.id()).expect("load").expect("live");
    assert_eq!(loaded.get::<u32>("k").expect("decode"), Some(1));

    let refused = [
        (
            "no client certificate",
            with(Config::redis(&url)).redis_tls_root_ca(certs.path("ca.crt")),
        ),
        (
            "an untrusted server certificate",
            with(Config::redis(&url))
                .redis_tls_root_ca(certs.path("other-ca.crt"))
                .redis_tls_client_auth(certs.path("client.crt"), certs.path("client.key")),
        ),
        (
            "a plain URL at the TLS port",
            with(Config::redis(format!("redis://127.0.0.1:{port}/"))),
        ),
    ];
    for (what, config) in refused {
        let started = Instant::now();
        let opened = config.open();
        assert!(opened.is_err(), "{what}: the store opened");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: took {:?}",
            started.elapsed()
        );
    }
    let missing = with(Config::redis(&url))
        .redis_tls_root_ca(certs.path("nope.crt"))
        .open();
    assert!(
        matches!(
            missing,
            Err(Error::InvalidConfig {
                setting: "redis_tls_root_ca",
                ..
            })
        ),
        "{missing:?}"
    );
}

/// With `redis_min_replicas(1)` a logout returns once the replica has it (read back from
/// the replica), and a replica that stops confirming makes it fail with
/// `Error::NotReplicated` within the 2 s wait, instead of returning as if safe.
#[test]
fn a_logout_waits_for_the_replica_and_says_when_it_is_not_confirmed() {
    let Some(primary) = RedisServer::start(None) else {
        return;
    };
    let replica = backend::start_replica(&primary);
    let mut on_replica = raw(&replica.url());
    let clock = ManualClock::new();
    let store = config(&primary.url(), "replicated", &clock)
        .redis_min_replicas(1)
        .open()
        .expect("open");
    let s = logged_in(&store, "ada");
    let keys: Vec<String> = raw(&primary.url())
        .keys(format!("replicated:s:{}*", s.id().handle()))
        .expect("keys");
    let key = keys.first().expect("the record").clone();
    assert!(store.destroy(s.id()).expect("destroy"));
    let on_replica_now: Option<Vec<u8>> = on_replica.get(&key).expect("get");
    assert_eq!(
        on_replica_now, None,
        "the replica has the logout once destroy returned"
    );

    let t = logged_in(&store, "bob");
    let pattern = format!("redis-server 127.0.0.1:{}", replica.port);
    let signal = |sig: &str| {
        std::process::Command::new("pkill")
            .args([sig, "-f", &pattern])
            .status()
            .expect("pkill");
    };
    signal("-STOP");
    let started = Instant::now();
    let destroyed = store.destroy(t.id());
    signal("-CONT");
    assert!(
        matches!(
            destroyed,
            Err(Error::NotReplicated {
                acknowledged: 0,
                wanted: 1
            })
        ),
        "{destroyed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// Sets the flag when dropped, so helper threads stop even when an assertion fails.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A rotation through one store while another store's `update` holds the session: the
/// rotation waits for the update, then lands on the version the update wrote (found in
/// review: it failed with `NotFound`, leaving the old token live).
#[test]
fn a_rotation_during_another_stores_update_waits_for_it_and_lands() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let (a, b) = two_stores(&url, &ns, &clock, None);
    let mut s = logged_in(&a, "ada");
    let old = s.id().clone();
    let (inside_tx, inside) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    {
        let (b, id) = (b.clone(), old.clone());
        std::thread::spawn(move || {
            let updated = b.update(&id, |s| {
                let _ = inside_tx.send(());
                std::thread::sleep(Duration::from_millis(300));
                s.insert("seen", &true).expect("insert");
            });
            let _ = done_tx.send(updated);
        });
    }
    collect(&inside, "the update's closure to start");
    // The update holds the lease: the rotation reads the old version, its script waits,
    // then finds the record changed and reads it again.
    a.regenerate(&mut s)
        .expect("the rotation waits for the update, then lands");
    let updated = collect(&done, "the update");
    assert!(matches!(updated, Ok(Some(()))), "{updated:?}");
    assert!(
        a.load(&old).expect("load").is_none(),
        "the old token is dead"
    );
    let moved = b
        .load(s.id())
        .expect("load")
        .expect("the new token is live");
    // The rotation carries the caller's copy (as a save would): user and values of `s`.
    assert_eq!(moved.user(), Some("ada"));
    let dump = b.inspect(&s.handle()).expect("inspect").expect("stored");
    assert_eq!(dump.version, 4, "create, save, the update, the rotation");
    assert_eq!(b.sessions_of("ada").expect("list").len(), 1);
}

/// A destroy and a revoke-all through one store while another store's `update` of the
/// same session is inside its closure: neither waits for it, and the update's commit then
/// finds the session gone (`NotFound`) instead of writing it back.
#[test]
fn a_revoke_during_another_stores_update_wins_and_the_update_fails() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let (a, b) = two_stores(&url, &ns, &clock, None);
    for revoke_all in [false, true] {
        let s = logged_in(&a, "ada");
        let (inside_tx, inside) = mpsc::channel();
        let (go_tx, go) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        {
            let (b, id) = (b.clone(), s.id().clone());
            std::thread::spawn(move || {
                let updated = b.update(&id, |s| {
                    let _ = inside_tx.send(());
                    let _ = go.recv_timeout(TIMEOUT);
                    s.insert("written", &true).expect("insert");
                });
                let _ = done_tx.send(updated);
            });
        }
        collect(&inside, "the update's closure to start");
        if revoke_all {
            assert_eq!(a.destroy_user("ada", None).expect("revoke"), 1);
        } else {
            assert!(a.destroy(s.id()).expect("destroy"));
        }
        go_tx.send(()).expect("release the closure");
        let updated = collect(&done, "the update");
        assert!(matches!(updated, Err(Error::NotFound)), "{updated:?}");
        assert!(b.load(s.id()).expect("load").is_none(), "stays gone");
        assert!(a.sessions_of("ada").expect("list").is_empty());
        assert!(a.verify(false).expect("verify").is_consistent());
    }
}

/// `update`s in a loop through one store, each writing, cannot hold off revoke-all or the
/// cap through the other (found in review: both waited for the leases, failed with
/// `SessionBusy` after 5 s, and the cap left the user over the limit).
#[test]
fn updates_in_a_loop_do_not_hold_off_revoke_all_or_the_cap() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let (a, b) = two_stores(&url, &ns, &clock, Some(3));
    let sessions: Vec<_> = (0..3).map(|_| logged_in(&a, "ada")).collect();
    let stop = StopOnDrop(Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let hammers: Vec<_> = sessions
        .iter()
        .map(|s| {
            let (b, id, stop) = (b.clone(), s.id().clone(), Arc::clone(&stop.0));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    // Each one writes; the session may be evicted or revoked under it.
                    let updated = b.update(&id, |s| {
                        std::thread::sleep(Duration::from_millis(20));
                        s.insert("n", &n).expect("insert");
                    });
                    match updated {
                        Ok(Some(())) => {}
                        Ok(None) | Err(Error::NotFound) => break,
                        Err(e) => panic!("update: {e}"),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let (tx, rx) = mpsc::channel();
    {
        let a = a.clone();
        std::thread::spawn(move || {
            let login = {
                let mut s = a.create().expect("create");
                s.set_user(Some("ada"));
                a.save(&s).map(|()| a.sessions_of("ada").map(|l| l.len()))
            };
            let revoked = a.destroy_user("ada", None);
            let _ = tx.send((login, revoked));
        });
    }
    let (login, revoked) = collect(&rx, "login and revoke");
    drop(stop);
    for h in hammers {
        h.join().expect("hammer");
    }
    assert!(
        matches!(login, Ok(Ok(3))),
        "the cap evicted the oldest: {login:?}"
    );
    assert!(matches!(revoked, Ok(3)), "{revoked:?}");
    assert!(a.sessions_of("ada").expect("list").is_empty());
    for s in &sessions {
        assert!(b.load(s.id()).expect("load").is_none(), "revoked");
    }
    assert!(a.verify(false).expect("verify").is_consistent());
}

#[test]
fn namespaces_that_could_match_other_keys_are_refused() {
    for ns in ["", "a*", "a?", "a[b]", "a:s", "a b", "{a}", &"n".repeat(65)] {
        let opened = Config::redis("redis://127.0.0.1:1/")
            .redis_namespace(ns)
            .open();
        assert!(
            matches!(opened, Err(Error::InvalidConfig { .. })),
            "{ns:?}: {opened:?}"
        );
    }
}

#[test]
fn the_password_is_never_shown() {
    for url in [
        // Port 1: nothing listens, so the open fails and its error is checked too.
        "redis://:hunter2@127.0.0.1:1/0",
        "redis://user:hunter2@127.0.0.1:1/",
        "redis://:hun/ter2@127.0.0.1:1/",
        "redis+unix:///tmp/redis.sock?db=0&pass=hunter2",
    ] {
        let config = Config::redis(url);
        let shown = format!("{} {config:?}", config.path().display());
        assert!(!shown.contains("hunter2"), "{shown}");
        let opened = config.purge_thread(false).open();
        let message = format!("{opened:?}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}

/// The handle entries under `ns:handles`, as (handle, digest) hex pairs.
fn handle_entries(url: &str, ns: &str) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> =
        raw(url).hgetall(format!("{ns}:handles")).expect("hgetall");
    all.sort();
    all
}

/// `destroy_by_handle` is one lookup in the handle index, which every write, delete,
/// rotation, revoke-all, cap and purge keeps exact: after all of them it names exactly
/// the live sessions.
#[test]
fn the_handle_index_names_exactly_the_live_sessions() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let (a, b) = two_stores(&url, &ns, &clock, Some(3));
    let mut kept = logged_in(&a, "ada");
    let others: Vec<Session> = (0..3)
        .map(|_| {
            clock.advance(Duration::from_millis(1));
            logged_in(&b, "ada")
        })
        .collect();
    // The cap evicted the oldest; revoke-all ends the rest but `kept`.
    assert!(a.load(kept.id()).expect("load").is_none(), "capped");
    kept = logged_in(&a, "ada");
    assert_eq!(a.destroy_user("ada", Some(kept.id())).expect("revoke"), 2);
    let mut rotated = logged_in(&b, "bob");
    b.regenerate(&mut rotated).expect("regenerate");
    let gone = logged_in(&a, "cy");
    assert!(b.destroy_by_handle(&gone.handle()).expect("by handle"));
    let expiring = a.create().expect("create");
    clock.advance(Duration::from_secs(20 * 60));
    a.touch(kept.id()).expect("touch");
    b.touch(rotated.id()).expect("touch");
    clock.advance(Duration::from_secs(15 * 60));
    assert!(a.purge_expired().expect("purge") >= 1);
    assert!(a.load(expiring.id()).expect("load").is_none());

    let live: Vec<String> = [&kept, &rotated]
        .iter()
        .map(|s| s.handle().to_string())
        .collect();
    let entries = handle_entries(&url, &ns);
    let mut named: Vec<String> = entries.iter().map(|(h, _)| h.clone()).collect();
    let mut expected = live.clone();
    named.sort();
    expected.sort();
    assert_eq!(named, expected, "{others:?}");
    for (handle, digest) in &entries {
        assert!(digest.starts_with(handle.as_str()));
    }
    assert!(a.destroy_by_handle(&rotated.handle()).expect("by handle"));
    assert!(b.load(rotated.id()).expect("load").is_none());
}

/// Sessions the handle index does not name (written before it, by an older version
/// during a rolling upgrade, or with their entry lost), or names wrongly, are still found
/// by `destroy_by_handle`: a revocation never misses a live session.
#[test]
fn sessions_missing_from_the_handle_index_are_still_revoked_by_handle() {
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let store = config(&url, &ns, &clock).open().expect("open");
    let sessions: Vec<Session> = (0..700)
        .map(|i| logged_in(&store, &format!("u{i}")))
        .collect();
    drop(store);
    let _: () = raw(&url).del(format!("{ns}:handles")).expect("del");
    // One entry that names another session under this handle.
    let wrong = format!("{}{}", sessions[1].handle(), "0".repeat(32));
    let _: () = raw(&url)
        .hset(
            format!("{ns}:handles"),
            sessions[0].handle().to_string(),
            wrong,
        )
        .expect("hset");
    let store = config(&url, &ns, &clock).open().expect("open");
    assert!(
        store
            .destroy_by_handle(&sessions[0].handle())
            .expect("by handle")
    );
    assert!(store.load(sessions[0].id()).expect("load").is_none());
    for s in sessions.iter().skip(1).step_by(50) {
        assert!(store.destroy_by_handle(&s.handle()).expect("by handle"));
        assert!(store.load(s.id()).expect("load").is_none());
    }
}

/// `import` writes new sessions in pipelined batches: 600 sessions (three batches and a
/// part), one of them already on the server with other contents (replaced through the
/// one-by-one path), all load with their values, users and handles; a truncated dump
/// restores every session before the damage and names it.
#[test]
fn an_import_in_batches_restores_every_session_and_replaces_what_is_there() {
    let Some((url, ns)) = namespace() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let (sled, sessions) = sled_with_sessions(dir.path(), &clock, 600);
    let mut dump = Vec::new();
    assert_eq!(sled.export(&mut dump).expect("export"), 600);

    let redis = config(&url, &ns, &clock).open().expect("open redis");
    let first: sessile::SessionDump = sled
        .dump()
        .map(|d| d.expect("dump"))
        .find(|d| d.handle().expect("handle") == sessions[300].handle())
        .expect("its dump");
    let mut other = first.clone();
    other
        .values
        .insert("i".into(), serde_json::to_vec(&9999u32).expect("json"));
    redis.restore(&other).expect("restore");
    assert_eq!(redis.import(dump.as_slice()).expect("import"), 600);
    for (i, s) in sessions.iter().enumerate() {
        let back = redis.load(s.id()).expect("load").expect("imported");
        assert_eq!(back.get::<u32>("i").expect("get"), Some(i as u32));
    }
    assert_eq!(
        redis.sessions_of("ada").expect("list").len(),
        sled.sessions_of("ada").expect("list").len()
    );
    assert!(
        redis
            .destroy_by_handle(&sessions[599].handle())
            .expect("by handle")
    );
    let report = redis.verify(false).expect("verify");
    assert!(report.is_consistent(), "{report:?}");

    // Cut after the header and 400 sessions: those are restored, and the error says so.
    let lines: Vec<&[u8]> = dump.split(|&b| b == b'\n').collect();
    let mut cut = lines[..401].join(&b'\n');
    cut.push(b'\n');
    let fresh = config(&url, &format!("{ns}c"), &clock)
        .open()
        .expect("open");
    let err = fresh.import(cut.as_slice()).expect_err("truncated");
    assert!(matches!(err, Error::InvalidDump { .. }), "{err}");
    assert_eq!(fresh.len().expect("len"), 400);
}

/// An import's batches (a pipeline of write scripts for the sessions not stored yet)
/// racing another store that restores the same sessions given to another user, carl, and
/// revokes one of the dump's users, on threads behind a barrier, many rounds: every
/// session ends as one writer or the other left it (never lost unless revoked), and the
/// users' indexes name exactly the stored sessions.
#[test]
fn an_import_racing_restores_and_a_revoke_keeps_the_indexes_exact() {
    let Some((url, ns)) = namespace() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let (sled, sessions) = sled_with_sessions(dir.path(), &clock, 300);
    let mut dump = Vec::new();
    sled.export(&mut dump).expect("export");
    let dumps: Vec<sessile::SessionDump> = sled.dump().map(|d| d.expect("dump")).collect();
    let dump = Arc::new(dump);
    for round in 0..rounds(20) {
        let ns = format!("{ns}r{round}");
        let importer = config(&url, &ns, &clock).open().expect("open");
        let other = config(&url, &ns, &clock).open().expect("open");
        let barrier = Arc::new(Barrier::new(2));
        let imported = {
            let dump = Arc::clone(&dump);
            spawn_after(&barrier, move || importer.import(dump.as_slice()))
        };
        let restored = {
            let dumps = dumps.clone();
            spawn_after(&barrier, move || -> sessile::Result<()> {
                for (i, d) in dumps.iter().enumerate().rev() {
                    let mut theirs = d.clone();
                    theirs.user = Some("carl".into());
                    other.restore(&theirs)?;
                    if i == 150 {
                        other.destroy_user("bob", None)?;
                    }
                }
                Ok(())
            })
        };
        assert_eq!(collect(&imported, "import").expect("import"), 300);
        collect(&restored, "restores").expect("restores");
        let store = config(&url, &ns, &clock).open().expect("open");
        let report = store.verify(false).expect("verify");
        assert!(report.is_consistent(), "round {round}: {report:?}");
        for (i, s) in sessions.iter().enumerate() {
            match store.load(s.id()).expect("load") {
                Some(back) => assert_eq!(back.get::<u32>("i").expect("get"), Some(i as u32)),
                // Only a session of bob's may be gone (the revoke).
                None => assert_eq!(s.user(), Some("bob"), "round {round}: session {i} lost"),
            }
        }
        for user in ["ada", "bob", "carl"] {
            let listed = store.sessions_of(user).expect("list").len();
            let live = sessions
                .iter()
                .filter_map(|s| store.load(s.id()).expect("load"))
                .filter(|b| b.user() == Some(user))
                .count();
            assert_eq!(listed, live, "round {round}: {user}'s sessions");
        }
    }
}

/// The tower adapter's awaited save (one round trip: a compare-and-swap against the
/// version it last read) racing each revocation of the session through another store,
/// on threads behind a barrier, many rounds: whichever lands first, the session is gone
/// afterwards (a save that lost the race never brings it back).
#[cfg(feature = "tower")]
#[test]
fn the_adapters_awaited_save_racing_revocations_never_brings_a_session_back() {
    use tower_sessions::session::{Id, Record};
    use tower_sessions::session_store::SessionStore;
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let (a, b) = two_stores(&url, &ns, &clock, Some(2));
    let tower = Arc::new(sessile::tower::TowerStore::new(a.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    for round in 0..rounds(60) {
        b.destroy_user("ada", None).expect("clean slate");
        let mut record = Record {
            id: Id::default(),
            data: [
                (
                    sessile::tower::USER_KEY.to_owned(),
                    serde_json::json!("ada"),
                ),
                ("n".to_owned(), serde_json::json!(0)),
            ]
            .into_iter()
            .collect(),
            expiry_date: expiry,
        };
        rt.block_on(tower.create(&mut record)).expect("create");
        let mut loaded = rt
            .block_on(tower.load(&record.id))
            .expect("load")
            .expect("live");
        loaded.data.insert("n".into(), serde_json::json!(round));
        let handle = b.sessions_of("ada").expect("list")[0].handle;
        let barrier = Arc::new(Barrier::new(2));
        let (saver, runtime) = (Arc::clone(&tower), rt.handle().clone());
        let saved = spawn_after(&barrier, move || runtime.block_on(saver.save(&loaded)));
        let revoker = b.clone();
        let clock2 = clock.clone();
        let revoked = spawn_after(&barrier, move || match round % 3 {
            0 => revoker.destroy_user("ada", None).map(|_| ()),
            1 => revoker.destroy_by_handle(&handle).map(|_| ()),
            _ => {
                // Two newer sessions of the user: the cap of 2 evicts this one.
                for _ in 0..2 {
                    clock2.advance(Duration::from_millis(1));
                    logged_in(&revoker, "ada");
                }
                Ok(())
            }
        });
        collect(&saved, "the save").expect("save");
        collect(&revoked, "the revocation").expect("revoke");
        assert!(
            rt.block_on(tower.load(&record.id)).expect("load").is_none(),
            "round {round}: the session came back"
        );
        assert!(
            b.sessions_of("ada")
                .expect("list")
                .iter()
                .all(|s| s.handle != handle),
            "round {round}: the session is listed again"
        );
    }
    let report = b.verify(false).expect("verify");
    assert!(report.is_consistent(), "{report:?}");
}

/// The tower adapter on Redis used from several runtimes in turn: a multi-thread one
/// (the awaited path, its connection driven by that runtime), then after that runtime is
/// gone, outside any runtime (in place), a current-thread one (the pooled path) and
/// another multi-thread one (a new connection for it). Every call answers; none panics
/// for want of a runtime or hangs on a connection whose runtime died.
#[cfg(feature = "tower")]
#[test]
fn the_adapter_answers_from_runtime_after_runtime() {
    use tower_sessions::session::{Id, Record};
    use tower_sessions::session_store::SessionStore;
    let Some((url, ns)) = namespace() else { return };
    let clock = ManualClock::new();
    let store = config(&url, &ns, &clock).open().expect("open");
    let tower = sessile::tower::TowerStore::new(store);
    let multi = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut record = Record {
        id: Id::default(),
        data: [("n".to_owned(), serde_json::json!(1))]
            .into_iter()
            .collect(),
        expiry_date: expiry,
    };
    let first = multi();
    first.block_on(tower.create(&mut record)).expect("create");
    let mut loaded = first
        .block_on(tower.load(&record.id))
        .expect("load")
        .expect("live");
    drop(first);
    // Outside any runtime (a plain executor): answered in place, no panic.
    let outside = {
        let mut call = std::pin::pin!(tower.load(&record.id));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(found) = call.as_mut().poll(&mut cx) {
                break found;
            }
            std::thread::yield_now();
        }
    };
    assert!(outside.expect("load outside a runtime").is_some());
    let started = Instant::now();
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    loaded.data.insert("n".into(), serde_json::json!(2));
    current.block_on(tower.save(&loaded)).expect("save");
    let second = multi();
    let back = second
        .block_on(tower.load(&record.id))
        .expect("load")
        .expect("live");
    assert_eq!(back.data["n"], serde_json::json!(2));
    loaded.data.insert("n".into(), serde_json::json!(3));
    second.block_on(tower.save(&loaded)).expect("save");
    let back = current
        .block_on(tower.load(&record.id))
        .expect("load")
        .expect("live");
    assert_eq!(back.data["n"], serde_json::json!(3));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}: a call waited on a dead runtime's connection",
        started.elapsed()
    );
}

/// How many commands the server ran whose name `counts` (from `INFO commandstats`).
fn commands_run(conn: &mut redis::Connection, counts: impl Fn(&str) -> bool) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("info");
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_")?.split_once(":calls="))
        .filter(|(name, _)| counts(name))
        .filter_map(|(_, rest)| rest.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// Starts logging every command clients send (not those scripts run inside) to the
/// server's slow log, emptied first.
fn start_counting(conn: &mut redis::Connection) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(0)
        .query(conn)
        .expect("config");
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query(conn)
        .expect("reset");
}

/// The commands clients sent since [`start_counting`] (this test's own slow-log calls
/// left out), oldest first.
fn sent(conn: &mut redis::Connection) -> Vec<String> {
    // id, time, duration, arguments, client address ("?:0" for a script's own calls)
    type Entry = (i64, i64, i64, Vec<Vec<u8>>, String);
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(conn)
        .expect("slowlog");
    let mut sent: Vec<String> = log
        .into_iter()
        .filter_map(|entry| match entry {
            redis::Value::Array(fields) => {
                let head = redis::Value::Array(fields.into_iter().take(5).collect());
                redis::from_redis_value::<Entry>(head).ok()
            }
            _ => None,
        })
        .filter(|(_, _, _, _, client)| client != "?:0")
        .filter_map(|(_, _, _, args, _)| {
            Some(String::from_utf8_lossy(args.first()?).to_uppercase())
        })
        .filter(|name| !matches!(name.as_str(), "SLOWLOG" | "CONFIG"))
        .collect();
    sent.reverse();
    sent
}

/// A core save of a loaded session is one round trip while nobody else wrote: the
/// script compares the record the session was read from (no read first). After another
/// store's write it still merges (the compare fails and the locked path rebases).
#[test]
fn a_save_is_one_round_trip() {
    let Some(server) = RedisServer::start(None) else {
        return;
    };
    let clock = ManualClock::new();
    let store = config(&server.url(), "save", &clock).open().expect("open");
    let s = logged_in(&store, "ada");
    let mut warm = store.load(s.id()).expect("load").expect("live");
    warm.insert("a", &1u32).expect("insert");
    store.save(&warm).expect("save"); // the scripts are loaded now

    let mut conn = raw(&server.url());
    let mut loaded = store.load(s.id()).expect("load").expect("live");
    loaded.insert("n", &2u32).expect("insert");
    start_counting(&mut conn);
    store.save(&loaded).expect("save");
    assert_eq!(sent(&mut conn), ["EVALSHA"], "commands one save sent");
    // The same copy saved again expects what it wrote.
    start_counting(&mut conn);
    loaded.insert("n", &3u32).expect("insert");
    store.save(&loaded).expect("save");
    assert_eq!(sent(&mut conn), ["EVALSHA"], "commands the next save sent");

    // A copy read before another store's write: two changes, both kept.
    let mut stale = store.load(s.id()).expect("load").expect("live");
    let other = config(&server.url(), "save", &clock).open().expect("open");
    let mut theirs = other.load(s.id()).expect("load").expect("live");
    theirs.insert("theirs", &3u32).expect("insert");
    other.save(&theirs).expect("save");
    stale.insert("ours", &4u32).expect("insert");
    store.save(&stale).expect("save");
    let now = store.load(s.id()).expect("load").expect("live");
    assert_eq!(now.get::<u32>("theirs").expect("get"), Some(3));
    assert_eq!(now.get::<u32>("ours").expect("get"), Some(4));
    assert_eq!(now.get::<u32>("n").expect("get"), Some(3));

    // A save that gives the session to another user keeps the users' index right.
    let mut moved = store.load(s.id()).expect("load").expect("live");
    moved.set_user(Some("bob"));
    store.save(&moved).expect("save");
    assert!(store.sessions_of("ada").expect("list").is_empty());
    assert_eq!(store.sessions_of("bob").expect("list").len(), 1);
    assert!(store.verify(false).expect("verify").is_consistent());

    // After a regeneration the next save reads first (what the move wrote is not kept).
    store.regenerate(&mut moved).expect("regenerate");
    start_counting(&mut conn);
    moved.insert("after", &5u32).expect("insert");
    store.save(&moved).expect("save");
    assert_eq!(
        sent(&mut conn),
        ["GET", "EVALSHA"],
        "commands a save after a move sent"
    );
    let after = store.load(moved.id()).expect("load").expect("live");
    assert_eq!(after.get::<u32>("after").expect("get"), Some(5));
    assert_eq!(after.user(), Some("bob"));
}

/// An `update` that writes is three round trips: the lease (`SET NX`), the read, and the
/// write, whose script releases the lease as it lands, so no release script follows
/// (counted on a server of its own by `INFO commandstats`: one `EVALSHA` per update,
/// after a first update has loaded the scripts).
#[test]
fn an_update_is_three_round_trips() {
    let Some(server) = RedisServer::start(None) else {
        return;
    };
    let clock = ManualClock::new();
    let store = config(&server.url(), "count", &clock).open().expect("open");
    let s = logged_in(&store, "ada");
    let mut conn = raw(&server.url());
    let mut scripts_run = || commands_run(&mut conn, |name| name == "evalsha");
    store
        .update(s.id(), |s| s.insert("n", &1u32))
        .expect("first update");
    let before = scripts_run();
    store
        .update(s.id(), |s| s.insert("n", &2u32))
        .expect("update");
    assert_eq!(scripts_run() - before, 1, "scripts run by one update");
    let lease: Option<String> = raw(&server.url())
        .get("count:l:".to_owned() + &s.handle().to_string())
        .expect("get");
    assert_eq!(lease, None);
    assert_eq!(
        store
            .load(s.id())
            .expect("load")
            .expect("live")
            .get::<u32>("n")
            .expect("get"),
        Some(2)
    );
}
