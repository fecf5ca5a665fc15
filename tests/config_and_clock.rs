//! Edge cases of settings, the manual clock, a refused open and a half-damaged record.
//!
//! Absurd settings run each in a child process (this test binary, filtered to
//! `absurd_setting_child`), so an abort or a hang in one is reported, not fatal.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sessile::{Config, Error, ManualClock, Session, SessionHandle};

const CASE_ENV: &str = "SESSILE_ABSURD_CASE";
type Setting = fn(Config) -> Config;
#[rustfmt::skip]
const CASES: [(&str, Setting); 10] = [
    ("event_capacity(usize::MAX)", |c| c.event_capacity(usize::MAX)),
    ("cache_entries(usize::MAX)", |c| c.cache_entries(usize::MAX)),
    ("purge_batch(usize::MAX)", |c| c.purge_batch(usize::MAX)),
    ("storage_cache_bytes(u64::MAX)", |c| c.storage_cache_bytes(u64::MAX)),
    ("idle_timeout(Duration::MAX)", |c| c.idle_timeout(Duration::MAX)),
    ("absolute_timeout(Duration::MAX)", |c| c.absolute_timeout(Duration::MAX)),
    ("touch_granularity(Duration::MAX)", |c| c.touch_granularity(Duration::MAX)),
    ("purge_interval(Duration::MAX)", |c| c.purge_interval(Duration::MAX)),
    ("max_sessions_per_user(usize::MAX)", |c| c.max_sessions_per_user(usize::MAX)),
    ("max_record_size(usize::MAX)", |c| c.max_record_size(usize::MAX)),
];

fn step<T: std::fmt::Debug>(name: &str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => {
            println!("STEP {name}: {v:?}");
            Some(v)
        }
        Err(_) => {
            println!("STEP {name}: PANIC");
            None
        }
    }
}

/// The child process of `absurd_settings_neither_panic_nor_hang`, one per setting; not a
/// test of its own (ignored, so it never counts as a pass).
#[test]
#[ignore = "run by absurd_settings_neither_panic_nor_hang as a child process"]
fn absurd_setting_child() {
    let Ok(case) = std::env::var(CASE_ENV) else {
        return;
    };
    let (_, absurd) = CASES
        .iter()
        .find(|(name, _)| *name == case)
        .expect("known case");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::new(dir.path().join("store")).clock(ManualClock::new().clock());
    let Some(Ok(store)) = step("open", || absurd(config).open()) else {
        return;
    };
    println!("OPENED");
    step("subscribe", || store.subscribe().len());
    let mut made = None;
    step("create", || store.create().map(|s| made = Some(s)));
    let Some(mut s) = made else { return };
    s.set_user(Some("u"));
    let _ = s.insert("k", &7u32);
    step("save", || store.save(&s));
    step("load", || {
        store.load(s.id()).map(|s| s.map(|s| s.get::<u32>("k")))
    });
    step("touch", || store.touch(s.id()));
    step("sessions_of", || store.sessions_of("u").map(|l| l.len()));
    step("purge_expired", || store.purge_expired());
    step("drop", move || drop(store));
}

