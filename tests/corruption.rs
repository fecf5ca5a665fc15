//! Damaged data on disk: a garbled session record is quarantined while the others stay
//! readable; truncated or garbled sled files make `open` fail with an error or recover,
//! never panic or abort; a store written by a newer format refuses to open.
//!
//! What sled 0.34.7 does with damaged files (run with `--nocapture` to see each case): a
//! damaged `conf` fails to open with a storage error; a truncated or garbled `db` log is
//! recovered up to the first damaged entry, without an error, so the sessions written
//! after that point are lost (and a garbled file header loses them all).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sessile::{Config, Error, ManualClock, Session, SessionHandle, Store};

fn config(path: &Path, clock: &ManualClock) -> Config {
    Config::new(path)
        .idle_timeout(Duration::from_secs(600))
        .purge_thread(false)
        .clock(clock.clock())
}

/// A store with `n` sessions, each holding its index under "i" and a user; closed again.
fn populated(dir: &Path, clock: &ManualClock, n: usize) -> (PathBuf, Vec<Session>) {
    let path = dir.join("store");
    let store = config(&path, clock).open().expect("open");
    let sessions = (0..n)
        .map(|i| {
            let mut s = store.create().expect("create");
            s.insert("i", &(i as u64)).expect("insert");
            s.insert("blob", &vec![i as u8; 100]).expect("insert");
            s.set_user(Some(format!("user{}", i % 2).as_str()));
            store.save(&s).expect("save");
            store.load(s.id()).expect("load").expect("live")
        })
        .collect();
    drop(store);
    (path, sessions)
}

/// The sled key of a session: the 32-byte digest whose first 16 bytes are its handle.
fn digest_of(db: &sled::Db, handle: &SessionHandle) -> sled::IVec {
    let hex = handle.to_string();
    let prefix: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let sessions = db.open_tree("sessions").expect("tree");
    let mut keys = sessions.scan_prefix(prefix).keys();
    let key = keys.next().expect("record present").expect("key");
    assert!(keys.next().is_none(), "handle prefix is unique");
    key
}

fn assert_intact(store: &Store, sessions: &[Session]) {
    for s in sessions {
        let back = store.load(s.id()).expect("load").expect("intact session");
        assert_eq!(
            back.get::<u64>("i").expect("i"),
            s.get::<u64>("i").expect("i")
        );
        assert_eq!(back.get_bytes("blob"), s.get_bytes("blob"));
        assert_eq!(back.user(), s.user());
    }
}

#[test]
fn a_garbled_record_is_quarantined_and_the_rest_survive() {
    // Each way a record can be damaged: truncated header, unknown format byte, a payload
    // length prefix claiming 2^60 entries, trailing garbage, flipped bytes in the user
    // length, and a payload cut short.
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 6] = [
        ("truncated header", |b| b.truncate(10)),
        ("unknown format", |b| b[0] = 0x7f),
        ("huge length prefix", |b| {
            // Format 2: the user length is at 49..51 (see ARCHITECTURE.md).
            let user_len = usize::from(u16::from_be_bytes([b[49], b[50]]));
            b.truncate(51 + user_len);
            b.push(0xFD);
            b.extend_from_slice(&(1u64 << 60).to_le_bytes());
        }),
        ("trailing garbage", |b| b.extend_from_slice(b"garbage")),
        ("user length", |b| {
            b[49] = 0xFF;
            b[50] = 0x00;
        }),
        ("payload cut short", |b| {
            let n = b.len();
            b.truncate(n - 40);
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let (path, sessions) = populated(dir.path(), &clock, 4);
        let victim = &sessions[1];
        let original;
        {
            let db = sled::open(&path).expect("sled open");
            let key = digest_of(&db, &victim.handle());
            let tree = db.open_tree("sessions").expect("tree");
            let mut bytes = tree.get(&key).expect("get").expect("present").to_vec();
            original = bytes.clone();
            damage(&mut bytes);
            tree.insert(&key, bytes).expect("insert garbage");
            db.flush().expect("flush");
        }

        let store = config(&path, &clock).open().expect("reopen");
        let report = store.verify(false).expect("verify");
        assert_eq!(report.undecodable, 1, "{what}: {report:?}");
        assert!(!report.is_consistent(), "{what}");

        assert!(store.load(victim.id()).expect("load").is_none(), "{what}");
        assert_eq!(store.stats().quarantined, 1, "{what}");
        let others: Vec<Session> = sessions
            .iter()
            .filter(|s| s.id() != victim.id())
            .cloned()
            .collect();
        assert_intact(&store, &others);
        // The damaged session is gone for every API, and nothing else is.
        assert!(!store.touch(victim.id()).expect("touch"), "{what}");
        assert!(matches!(store.save(victim), Err(Error::NotFound)), "{what}");
        assert_eq!(store.len().expect("len"), 3, "{what}");
        assert_eq!(
            store.sessions_of("user1").expect("sessions_of").len(),
            1,
            "{what}: user1 keeps only its intact session"
        );
        let report = store.verify(true).expect("repair");
        assert!(report.is_consistent(), "{what}: {report:?}");
        assert_eq!(report.quarantined, 1, "{what}");
        assert!(
            store.verify(false).expect("verify").is_consistent(),
            "{what}"
        );
        drop(store);

        // The raw bytes are kept for inspection.
        let db = sled::open(&path).expect("sled open");
        let kept: Vec<_> = db
            .open_tree("quarantine")
            .expect("tree")
            .iter()
            .values()
            .collect::<Result<_, _>>()
            .expect("values");
        assert_eq!(kept.len(), 1, "{what}");
        assert_ne!(&kept[0][..], original.as_slice(), "{what}");
    }
}

#[test]
fn repair_quarantines_a_garbled_record_found_by_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let (path, sessions) = populated(dir.path(), &clock, 3);
    {
        let db = sled::open(&path).expect("sled open");
        let key = digest_of(&db, &sessions[0].handle());
        let tree = db.open_tree("sessions").expect("tree");
        tree.insert(&key, &b"\x01not a record"[..]).expect("insert");
        db.flush().expect("flush");
    }
    let store = config(&path, &clock).open().expect("reopen");
    let report = store.verify(true).expect("repair");
    assert_eq!(report.undecodable, 1);
    assert_eq!(store.stats().quarantined, 1);
    assert!(store.verify(false).expect("verify").is_consistent());
    assert!(store.load(sessions[0].id()).expect("load").is_none());
    assert_intact(&store, &sessions[1..]);
}

