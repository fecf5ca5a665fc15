//! End to end: `examples/axum_login.rs` (axum-login 0.18 on tower-sessions 0.14 on
//! sessile) run as its own process across SIGTERM restarts. A login survives a restart,
//! the devices page lists every session of the user from sessile's per-user index, "log
//! out other devices" and "log out everywhere" kill the right sessions, and a logout
//! survives a restart.

#![cfg(all(unix, feature = "tower-014"))]

mod support_e2e;

use serde_json::json;

use support_e2e::{Client, Running};

fn start(data: &std::path::Path) -> Running {
    Running::start("axum_login", "tower-014", data)
}

fn me(client: &mut Client) -> serde_json::Value {
    client.get("/me").json()["user"].clone()
}

#[test]
fn axum_login_sessions_survive_restarts_and_revoke_all_kills_every_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = start(&data);

    let mut laptop = Client::new(server.addr);
    assert_eq!(laptop.get("/me").status, 401, "protected before login");
    let wrong = laptop.post_form("/login", "username=alice&password=nope");
    assert_eq!(wrong.status, 401);
    let login = laptop.post_form("/login", "username=alice&password=wonderland");
    assert_eq!(login.status, 200, "{login:?}");
    assert_eq!(me(&mut laptop), json!("alice"));
    let mut phone = Client::new(server.addr);
    let remembered = phone.post_form("/login", "username=alice&password=wonderland&remember=on");
    assert_eq!(remembered.json()["remembered"], json!(true));
    let mut bob = Client::new(server.addr);
    assert_eq!(
        bob.post_form("/login", "username=bob&password=builder")
            .status,
        200
    );
    server.terminate();

    // The logins survive a restart, and the per-user index knows both of alice's devices
    // (axum-login keeps user id 1 in the session; nothing in the app records it).
    let server = start(&data);
    for c in [&mut laptop, &mut phone, &mut bob] {
        c.addr = server.addr;
    }
    assert_eq!(me(&mut laptop), json!("alice"));
    assert_eq!(me(&mut phone), json!("alice"));
    let devices = laptop.get("/devices").json();
    let list = devices["devices"].as_array().expect("a list");
    assert_eq!(list.len(), 2, "{devices}");
    assert_eq!(
        list.iter().filter(|d| d["current"] == json!(true)).count(),
        1
    );

    // "Log out my other devices" from the laptop: the phone is out, the laptop and bob in.
    assert_eq!(laptop.post("/logout-others").json()["destroyed"], json!(1));
    assert_eq!(phone.get("/me").status, 401, "the phone is logged out");
    assert_eq!(me(&mut laptop), json!("alice"));
    let mut tablet = Client::new(server.addr);
    assert_eq!(
        tablet
            .post_form("/login", "username=alice&password=wonderland")
            .status,
        200
    );

    // "Log out everywhere" from the tablet kills the laptop too.
    assert_eq!(
        tablet.post("/logout-everywhere").json()["destroyed"],
        json!(2)
    );
    assert_eq!(laptop.get("/me").status, 401);
    assert_eq!(tablet.get("/me").status, 401);
    assert_eq!(me(&mut bob), json!("bob"), "other users are untouched");

    // A plain logout survives a restart, even replayed with the old cookie.
    let before_logout = bob.clone();
    assert_eq!(bob.post("/logout").status, 200);
    server.terminate();
    let server = start(&data);
    let mut replay = before_logout;
    replay.addr = server.addr;
    assert_eq!(
        replay.get("/me").status,
        401,
        "a logout survives the restart"
    );
    server.terminate();
}