#[test]
fn absurd_settings_neither_panic_nor_hang() {
    let exe = std::env::current_exe().expect("current exe");
    let mut failures = Vec::new();
    for (case, _) in CASES {
        let child = Command::new(&exe)
            .args([
                "absurd_setting_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CASE_ENV, case)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let Ok(out) = rx.recv_timeout(Duration::from_secs(15)) else {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            println!("{case}: HANG (killed)");
            failures.push(format!("{case}: hang"));
            continue;
        };
        let out = out.expect("child output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // libtest prints "test name ... " without a newline first: find STEP anywhere.
        let steps: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.find("STEP").map(|i| &l[i + 5..]))
            .collect();
        let opened = stdout.contains("OPENED");
        let open_line = steps.first().copied().unwrap_or("no open step");
        println!(
            "{case}: opened={opened} exit={:?} {}",
            out.status.code(),
            steps.join(" | ")
        );
        let panicked = stdout.contains("PANIC") || stderr.contains("panicked");
        if panicked || !out.status.success() {
            let mut lines = stderr.lines().skip_while(|l| !l.contains("panicked"));
            let why = lines.nth(1).or(stderr.lines().last());
            failures.push(format!(
                "{case}: exit {:?}, {why:?}, steps: {}",
                out.status,
                steps.join(" | ")
            ));
        } else if !opened && !open_line.contains("InvalidConfig") {
            failures.push(format!(
                "{case}: open failed with something else: {open_line}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} absurd settings failed: {failures:#?}",
        failures.len(),
        CASES.len()
    );
}

#[test]
fn advancing_the_manual_clock_by_duration_max_never_goes_backwards() {
    let clock = ManualClock::new();
    let before = clock.now();
    clock.advance(Duration::MAX);
    let after = clock.now();
    assert!(
        after >= before,
        "advance(Duration::MAX) moved the clock back: {before:?} -> {after:?}"
    );
    clock.advance(Duration::from_secs(1));
    assert!(
        clock.now() >= after,
        "a second advance moved it back: {after:?} -> {:?}",
        clock.now()
    );
}

fn config(path: &Path, clock: &ManualClock) -> Config {
    Config::new(path)
        .idle_timeout(Duration::from_secs(30 * 60))
        .purge_thread(false)
        .clock(clock.clock())
}

/// A raw sled handle on a store folder. sled keeps the folder's file lock for a moment
/// after its handle is dropped, so dropping this waits (bounded) until the lock is free
/// and the next `Store::open` does not see the folder as in use.
struct RawSled {
    db: Option<sled::Db>,
    lock_file: std::path::PathBuf,
}

fn raw_sled(path: &Path) -> RawSled {
    // The same holds for a store just dropped: its sled threads may still hold the lock
    // for a moment, so retry (bounded) while the folder is locked.
    let deadline = Instant::now() + Duration::from_secs(10);
    let db = loop {
        match sled::open(path) {
            Ok(db) => break db,
            Err(e) if Instant::now() < deadline && e.to_string().contains("acquire lock") => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("raw sled open: {e:?}"),
        }
    };
    RawSled {
        db: Some(db),
        lock_file: path.join("db"),
    }
}

impl std::ops::Deref for RawSled {
    type Target = sled::Db;
    fn deref(&self) -> &sled::Db {
        self.db.as_ref().expect("open until dropped")
    }
}

impl Drop for RawSled {
    fn drop(&mut self) {
        drop(self.db.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let free = std::fs::File::open(&self.lock_file).is_ok_and(|f| f.try_lock().is_ok());
            if free {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn set_format(path: &Path, format: u32) {
    let db = raw_sled(path);
    let meta = db.open_tree("meta").expect("meta");
    meta.insert("format", &format.to_be_bytes())
        .expect("insert");
    db.flush().expect("flush");
}

#[test]
fn a_refused_open_is_quick_and_leaves_the_folder_openable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let path = dir.path().join("store");
    let store = config(&path, &clock).open().expect("open");
    let id = store.create().expect("create").id().clone();
    drop(store);
    set_format(&path, 3);
    let timed = || {
        let start = Instant::now();
        let r = config(&path, &clock).open().map(|_| ());
        (r, start.elapsed())
    };
    let (first, first_took) = timed();
    let (second, second_took) = timed();
    println!("refused open took {first_took:?}, then {second_took:?}: {first:?} / {second:?}");
    for r in [&first, &second] {
        assert!(
            matches!(r, Err(Error::UnsupportedFormat { found: 3, .. })),
            "open of a format-3 store right after a refused one: {r:?}"
        );
    }
    {
        let db = raw_sled(&path);
        let meta = db.open_tree("meta").expect("meta");
        let format = meta.get("format").expect("get").map(|v| v.to_vec());
        assert_eq!(
            format,
            Some(3u32.to_be_bytes().to_vec()),
            "the refused store was changed"
        );
    }
    set_format(&path, 2);
    let store = config(&path, &clock)
        .open()
        .expect("open after the format is put back");
    assert!(
        store.load(&id).expect("load").is_some(),
        "the session is still there"
    );
    let limit = Duration::from_millis(2500);
    assert!(
        first_took < limit && second_took < limit,
        "a refused open took {first_took:?} and {second_took:?} (limit {limit:?})"
    );
}

/// A store with a healthy session and a victim, both of user "mallory", closed again; the
/// victim's payload (everything after the user bytes) is then overwritten with a bincode
/// length prefix of 2^64-1 entries, so header and user parse and the data does not.
type Garbled = (
    tempfile::TempDir,
    ManualClock,
    PathBuf,
    Session,
    Session,
    sled::IVec,
    Vec<u8>,
);

fn garbled() -> Garbled {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let path = dir.path().join("store");
    let store = config(&path, &clock).open().expect("open");
    let mut made = (0..2).map(|_| {
        let mut s = store.create().expect("create");
        s.set_user(Some("mallory"));
        s.insert("blob", &vec![7u8; 64]).expect("insert");
        store.save(&s).expect("save");
        s
    });
    let (healthy, victim) = (made.next().expect("healthy"), made.next().expect("victim"));
    drop(store);
    let db = raw_sled(&path);
    let tree = db.open_tree("sessions").expect("tree");
    let key = digest_of(&db, &victim.handle());
    let mut bytes = tree.get(&key).expect("get").expect("present").to_vec();
    let payload = 51 + usize::from(u16::from_be_bytes([bytes[49], bytes[50]]));
    assert_eq!(&bytes[51..payload], b"mallory", "layout as in codec.rs");
    bytes[payload] = 0xFD;
    bytes[payload + 1..payload + 9].fill(0xFF);
    tree.insert(&key, bytes.clone()).expect("insert");
    db.flush().expect("flush");
    (dir, clock, path, healthy, victim, key, bytes)
}

/// The sled key of a session: the 32-byte digest whose first 16 bytes are its handle.
fn digest_of(db: &RawSled, handle: &SessionHandle) -> sled::IVec {
    let hex = handle.to_string();
    let prefix: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let sessions = db.open_tree("sessions").expect("tree");
    let key = sessions
        .scan_prefix(prefix)
        .keys()
        .next()
        .expect("record present");
    key.expect("key")
}

#[test]
fn touch_does_not_vouch_for_or_rewrite_a_record_whose_payload_is_garbage() {
    let (_dir, clock, path, _, victim, key, garbage) = garbled();
    let store = config(&path, &clock).open().expect("open");
    let at_once = store.touch(victim.id()).expect("touch");
    clock.advance(Duration::from_secs(10 * 60)); // past the granularity: a touch writes
    let later = store.touch(victim.id()).expect("touch");
    drop(store);
    let db = raw_sled(&path);
    let quarantined = db
        .open_tree("quarantine")
        .expect("tree")
        .contains_key(&key)
        .expect("get");
    let stored = db
        .open_tree("sessions")
        .expect("tree")
        .get(&key)
        .expect("get");
    let state = match stored.as_deref() {
        Some(b) if b == &garbage[..] => "stored unchanged",
        Some(_) => "stored REWRITTEN",
        None if quarantined => "moved to quarantine",
        None => "GONE without quarantine",
    };
    assert!(
        !at_once && !later && matches!(state, "stored unchanged" | "moved to quarantine"),
        "touch of a record with a garbage payload returned {at_once} right away and {later} \
         after 10 min (want false); the record is {state}"
    );
}

#[test]
fn len_and_sessions_of_skip_a_record_whose_payload_is_garbage() {
    let (_dir, clock, path, healthy, victim, _, _) = garbled();
    let store = config(&path, &clock).open().expect("open");
    let len = store.len().expect("len");
    let listed: Vec<_> = store
        .sessions_of("mallory")
        .expect("sessions_of")
        .into_iter()
        .map(|i| i.handle)
        .collect();
    assert!(
        len == 1 && listed == [healthy.handle()],
        "len {len} (want 1); sessions_of lists {} (want only the healthy one; victim listed: {})",
        listed.len(),
        listed.contains(&victim.handle())
    );
}

#[test]
fn load_of_a_record_whose_payload_is_garbage_is_none() {
    let (_dir, clock, path, healthy, victim, _, _) = garbled();
    let store = config(&path, &clock).open().expect("open");
    assert!(store.load(victim.id()).expect("load").is_none());
    assert!(store.load(healthy.id()).expect("load").is_some());
    assert_eq!(store.stats().quarantined, 1);
    assert_eq!(store.sessions_of("mallory").expect("sessions_of").len(), 1);
}