/// Opens `path` and reports what happened, treating a panic as a failure of its own.
fn open_damaged(path: &Path, clock: &ManualClock) -> Result<Result<Store, Error>, String> {
    catch_unwind(AssertUnwindSafe(|| config(path, clock).open())).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

/// After damage, opening must not panic. If it fails, the error says what is wrong; if
/// sled recovers, the store must work: verify runs and every load answers.
fn check_damaged_open(what: &str, path: &Path, clock: &ManualClock, sessions: &[Session]) {
    match open_damaged(path, clock) {
        Err(panic) => panic!("{what}: open panicked: {panic}"),
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(
                matches!(e, Error::Storage(_) | Error::Corrupt { .. }),
                "{what}: unexpected error kind: {e:?}"
            );
            assert!(msg.len() > 20, "{what}: unclear error: {msg:?}");
            eprintln!("{what}: open failed: {msg}");
        }
        Ok(Ok(store)) => {
            let report = store.verify(false).expect("verify on a recovered store");
            let mut found = 0;
            for s in sessions {
                found += usize::from(store.load(s.id()).expect("load").is_some());
            }
            eprintln!("{what}: recovered, {found} sessions readable, {report:?}");
            // sled keeps the intact prefix of its log; the store must go on working.
            let s = store.create().expect("create on a recovered store");
            assert!(store.load(s.id()).expect("load").is_some(), "{what}");
        }
    }
}

fn sled_files(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn truncated_sled_files_fail_to_open_cleanly() {
    let template = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let (path, sessions) = populated(template.path(), &clock, 20);
    let files = sled_files(&path);
    assert!(!files.is_empty());
    for file in &files {
        let len = std::fs::metadata(file).expect("metadata").len();
        for keep in [0, len / 2, len.saturating_sub(1)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let copy = dir.path().join("store");
            copy_tree(&path, &copy);
            let target = copy.join(file.strip_prefix(&path).expect("inside"));
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .expect("open file");
            f.set_len(keep).expect("truncate");
            drop(f);
            let what = format!("{} truncated to {keep} of {len}", target.display());
            check_damaged_open(&what, &copy, &clock, &sessions);
        }
    }
}

#[test]
fn garbled_sled_files_fail_to_open_cleanly() {
    let template = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let (path, sessions) = populated(template.path(), &clock, 20);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for file in sled_files(&path) {
        let len = std::fs::metadata(&file).expect("metadata").len();
        if len == 0 {
            continue;
        }
        for round in 0..4 {
            let dir = tempfile::tempdir().expect("tempdir");
            let copy = dir.path().join("store");
            copy_tree(&path, &copy);
            let target = copy.join(file.strip_prefix(&path).expect("inside"));
            let mut bytes = std::fs::read(&target).expect("read");
            // Round 0 garbles the start (headers), the others random spots.
            for k in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = if round == 0 {
                    k % bytes.len()
                } else {
                    (seed % len) as usize
                };
                bytes[at] ^= (seed >> 32) as u8 | 1;
            }
            std::fs::write(&target, &bytes).expect("write");
            let what = format!("{} garbled (round {round})", target.display());
            check_damaged_open(&what, &copy, &clock, &sessions);
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

#[test]
fn a_store_from_a_newer_format_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let (path, sessions) = populated(dir.path(), &clock, 2);
    let current = {
        let store = config(&path, &clock).open().expect("open");
        store.format_version()
    };
    {
        let db = sled::open(&path).expect("sled open");
        let meta = db.open_tree("meta").expect("meta");
        meta.insert("format", &(current + 1).to_be_bytes())
            .expect("insert");
        db.flush().expect("flush");
    }
    match config(&path, &clock).open() {
        Err(Error::UnsupportedFormat {
            found, supported, ..
        }) => {
            assert_eq!(found, current + 1);
            assert_eq!(supported, current);
        }
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
    // Nothing was changed on disk: the marker and the records are as they were.
    {
        let db = sled::open(&path).expect("sled open");
        let meta = db.open_tree("meta").expect("meta");
        assert_eq!(
            &meta.get("format").expect("get").expect("present")[..],
            &(current + 1).to_be_bytes()
        );
        assert_eq!(db.open_tree("sessions").expect("tree").len(), 2);
        // A marker of the wrong size is damage, not a version.
        meta.insert("format", &b"\x00\x01"[..]).expect("insert");
        db.flush().expect("flush");
    }
    assert!(matches!(
        config(&path, &clock).open(),
        Err(Error::Corrupt { .. })
    ));
    {
        let db = sled::open(&path).expect("sled open");
        let meta = db.open_tree("meta").expect("meta");
        meta.insert("format", &current.to_be_bytes())
            .expect("insert");
        db.flush().expect("flush");
    }
    let store = config(&path, &clock)
        .open()
        .expect("the current format opens");
    assert_intact(&store, &sessions);
}
