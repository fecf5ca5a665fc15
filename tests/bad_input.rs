//! Bad input gives clear errors, never a panic, and never loses or changes what is stored.

mod support;

use sessile::{Config, Error, Oversized, SessionId, Store};
use support::Fixture;

#[test]
fn malformed_tokens_are_errors() {
    for bad in [
        "",
        "short",
        &"A".repeat(44),
        &"*".repeat(43),
        "ü".repeat(22).as_str(),
    ] {
        let parsed = bad.parse::<SessionId>();
        assert!(parsed.is_err(), "{bad:?} parsed");
        let err: Error = parsed.expect_err("error").into();
        assert!(matches!(err, Error::InvalidToken(_)));
    }
}

#[test]
fn oversized_value_is_refused_and_the_session_is_unchanged() {
    let f = Fixture::new();
    let store = f.config().max_record_size(4096).open().expect("open");
    let mut s = store.create().expect("create");
    s.insert("small", &1u8).expect("insert");
    let err = s.insert("big", &vec![0u8; 10_000]).expect_err("too large");
    assert!(
        matches!(
            err,
            Error::TooLarge {
                what: Oversized::Value,
                ..
            }
        ),
        "{err}"
    );
    assert!(!s.contains_key("big"));
    assert_eq!(s.len(), 1);
    let err = s.insert(&"k".repeat(1000), &1u8).expect_err("long key");
    assert!(matches!(
        err,
        Error::TooLarge {
            what: Oversized::Key,
            ..
        }
    ));
}

#[test]
fn oversized_record_is_refused_and_nothing_is_stored() {
    let f = Fixture::new();
    let store = f.config().max_record_size(4096).open().expect("open");
    let mut s = store.create().expect("create");
    s.insert("keep", &7u8).expect("insert");
    store.save(&s).expect("save");
    for i in 0..3 {
        s.insert(&format!("part{i}"), &vec![1u8; 1500])
            .expect("each value fits");
    }
    let err = store.save(&s).expect_err("record too large");
    assert!(
        matches!(
            err,
            Error::TooLarge {
                what: Oversized::Record,
                ..
            }
        ),
        "{err}"
    );
    let stored = store.load(s.id()).expect("load").expect("live");
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["keep"]);
}

#[test]
fn overlong_user_name_is_refused_at_save() {
    let f = Fixture::new();
    let store = f.open();
    let mut s = store.create().expect("create");
    s.set_user(Some(&"u".repeat(sessile::MAX_USER_LEN + 1)));
    let err = store.save(&s).expect_err("user too long");
    assert!(matches!(
        err,
        Error::TooLarge {
            what: Oversized::User,
            ..
        }
    ));
    assert_eq!(
        store.load(s.id()).expect("load").expect("live").user(),
        None
    );
}

#[test]
fn undecodable_record_is_quarantined_and_others_survive() {
    let Some(f) = Fixture::sled_only() else {
        return;
    };
    let (bad, good) = {
        let store = f.open();
        let mut bad = store.create().expect("create");
        bad.insert("x", &1u8).expect("insert");
        store.save(&bad).expect("save");
        let mut good = store.create().expect("create");
        good.insert("y", &2u8).expect("insert");
        store.save(&good).expect("save");
        (bad, good)
    };
    let key = {
        let store = f.open();
        store
            .inspect(&bad.handle())
            .expect("inspect")
            .expect("stored")
            .key
    };
    {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&key)
            .expect("key is base64");
        let db = sled::open(f.path()).expect("sled open");
        let sessions = db.open_tree("sessions").expect("tree");
        let mut bytes = sessions.get(&raw).expect("get").expect("present").to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // garble the payload
        bytes.push(0x42);
        sessions.insert(&raw, bytes).expect("insert");
        db.flush().expect("flush");
    }
    let store = f.open();
    assert!(store.load(bad.id()).expect("load").is_none());
    assert_eq!(store.stats().quarantined, 1);
    let good = store
        .load(good.id())
        .expect("load")
        .expect("other session intact");
    assert_eq!(good.get::<u8>("y").expect("get"), Some(2));
    assert_eq!(store.verify(false).expect("verify").quarantined, 1);
}

