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

/// The online backup: `kill -USR1` makes the running server write every session to a file
/// while it serves other requests; the file, imported into a new folder, brings back every
/// session that was live when the backup was taken.
#[test]
fn a_backup_of_the_running_server_restores_every_live_session() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = start(&data);
    let mut anonymous = Client::new(server.addr);
    assert_eq!(anonymous.get("/").json()["visits"], json!(1));
    assert_eq!(anonymous.get("/").json()["visits"], json!(2));
    let mut logged_in: Vec<(Client, &str)> = ["alice", "bob"]
        .into_iter()
        .map(|user| {
            let mut client = Client::new(server.addr);
            let login = client.post_form("/login", &format!("user={user}"));
            assert_eq!(login.status, 200, "{login:?}");
            (client, user)
        })
        .collect();

    // Traffic while the backup runs: new sessions and visits.
    let stop = AtomicBool::new(false);
    let line = std::thread::scope(|scope| {
        let addr = server.addr;
        let stop = &stop;
        let traffic = scope.spawn(move || {
            let mut served = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let mut client = Client::new(addr);
                assert_eq!(client.get("/").status, 200);
                served += 1;
            }
            served
        });
        server.signal("USR1");
        let line = server.line_with("backup: ");
        stop.store(true, Ordering::Relaxed);
        assert!(traffic.join().expect("traffic") > 0, "no request ran");
        line
    });
    let file = line
        .split(" written to ")
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no path in {line:?}"));
    server.terminate();

    // A new folder: the backup imported, the cookie key copied, the server started on it.
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).expect("mkdir");
    std::fs::copy(data.join("cookie-key"), restored.join("cookie-key")).expect("copy key");
    let store = sessile::Store::open(restored.join("sessions")).expect("open");
    let backup = std::fs::File::open(&file).expect("the backup file");
    let imported = store
        .import(std::io::BufReader::new(backup))
        .expect("import");
    assert!(imported >= 3, "{imported} sessions in the backup");
    drop(store);

    let server = start(&restored);
    anonymous.addr = server.addr;
    assert_eq!(
        anonymous.get("/").json(),
        json!({ "user": null, "visits": 3 }),
        "the anonymous session came back with its visits"
    );
    for (client, user) in &mut logged_in {
        client.addr = server.addr;
        assert_eq!(client.get("/").json()["user"], json!(user), "{user}");
    }
    server.terminate();
}

/// Two overlapping requests of one session against the running server: a slow one
/// (`POST /note`, which loads the session and waits) and fast visits of `/` in the
/// meantime. Both changes are there afterwards: the slow save did not put back the
/// visit count it loaded.
#[test]
fn a_slow_request_keeps_what_fast_ones_saved_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir.path().join("data"));
    let mut tab = Client::new(server.addr);
    assert_eq!(tab.get("/").json(), json!({ "user": null, "visits": 1 }));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut slow_tab = tab.clone();
    std::thread::spawn(move || {
        let answer = slow_tab.post_form("/note", "text=hello&delay_ms=1500");
        let _ = tx.send((answer.json(), std::time::Instant::now()));
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(tab.get("/").json()["visits"], json!(2));
    assert_eq!(tab.get("/").json()["visits"], json!(3));
    let fast_done = std::time::Instant::now();
    let (answer, slow_done) = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the slow request finished");
    assert_eq!(answer, json!({ "note": "hello", "visits_seen": 1 }));
    assert!(fast_done < slow_done, "the requests did not overlap");
    assert_eq!(tab.get("/note").json(), json!({ "note": "hello" }));
    assert_eq!(
        tab.get("/").json()["visits"],
        json!(4),
        "the slow save put back the visit count it loaded"
    );
    server.terminate();
}
