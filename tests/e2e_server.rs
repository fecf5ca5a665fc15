//! End to end: `examples/server.rs` run as its own process, driven over HTTP with a
//! cookie jar, stopped with SIGTERM and started again on the same folder. The session,
//! its user and its visit count must survive; logout and "log out other devices" must
//! stick.

#![cfg(all(unix, feature = "tower"))]

mod support_e2e;

use serde_json::json;

use support_e2e::{Client, Running};

fn start(data: &std::path::Path) -> Running {
    Running::start("server", "tower", data)
}

#[test]
fn sessions_survive_a_sigterm_restart_of_the_example_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    let server = start(&data);
    let mut laptop = Client::new(server.addr);
    assert_eq!(laptop.get("/").json(), json!({ "user": null, "visits": 1 }));
    assert_eq!(laptop.get("/").json(), json!({ "user": null, "visits": 2 }));
    let anonymous = laptop.clone();
    let login = laptop.post_form("/login", "user=alice");
    assert_eq!(login.status, 200, "{login:?}");
    assert_ne!(
        laptop.cookie("id"),
        anonymous.cookie("id"),
        "login rotates the ID"
    );
    assert_eq!(
        laptop.get("/").json(),
        json!({ "user": "alice", "visits": 3 })
    );
    // The last write right before the signal must survive it.
    assert_eq!(laptop.post_form("/login", "user=alice").status, 200);
    server.terminate();

    let key = std::fs::metadata(data.join("cookie-key")).expect("key file");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );

    let server = start(&data);
    laptop.addr = server.addr;
    assert_eq!(
        laptop.get("/").json(),
        json!({ "user": "alice", "visits": 4 })
    );
    let mut old = anonymous;
    old.addr = server.addr;
    assert_eq!(
        old.get("/").json(),
        json!({ "user": null, "visits": 1 }),
        "the pre-login ID stays dead"
    );

    let mut phone = Client::new(server.addr);
    let remembered = phone.post_form("/login", "user=alice&remember=on");
    assert_eq!(
        remembered.json()["remembered"],
        json!(true),
        "{remembered:?}"
    );
    let devices = laptop.get("/devices").json();
    let list = devices["devices"].as_array().expect("a list");
    assert_eq!(list.len(), 2, "{devices}");
    // "Remember me" idles out after 30 days, the laptop's login after 30 minutes.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut left: Vec<u64> = list
        .iter()
        .map(|d| d["expires_at"].as_u64().expect("seconds") - now)
        .collect();
    left.sort_unstable();
    assert!(left[0] <= 30 * 60, "{devices}");
    assert!(left[1] > 29 * 86_400, "{devices}");
    assert_eq!(
        list.iter().filter(|d| d["current"] == json!(true)).count(),
        1
    );
    assert_eq!(
        laptop.post("/logout-others").json(),
        json!({ "user": "alice", "destroyed": 1 })
    );
    assert_eq!(
        phone.get("/").json()["user"],
        json!(null),
        "phone logged out"
    );

    let before_logout = laptop.clone();
    assert_eq!(laptop.post("/logout").status, 200);
    server.terminate();

    let server = start(&data);
    let mut replay = before_logout;
    replay.addr = server.addr;
    assert_eq!(
        replay.get("/").json(),
        json!({ "user": null, "visits": 1 }),
        "a logout survives the restart"
    );
    server.terminate();
}