#[test]
fn a_path_that_is_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp");
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a folder").expect("write");
    let err = Store::open(&file).expect_err("file");
    assert!(
        matches!(&err, Error::Folder { path, .. } if *path == file),
        "{err}"
    );
    // The OS refuses a folder under a regular file even for root.
    let under = file.join("sessions");
    let err = Store::open(&under).expect_err("under a file");
    assert!(
        matches!(&err, Error::Folder { path, .. } if *path == under),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).expect("read"), b"not a folder");
}

#[cfg(unix)]
#[test]
fn unwritable_folder_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    // root ignores permission bits: nothing to test there.
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if uid.is_ok_and(|uid| uid == 0) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp");
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    let err = Store::open(ro.join("sessions")).expect_err("unwritable");
    assert!(matches!(err, Error::Folder { .. }), "{err}");
}

/// An existing folder other users may enter (a 0755 volume) is closed to them when the
/// store opens in it: sled's files take the process's umask, often 0644.
#[cfg(unix)]
#[test]
fn an_existing_folder_open_to_others_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp");
    let folder = dir.path().join("shared-volume");
    std::fs::create_dir(&folder).expect("mkdir");
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let store = Config::new(&folder)
        .purge_thread(false)
        .open()
        .expect("open");
    store.create().expect("create");
    store.flush().expect("flush");
    let mode = std::fs::metadata(&folder)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "mode {mode:o}");
}

#[test]
fn invalid_config_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("temp");
    let p = dir.path().join("s");
    let cases = [
        Config::new(&p).idle_timeout(std::time::Duration::ZERO),
        Config::new(&p).absolute_timeout(std::time::Duration::ZERO),
        Config::new(&p).purge_interval(std::time::Duration::ZERO),
        Config::new(&p).purge_batch(0),
        Config::new(&p).max_record_size(10),
        Config::new(&p).max_record_size(usize::MAX),
        Config::new(&p).max_sessions_per_user(0),
        Config::new(&p).event_capacity(0),
    ];
    for config in cases {
        assert!(matches!(config.open(), Err(Error::InvalidConfig { .. })));
    }
    assert!(!p.exists(), "an invalid config created the folder");
}

#[test]
fn format_from_the_future_refuses_to_open() {
    let Some(f) = Fixture::sled_only() else {
        return;
    };
    drop(f.open());
    {
        let db = sled::open(f.path()).expect("sled");
        db.open_tree("meta")
            .expect("meta")
            .insert("format", &99u32.to_be_bytes())
            .expect("insert");
        db.flush().expect("flush");
    }
    match f.config().open() {
        Err(Error::UnsupportedFormat {
            found: 99,
            supported: 2,
            ..
        }) => {}
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
}

#[test]
fn no_issued_token_is_on_disk() {
    let Some(f) = Fixture::sled_only() else {
        return;
    };
    let mut tokens = Vec::new();
    {
        let store = f.open();
        for _ in 0..200 {
            let mut s = store.create().expect("create");
            s.insert("v", &1u8).expect("insert");
            s.set_user(Some("alice"));
            store.save(&s).expect("save");
            tokens.push(s.id().clone());
        }
        let mut rotated = store.create().expect("create");
        tokens.push(rotated.id().clone());
        store.regenerate(&mut rotated).expect("regenerate");
        tokens.push(rotated.id().clone());
        store.flush().expect("flush");
    }
    let bytes = support::all_file_bytes(&f.path());
    assert!(bytes.len() > 1000);
    for token in &tokens {
        let text = token.to_string();
        assert!(
            !support::contains(&bytes, text.as_bytes()),
            "token text on disk"
        );
        // The raw 32 bytes behind the text.
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&text)
            .expect("base64");
        assert!(!support::contains(&bytes, &raw), "raw token on disk");
    }
}
