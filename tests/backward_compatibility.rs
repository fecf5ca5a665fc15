//! Stores written by earlier releases keep opening, with every session intact.
//!
//! `tests/fixtures/format1/` is a store in format 1 written by sessile 0.1.0, with the
//! tokens it issued in `tokens.txt`. Regenerate it only when adding a new format (and keep
//! the old fixture): `cargo test --test backward_compatibility -- --ignored`.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sessile::{Config, ManualClock, SessionId, Store};

/// The fixture's clock: sessions were created at this instant.
const WRITTEN_AT: Duration = Duration::from_secs(1_795_000_000);

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1")
}

fn config(path: &Path, clock: &ManualClock) -> Config {
    Config::new(path).clock(clock.clock()).cleanup_thread(false)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn a_format_1_store_opens_with_every_session() {
    let dir = tempfile::tempdir().expect("temp");
    let path = dir.path().join("store");
    copy_dir(&fixture().join("store"), &path);
    let tokens = std::fs::read_to_string(fixture().join("tokens.txt")).expect("tokens");
    let clock = ManualClock::starting_at(UNIX_EPOCH + WRITTEN_AT + Duration::from_secs(60));
    let store = config(&path, &clock).open().expect("format 1 opens");
    assert_eq!(store.format_version(), 1);
    let mut seen = 0;
    for (i, line) in tokens.lines().enumerate() {
        let id: SessionId = line.parse().expect("token");
        let s = store.load(&id).expect("load").expect("session survived");
        assert_eq!(s.get::<u64>("n").expect("get"), Some(i as u64));
        assert_eq!(
            s.get::<Vec<String>>("tags").expect("get").map(|t| t.len()),
            Some(i % 3)
        );
        assert_eq!(s.user(), (i % 2 == 0).then_some("alice"));
        assert_eq!(s.created_at(), UNIX_EPOCH + WRITTEN_AT);
        seen += 1;
    }
    assert_eq!(seen, 12);
    assert_eq!(store.sessions_of("alice").expect("list").len(), 6);
    assert!(store.verify(false).expect("verify").is_consistent());
    // Expiry written by format 1 still drives the cleanup.
    clock.advance(sessile::DEFAULT_IDLE_TIMEOUT);
    assert_eq!(store.purge_expired().expect("purge"), 12);
}

#[test]
#[ignore = "writes the fixture; run by hand when adding a format"]
fn write_format_1_fixture() {
    let out = fixture();
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("mkdir");
    let clock = ManualClock::starting_at(UNIX_EPOCH + WRITTEN_AT);
    let store: Store = config(&out.join("store"), &clock).open().expect("open");
    let mut tokens = String::new();
    for i in 0..12u64 {
        let mut s = store.create().expect("create");
        s.insert("n", &i).expect("insert");
        let tags: Vec<String> = (0..i % 3).map(|t| format!("tag{t}")).collect();
        s.insert("tags", &tags).expect("insert");
        if i % 2 == 0 {
            s.set_user(Some("alice"));
        }
        store.save(&s).expect("save");
        tokens.push_str(&s.id().to_string());
        tokens.push('\n');
    }
    drop(store);
    std::fs::write(out.join("tokens.txt"), tokens).expect("write tokens");
}
