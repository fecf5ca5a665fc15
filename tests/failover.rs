//! A Sentinel failover: a primary, a replica and three redis-sentinels on loopback ports
//! (`redis-sentinel`, Debian package `redis-sentinel`). The primary is killed; the store,
//! opened with `Config::redis_sentinel` and `redis_min_replicas(1)`, finds the promoted
//! replica by itself, no call hangs on the way (each returns within 8 s), and every
//! session and every logout is as it was before the kill.

#![cfg(feature = "redis")]

#[path = "backend/mod.rs"]
mod backend;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use backend::RedisServer;
use sessile::{Config, Session, Store};

const MASTER: &str = "sessile-primary";
/// The longest any one call may take during the failover.
const CALL_LIMIT: Duration = Duration::from_secs(8);

fn raw(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).expect("client");
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connection");
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    conn
}

/// Waits (at most 30 s) until `ready` holds.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A field of `SENTINEL MASTER <name>` as one Sentinel sees it.
fn master_field(sentinel: &str, field: &str) -> Option<String> {
    let flat: Vec<String> = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(MASTER)
        .query(&mut raw(sentinel))
        .ok()?;
    flat.chunks(2)
        .find(|pair| pair[0] == field)
        .and_then(|pair| pair.get(1).cloned())
}

fn logged_in(store: &Store, user: &str, n: u32) -> Session {
    let mut s = store.create().expect("create");
    s.set_user(Some(user));
    s.insert("n", &n).expect("insert");
    store.save(&s).expect("save");
    s
}

#[test]
fn a_sentinel_failover_keeps_every_session_and_every_logout() {
    let Some(primary) = RedisServer::start(None) else {
        return;
    };
    let replica = backend::start_replica(&primary);
    let Some(sentinels) = (0..3)
        .map(|_| RedisServer::start_sentinel(primary.port, MASTER))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let urls: Vec<String> = sentinels.iter().map(RedisServer::url).collect();
    // Every Sentinel knows the replica and the two others before the primary dies.
    for url in &urls {
        wait_until("the Sentinels see each other and the replica", || {
            master_field(url, "num-slaves").as_deref() == Some("1")
                && master_field(url, "num-other-sentinels").as_deref() == Some("2")
        });
    }

    let store = Config::redis_sentinel(urls.clone(), MASTER)
        .redis_namespace("failover")
        .redis_min_replicas(1)
        .purge_thread(false)
        .open()
        .expect("open through the Sentinels");
    let mut live: Vec<Session> = (0..20)
        .map(|i| logged_in(&store, &format!("u{i}"), i))
        .collect();
    let logged_out: Vec<Session> = live.drain(15..).collect();
    for s in &logged_out {
        assert!(store.destroy(s.id()).expect("logout"));
    }
    let everywhere: Vec<Session> = (0..3).map(|i| logged_in(&store, "eve", 100 + i)).collect();
    assert_eq!(store.destroy_user("eve", None).expect("revoke-all"), 3);
    // The logouts above waited for the replica; the saves are on it once flush returns.
    store.flush().expect("flush waits for the replica");

    primary.kill();
    let killed = Instant::now();

    // Calls during the failover, on a thread, each awaited for at most CALL_LIMIT: every
    // one errors or succeeds in time, and creates succeed again once Sentinel promoted.
    let (tx, rx) = mpsc::channel();
    let prober = store.clone();
    std::thread::spawn(move || {
        loop {
            let started = Instant::now();
            let created = prober.create().map(|s| s.id().clone());
            let ok = created.is_ok();
            if tx.send((created.map(|_| ()), started.elapsed())).is_err() || ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let mut failures = 0;
    loop {
        match rx.recv_timeout(CALL_LIMIT) {
            Ok((Ok(()), took)) => {
                assert!(took < CALL_LIMIT, "a call took {took:?}");
                break;
            }
            Ok((Err(e), took)) => {
                assert!(took < CALL_LIMIT, "a call took {took:?} to fail: {e}");
                failures += 1;
            }
            Err(RecvTimeoutError::Timeout) => panic!("a call hung for {CALL_LIMIT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the prober panicked"),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no promotion within 60 s ({failures} failed calls)"
        );
    }
    eprintln!(
        "service back {:?} after the kill, {failures} calls failed on the way",
        killed.elapsed()
    );
    // The store found the new primary through whichever Sentinel knew it first; every
    // Sentinel names the replica soon after.
    for url in &urls {
        wait_until("the Sentinels name the promoted replica", || {
            master_field(url, "port") == Some(replica.port.to_string())
        });
    }

    for (i, s) in live.iter().enumerate() {
        let back = store
            .load(s.id())
            .expect("load")
            .unwrap_or_else(|| panic!("session {i} was lost in the failover"));
        assert_eq!(back.get::<u32>("n").expect("get"), Some(i as u32));
        assert_eq!(back.user(), Some(format!("u{i}").as_str()));
    }
    for s in logged_out.iter().chain(&everywhere) {
        assert!(
            store.load(s.id()).expect("load").is_none(),
            "a logout came back after the failover"
        );
    }
    let after = logged_in(&store, "after", 7);
    assert!(
        store
            .destroy(after.id())
            .expect("a logout on the new primary")
    );
}
