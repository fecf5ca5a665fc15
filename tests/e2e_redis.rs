//! End to end on Redis: two processes of `examples/server.rs` on one Redis namespace, as
//! two servers behind a load balancer. A login through one is seen by the other, visits
//! counted on both add up, and a logout (or "log out other devices") through one holds on
//! the other at once.

#![cfg(all(unix, feature = "tower", feature = "redis"))]

#[path = "backend/mod.rs"]
mod backend;
mod support_e2e;

use std::time::Duration;

use serde_json::json;

use support_e2e::{Client, Running};

#[test]
fn two_server_processes_on_one_redis_share_logins_and_logouts() {
    let Some(url) = backend::shared_url() else {
        return;
    };
    let ns = format!("e2e{:016x}", std::process::id());
    let dir = tempfile::tempdir().expect("tempdir");
    // One data folder for both: it holds only the cookie key, which they must share.
    let data = dir.path().join("data");
    let env = [
        ("SESSILE_REDIS_URL", url.as_str()),
        ("SESSILE_REDIS_NAMESPACE", ns.as_str()),
    ];
    let a = Running::start_with("server", "tower redis", &data, &env);
    let b = Running::start_with("server", "tower redis", &data, &env);
    assert!(
        !data.join("sessions").exists(),
        "no sled folder: the sessions are on Redis"
    );

    let mut laptop = Client::new(a.addr);
    assert_eq!(laptop.get("/").json(), json!({ "user": null, "visits": 1 }));
    assert_eq!(laptop.post_form("/login", "user=alice").status, 200);
    laptop.addr = b.addr;
    assert_eq!(
        laptop.get("/").json(),
        json!({ "user": "alice", "visits": 2 }),
        "b sees the login made through a"
    );
    laptop.addr = a.addr;
    assert_eq!(
        laptop.get("/").json(),
        json!({ "user": "alice", "visits": 3 }),
        "a sees the visit counted by b"
    );

    let mut phone = Client::new(b.addr);
    assert_eq!(
        phone.post_form("/login", "user=alice&remember=on").status,
        200
    );
    let devices = laptop.get("/devices").json();
    assert_eq!(
        devices["devices"].as_array().expect("a list").len(),
        2,
        "{devices}"
    );
    assert_eq!(
        laptop.post("/logout-others").json(),
        json!({ "user": "alice", "destroyed": 1 })
    );
    assert_eq!(
        phone.get("/").json()["user"],
        json!(null),
        "the phone, served by b, was logged out through a"
    );

    let before_logout = laptop.clone();
    laptop.addr = b.addr;
    assert_eq!(laptop.post("/logout").status, 200);
    let mut replay = before_logout;
    replay.addr = a.addr;
    assert_eq!(
        replay.get("/").json(),
        json!({ "user": null, "visits": 1 }),
        "a logout through b holds on a"
    );
    a.terminate();
    b.terminate();
}

/// Two server processes on a Redis that persists to its append-only file; Redis is
/// killed (SIGKILL) and started again from that file while both servers sit idle, their
/// pooled connections dead without their knowing. Every request on both servers after
/// Redis is back answers, with every login and every visit count as before the kill.
#[test]
fn both_servers_answer_every_request_after_redis_restarts_from_its_aof() {
    if !backend::installed("redis-server", "redis-server") {
        return;
    }
    let redis_dir = tempfile::tempdir().expect("tempdir");
    let aof: Vec<String> = ["--appendonly", "yes", "--appendfsync", "always"]
        .map(String::from)
        .to_vec();
    let redis = backend::RedisServer::start_in(None, redis_dir.path(), &aof);
    let (port, url) = (redis.port, redis.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let env = [
        ("SESSILE_REDIS_URL", url.as_str()),
        ("SESSILE_REDIS_NAMESPACE", "restart"),
    ];
    let a = Running::start_with("server", "tower redis", &data, &env);
    let b = Running::start_with("server", "tower redis", &data, &env);

    let mut users: Vec<Client> = ["alice", "bob", "carol", "dave"]
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let mut client = Client::new(if i % 2 == 0 { a.addr } else { b.addr });
            assert_eq!(
                client.post_form("/login", &format!("user={user}")).status,
                200
            );
            client
        })
        .collect();
    // Both servers' connections sit idle past the store's idle check before the kill.
    std::thread::sleep(Duration::from_millis(1500));
    redis.kill();
    let _back = backend::RedisServer::start_in(Some(port), redis_dir.path(), &aof);

    for round in 0..2 {
        for (i, client) in users.iter_mut().enumerate() {
            for server in [a.addr, b.addr] {
                client.addr = server;
                let answer = client.get("/");
                assert_eq!(
                    answer.status, 200,
                    "request {round} of client {i} on {server} after the restart"
                );
                assert_eq!(
                    answer.json()["user"],
                    json!(["alice", "bob", "carol", "dave"][i]),
                    "the login survived the restart"
                );
            }
        }
    }
    assert_eq!(
        users[0].get("/").json()["visits"],
        json!(5),
        "every visit counted: four above, and this one"
    );
    a.terminate();
    b.terminate();
}
