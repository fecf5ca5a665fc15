//! The `sessile` binary, run as a process on stores built here with the library.
#![cfg(feature = "cli")]

#[path = "backend/mod.rs"]
mod backend;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sessile::{Config, ManualClock, SessionDump, SessionHandle, Store};

const BIN: &str = env!("CARGO_BIN_EXE_sessile");

/// A store with 3 live sessions (alice x2 with values, one anonymous) and 2 that expired a
/// day ago (bob, and one anonymous). Returns the folder's guard, its path and the handles.
struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    alice: Vec<SessionHandle>,
    anonymous: SessionHandle,
    bob: SessionHandle,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions");
    let now = SystemTime::now();
    let clock = ManualClock::starting_at(now - Duration::from_secs(2 * 86_400));
    let store = Config::new(&path)
        .clock(clock.clock())
        .purge_thread(false)
        .open()
        .expect("open");
    let mut bob = store.create().expect("create");
    bob.set_user(Some("bob"));
    bob.insert("theme", "dark").expect("insert");
    store.save(&bob).expect("save");
    store.create().expect("create");
    clock.set(now);
    let mut alice = Vec::new();
    for i in 0..2u32 {
        let mut s = store.create().expect("create");
        s.set_user(Some("alice"));
        s.insert("cart", &vec![i, 7, 9]).expect("insert");
        s.insert_bytes("raw", vec![0, 255, b'x', i as u8])
            .expect("insert");
        store.save(&s).expect("save");
        alice.push(s.handle());
    }
    let anonymous = store.create().expect("create").handle();
    Fixture {
        _dir: dir,
        path,
        alice,
        anonymous,
        bob: bob.handle(),
    }
}

fn sessile(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run sessile")
}

fn run(args: &[&str], path: &Path) -> Output {
    let mut full: Vec<&str> = vec![args[0]];
    let p = path.to_str().expect("utf-8 path");
    full.push(p);
    full.extend_from_slice(&args[1..]);
    sessile(&full)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn json(o: &Output) -> Value {
    assert_eq!(code(o), 0, "stderr: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

/// Every stored session, sorted by key.
fn dump_of(path: &Path) -> Vec<SessionDump> {
    let store = Config::new(path).purge_thread(false).open().expect("open");
    let mut all: Vec<SessionDump> = store.dump().collect::<Result<_, _>>().expect("dump");
    all.sort_by(|a, b| a.key.cmp(&b.key));
    all
}

#[test]
fn every_subcommand_has_help() {
    for cmd in [
        "stats", "list", "show", "purge", "revoke", "verify", "export", "import", "bench",
    ] {
        let o = sessile(&[cmd, "--help"]);
        assert_eq!(code(&o), 0, "{cmd} --help");
        let text = stdout(&o);
        assert!(text.contains("Usage: sessile"), "{cmd}: {text}");
        assert!(text.contains("Exit codes"), "{cmd}: {text}");
    }
    let o = sessile(&["--help"]);
    assert_eq!(code(&o), 0);
    assert_eq!(code(&sessile(&["no-such-command"])), 2);
    assert_eq!(code(&sessile(&[])), 2);
}

#[test]
fn stats_counts_live_expired_and_users() {
    let f = fixture();
    let v = json(&run(&["stats", "--json"], &f.path));
    assert_eq!(v["records"], 5);
    assert_eq!(v["live"], 3);
    assert_eq!(v["expired"], 2);
    assert_eq!(v["users"], 1);
    assert_eq!(v["live_with_user"], 2);
    assert_eq!(v["format_version"], 2);
    assert_eq!(v["expiring"]["within_hour"], 3);
    assert!(v["disk_bytes"].as_u64().expect("disk_bytes") > 0);

    let o = run(&["stats"], &f.path);
    assert_eq!(code(&o), 0);
    let text = stdout(&o);
    assert!(text.contains("live sessions"), "{text}");
    assert!(text.contains("expired, not purged     2"), "{text}");
    // Inspection never purges: the expired sessions are still there.
    assert_eq!(dump_of(&f.path).len(), 5);
}

#[test]
fn list_filters_by_user_state_and_limit() {
    let f = fixture();
    let rows = json(&run(&["list", "--json"], &f.path));
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["live"] == true));

    let alice = json(&run(&["list", "--user", "alice", "--json"], &f.path));
    let handles: Vec<&str> = alice
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["handle"].as_str().expect("handle"))
        .collect();
    let mut expected: Vec<String> = f.alice.iter().map(ToString::to_string).collect();
    expected.sort();
    let mut got: Vec<String> = handles.iter().map(|h| (*h).to_string()).collect();
    got.sort();
    assert_eq!(got, expected);

    let expired = json(&run(&["list", "--expired", "--json"], &f.path));
    let expired = expired.as_array().expect("array");
    assert_eq!(expired.len(), 2);
    assert!(expired.iter().any(|r| r["handle"] == f.bob.to_string()));
    assert!(expired.iter().all(|r| r["live"] == false));

    let all = json(&run(&["list", "--all", "--limit", "4", "--json"], &f.path));
    assert_eq!(all.as_array().expect("array").len(), 4);

    let o = run(&["list"], &f.path);
    assert_eq!(code(&o), 0);
    let text = stdout(&o);
    assert!(text.starts_with("HANDLE"), "{text}");
    assert!(text.contains(&f.anonymous.to_string()), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[test]
fn show_prints_keys_and_values_only_when_asked() {
    let f = fixture();
    let handle = f.alice[0].to_string();
    let o = run(&["show", &handle], &f.path);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("alice"), "{text}");
    assert!(text.contains("cart"), "{text}");
    assert!(text.contains("2 keys"), "{text}");
    assert!(!text.contains("STORED BYTES"), "{text}");

    let o = run(&["show", &handle, "--values"], &f.path);
    assert!(stdout(&o).contains(r"\x00\xffx\x00"), "{}", stdout(&o));

    let v = json(&run(&["show", &handle, "--json"], &f.path));
    assert_eq!(v["user"], "alice");
    assert_eq!(v["values"][1]["key"], "raw");
    assert_eq!(v["values"][1]["size"], 4);
    assert!(v["values"][1].get("bytes").is_none());
    let v = json(&run(&["show", &handle, "--values", "--json"], &f.path));
    assert_eq!(v["values"][1]["bytes"], "AP94AA");

    let o = run(&["show", &f.bob.to_string()], &f.path);
    assert!(stdout(&o).contains("expired"), "{}", stdout(&o));

    let o = run(&["show", "00000000000000000000000000000000"], &f.path);
    assert_eq!(code(&o), 5);
    assert!(
        stderr(&o).contains("no session with handle"),
        "{}",
        stderr(&o)
    );
    let o = run(&["show", "not-a-handle"], &f.path);
    assert_eq!(code(&o), 2);
}

#[test]
fn read_only_commands_never_create_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    for args in [
        &["stats"][..],
        &["list"],
        &["verify"],
        &["purge"],
        &["revoke", "--user", "alice"],
        &["show", "00000000000000000000000000000000"],
    ] {
        let o = run(args, &missing);
        assert_eq!(code(&o), 5, "{args:?}");
        assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
        assert!(!missing.exists(), "{args:?} created the folder");
    }
    let out = dir.path().join("out.jsonl");
    let o = sessile(&[
        "export",
        missing.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(code(&o), 5);
    assert!(!missing.exists() && !out.exists());

    // An existing folder that holds no store is not turned into one either.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let o = run(&["stats"], &empty);
    assert_eq!(code(&o), 5);
    assert!(stderr(&o).contains("no session store"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&empty).expect("read_dir").count(), 0);
}

#[test]
fn a_store_open_elsewhere_is_reported_with_what_to_do() {
    let f = fixture();
    let _server = Store::open(&f.path).expect("open");
    for args in [&["stats"][..], &["revoke", "--user", "alice"], &["verify"]] {
        let o = run(args, &f.path);
        assert_eq!(code(&o), 4, "{args:?}");
        let err = stderr(&o);
        assert!(err.contains("open in another process"), "{err}");
        assert!(err.contains("stop the server"), "{err}");
        assert!(err.contains("export"), "{err}");
    }
}

#[test]
fn purge_deletes_only_expired_sessions() {
    let f = fixture();
    let o = run(&["purge"], &f.path);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("purged 2 expired sessions"),
        "{}",
        stdout(&o)
    );
    let left = dump_of(&f.path);
    assert_eq!(left.len(), 3);
    let o = run(&["purge"], &f.path);
    assert!(
        stdout(&o).contains("purged 0 expired sessions"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn revoke_by_user_and_by_handle() {
    let f = fixture();
    let o = run(&["revoke", "--user", "alice"], &f.path);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("revoked 2 live sessions"),
        "{}",
        stdout(&o)
    );
    {
        let store = Config::new(&f.path)
            .purge_thread(false)
            .open()
            .expect("open");
        assert!(store.sessions_of("alice").expect("sessions_of").is_empty());
        assert!(store.inspect(&f.alice[0]).expect("inspect").is_none());
    }

    let o = run(&["revoke", "--handle", &f.anonymous.to_string()], &f.path);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("revoked session"), "{}", stdout(&o));
    let o = run(&["revoke", "--handle", &f.anonymous.to_string()], &f.path);
    assert_eq!(code(&o), 5);

    let o = run(&["revoke", "--handle", &f.bob.to_string()], &f.path);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("already expired"), "{}", stdout(&o));
    assert_eq!(dump_of(&f.path).len(), 1);

    assert_eq!(code(&run(&["revoke"], &f.path)), 2);
    let both = run(
        &["revoke", "--user", "x", "--handle", &f.bob.to_string()],
        &f.path,
    );
    assert_eq!(code(&both), 2);
}

#[test]
fn verify_finds_an_injected_problem_and_repair_fixes_it() {
    let f = fixture();
    let v = json(&run(&["verify", "--json"], &f.path));
    assert_eq!(v["consistent"], true);
    assert_eq!(v["found"]["records"], 5);

    // Break invariant I1: drop the expiry index entry of one record, behind sessile's back.
    {
        let db = sled::open(&f.path).expect("sled open");
        let expiry = db.open_tree("expiry").expect("expiry tree");
        let first = expiry.iter().keys().next().expect("an entry").expect("key");
        expiry.remove(first).expect("remove");
        let users = db.open_tree("users").expect("users tree");
        let first = users.iter().keys().next().expect("an entry").expect("key");
        users.remove(first).expect("remove");
        db.flush().expect("flush");
    }
    let o = run(&["verify"], &f.path);
    assert_eq!(code(&o), 3, "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains("missing expiry entries  1"), "{text}");
    assert!(text.contains("missing user entries    1"), "{text}");
    assert!(text.contains("2 problems found"), "{text}");

    let o = run(&["verify", "--json"], &f.path);
    assert_eq!(code(&o), 3);
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["consistent"], false);
    assert_eq!(v["found"]["missing_expiry_entries"], 1);

    let o = run(&["verify", "--repair"], &f.path);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("repaired 2 problems"), "{}", stdout(&o));
    let v = json(&run(&["verify", "--json"], &f.path));
    assert_eq!(v["consistent"], true);
    assert_eq!(v["found"]["missing_expiry_entries"], 0);
    assert_eq!(dump_of(&f.path).len(), 5);
}

#[test]
fn export_then_import_gives_identical_sessions() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.jsonl");
    let file_s = file.to_str().expect("utf-8");
    let o = run(&["export", file_s], &f.path);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("exported 5 sessions"), "{}", stdout(&o));

    let text = std::fs::read_to_string(&file).expect("read dump");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7);
    let header: Value = serde_json::from_str(lines[0]).expect("header");
    assert_eq!(header["format"], "sessile-dump");
    assert_eq!(header["version"], 2);
    assert_eq!(lines[6], r#"{"end":true,"sessions":5}"#);

    // No accidental overwrite.
    let o = run(&["export", file_s], &f.path);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(code(&run(&["export", file_s, "--force"], &f.path)), 0);

    let copy = dir.path().join("copy");
    let o = run(&["import", file_s], &copy);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("imported 5 sessions"), "{}", stdout(&o));
    let original = dump_of(&f.path);
    assert_eq!(original.len(), 5);
    assert_eq!(dump_of(&copy), original);

    // Importing on top of sessions needs --merge.
    let o = run(&["import", file_s], &copy);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("--merge"), "{}", stderr(&o));
    assert_eq!(code(&run(&["import", file_s, "--merge"], &copy)), 0);
    assert_eq!(dump_of(&copy), original);

    // Standard output and standard input work too.
    let o = run(&["export", "-"], &f.path);
    assert_eq!(code(&o), 0);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 7);
}

/// `import DIR -` reads the dump from standard input: from a file redirect, from a pipe
/// a program writes into, and from `export - | import -`.
#[test]
fn import_from_standard_input_works_from_a_file_a_pipe_and_an_export() {
    use std::process::Stdio;

    let f = fixture();
    let original = dump_of(&f.path);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.jsonl");
    let file_s = file.to_str().expect("utf-8");
    assert_eq!(code(&run(&["export", file_s], &f.path)), 0);
    let import_into = |target: &Path, stdin: Stdio| {
        Command::new(BIN)
            .args(["import", target.to_str().expect("utf-8"), "-"])
            .stdin(stdin)
            .output()
            .expect("run sessile import")
    };

    // `sessile import DIR - < FILE`
    let redirected = dir.path().join("redirected");
    let from_file = std::fs::File::open(&file).expect("open the dump");
    let o = import_into(&redirected, Stdio::from(from_file));
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(dump_of(&redirected), original);

    // `cat FILE | sessile import DIR -`
    let piped = dir.path().join("piped");
    let mut child = Command::new(BIN)
        .args(["import", piped.to_str().expect("utf-8"), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sessile import");
    let bytes = std::fs::read(&file).expect("read the dump");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut stdin, &bytes).expect("write the dump");
    }
    let o = child.wait_with_output().expect("wait");
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(dump_of(&piped), original);

    // `sessile export SRC - | sessile import DIR -`
    let chained = dir.path().join("chained");
    let mut export = Command::new(BIN)
        .args(["export", f.path.to_str().expect("utf-8"), "-"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sessile export");
    let pipe = export.stdout.take().expect("export's stdout");
    let o = import_into(&chained, Stdio::from(pipe));
    assert!(
        export.wait().expect("export").success(),
        "the export failed"
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(dump_of(&chained), original);
}

#[test]
fn import_refuses_damaged_dumps_before_writing() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.jsonl");
    assert_eq!(
        code(&run(&["export", file.to_str().expect("utf-8")], &f.path)),
        0
    );
    let text = std::fs::read_to_string(&file).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let cases = [
        ("truncated", lines[..6].join("\n"), "truncated"),
        (
            "wrong count",
            [&lines[..5], &lines[6..]].concat().join("\n"),
            "end line says 5",
        ),
        (
            "newer version",
            lines[0].replace("\"version\":2", "\"version\":3") + "\n" + &lines[1..].join("\n"),
            "version 3 dump",
        ),
        ("not a dump", "hello\n".to_string(), "not a sessile dump"),
        (
            "bad value",
            lines
                .join("\n")
                .replacen("\"values\":{", "\"values\":{\"x\":\"!!\",", 1),
            "line 2",
        ),
    ];
    for (name, content, message) in cases {
        let bad = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&bad, content).expect("write");
        let target = dir.path().join(format!("store-{}", name.replace(' ', "-")));
        let o = run(&["import", bad.to_str().expect("utf-8")], &target);
        assert_eq!(code(&o), 1, "{name}");
        assert!(stderr(&o).contains(message), "{name}: {}", stderr(&o));
        assert!(!target.exists(), "{name}: the store was created");
    }
}

#[test]
fn bench_prints_a_table_next_to_raw_sled() {
    let o = sessile(&[
        "bench",
        "--sessions",
        "300",
        "--threads",
        "2",
        "--seconds",
        "0.05",
        "--value-size",
        "32",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "Store::load",
        "sled Tree::get",
        "Store::create",
        "sled Tree::insert",
        "OPS/S",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert_eq!(code(&sessile(&["bench", "--seconds", "0"])), 2);
    assert_eq!(code(&sessile(&["bench", "--sessions", "0"])), 2);
}

/// A version-1 dump (sessile 0.1: no per-session timeouts) imports, and a session with
/// its own lifetime keeps it through export and import.
#[test]
fn import_reads_version_1_dumps_and_lifetimes_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source");
    let remembered = {
        let store = Config::new(&source)
            .purge_thread(false)
            .open()
            .expect("open");
        let mut s = store.create().expect("create");
        s.set_lifetime(sessile::Lifetime::default().with_idle(Duration::from_secs(30 * 86_400)));
        store.save(&s).expect("save");
        store.create().expect("create");
        s
    };
    let file = dir.path().join("dump.jsonl");
    let file_s = file.to_str().expect("utf-8");
    assert_eq!(code(&run(&["export", file_s], &source)), 0);
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.contains("\"idle_timeout_ms\":2592000000"), "{text}");
    let copy = dir.path().join("copy");
    let o = run(&["import", file_s], &copy);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let store = Config::new(&copy).purge_thread(false).open().expect("open");
    let loaded = store.load(remembered.id()).expect("load").expect("live");
    assert_eq!(loaded.lifetime(), remembered.lifetime());
    drop(store);

    // The same sessions as sessile 0.1 would have written them.
    let old: String = text
        .lines()
        .map(|line| {
            let mut v: Value = serde_json::from_str(line).expect("json");
            if let Some(o) = v.as_object_mut() {
                o.remove("idle_timeout_ms");
                o.remove("absolute_timeout_ms");
                if o.contains_key("format") {
                    o.insert("version".into(), 1.into());
                    o.insert("store_format".into(), 1.into());
                }
            }
            v.to_string() + "\n"
        })
        .collect();
    let old_file = dir.path().join("old.jsonl");
    std::fs::write(&old_file, old).expect("write");
    let old_copy = dir.path().join("old-copy");
    let o = run(&["import", old_file.to_str().expect("utf-8")], &old_copy);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let store = Config::new(&old_copy)
        .purge_thread(false)
        .open()
        .expect("open");
    assert_eq!(store.len().expect("len"), 2);
    let loaded = store.load(remembered.id()).expect("load").expect("live");
    assert_eq!(
        loaded.lifetime(),
        sessile::Lifetime::default(),
        "version 1 has none"
    );
}

/// `sessile export ./data dump && sessile import redis://... dump` moves every session
/// under the same keys (so every cookie keeps working), and the other commands work on
/// the Redis store.
#[test]
fn a_folder_migrates_to_redis_and_every_command_takes_a_url() {
    let Some(url) = backend::shared_url() else {
        return;
    };
    let ns = format!("cli{:016x}", std::process::id());
    let on_redis = |args: &[&str]| {
        let mut full = vec![args[0], url.as_str()];
        full.extend_from_slice(&args[1..]);
        Command::new(BIN)
            .args(&full)
            .env("SESSILE_REDIS_NAMESPACE", &ns)
            .output()
            .expect("run sessile")
    };
    // Nothing there yet: read-only commands refuse (and create nothing).
    let o = on_redis(&["list"]);
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("SESSILE_REDIS_NAMESPACE"),
        "{}",
        stderr(&o)
    );

    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dump.jsonl");
    let file_s = file.to_str().expect("utf-8");
    assert_eq!(code(&run(&["export", file_s], &f.path)), 0);
    let o = on_redis(&["import", file_s]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("imported 5 sessions"), "{}", stdout(&o));

    let redis = Config::redis(url.as_str())
        .redis_namespace(ns.as_str())
        .purge_thread(false)
        .open()
        .expect("open redis");
    let mut moved: Vec<SessionDump> = redis.dump().collect::<Result<_, _>>().expect("dump");
    moved.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        moved,
        dump_of(&f.path),
        "same keys (digests), same sessions"
    );

    let listed = json(&on_redis(&["list", "--all", "--json"]));
    assert_eq!(listed.as_array().expect("array").len(), 5);
    let stats = json(&on_redis(&["stats", "--json"]));
    assert_eq!(stats["live"], 3);
    assert_eq!(stats["expired"], 2);
    assert!(stats["disk_bytes"].is_null());
    let o = on_redis(&["revoke", "--user", "alice"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(redis.sessions_of("alice").expect("list").is_empty());
    assert_eq!(code(&on_redis(&["verify"])), 0);
    // `-` takes the URL from SESSILE_REDIS_URL: no password on the command line.
    let from_env = Command::new(BIN)
        .args(["stats", "-", "--json"])
        .env("SESSILE_REDIS_URL", &url)
        .env("SESSILE_REDIS_NAMESPACE", &ns)
        .output()
        .expect("run sessile");
    assert_eq!(code(&from_env), 0, "{}", stderr(&from_env));
    assert_eq!(json(&from_env)["live"], 1);
    let unset = Command::new(BIN)
        .args(["stats", "-"])
        .env_remove("SESSILE_REDIS_URL")
        .output()
        .expect("run sessile");
    assert_eq!(code(&unset), 2, "{}", stderr(&unset));
    assert!(
        stderr(&unset).contains("SESSILE_REDIS_URL"),
        "{}",
        stderr(&unset)
    );
    assert_eq!(code(&on_redis(&["purge"])), 0);
    assert_eq!(
        redis.len().expect("len"),
        1,
        "the anonymous live session is left"
    );
}

/// Every command works over TLS with a private CA and a client certificate, named by
/// SESSILE_REDIS_CA, SESSILE_REDIS_CLIENT_CERT and SESSILE_REDIS_CLIENT_KEY.
#[test]
fn commands_work_over_tls_with_certificates_from_the_environment() {
    let Some(certs) = backend::Certificates::make() else {
        return;
    };
    let Some((_server, port)) = certs.server() else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{port}/");
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dump.jsonl");
    let file_s = file.to_str().expect("utf-8");
    assert_eq!(code(&run(&["export", file_s], &f.path)), 0);
    let over_tls = |args: &[&str]| {
        let mut full = vec![args[0], url.as_str()];
        full.extend_from_slice(&args[1..]);
        Command::new(BIN)
            .args(&full)
            .env("SESSILE_REDIS_NAMESPACE", "tls")
            .env("SESSILE_REDIS_CA", certs.path("ca.crt"))
            .env("SESSILE_REDIS_CLIENT_CERT", certs.path("client.crt"))
            .env("SESSILE_REDIS_CLIENT_KEY", certs.path("client.key"))
            .output()
            .expect("run sessile")
    };
    let o = over_tls(&["import", file_s]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = over_tls(&["stats", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["live"], 3);
    // Without the client certificate the server refuses.
    let o = Command::new(BIN)
        .args(["stats", url.as_str()])
        .env("SESSILE_REDIS_NAMESPACE", "tls")
        .env("SESSILE_REDIS_CA", certs.path("ca.crt"))
        .env_remove("SESSILE_REDIS_CLIENT_CERT")
        .env_remove("SESSILE_REDIS_CLIENT_KEY")
        .output()
        .expect("run sessile");
    assert_ne!(code(&o), 0);
}

/// `stats` and `verify` warn when the Redis server may evict sessions.
#[test]
fn stats_and_verify_warn_about_an_evicting_redis() {
    let Some(server) = backend::RedisServer::start(None) else {
        return;
    };
    let url = server.url();
    let ns = "evicting";
    let store = Config::redis(url.as_str())
        .redis_namespace(ns)
        .purge_thread(false)
        .open()
        .expect("open");
    store.create().expect("create");
    drop(store);
    backend::make_evicting(&url, "volatile-lru");
    let on_redis = |args: &[&str]| {
        let mut full = vec![args[0], url.as_str()];
        full.extend_from_slice(&args[1..]);
        Command::new(BIN)
            .args(&full)
            .env("SESSILE_REDIS_NAMESPACE", ns)
            .output()
            .expect("run sessile")
    };
    for command in ["stats", "verify"] {
        let o = on_redis(&[command]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(
            stdout(&o).contains("maxmemory-policy is volatile-lru"),
            "{command}: {}",
            stdout(&o)
        );
    }
    let stats = json(&on_redis(&["stats", "--json"]));
    assert_eq!(stats["eviction_policy"], "volatile-lru");
}

/// User names and value keys reach the terminal escaped, as values do: an escape
/// sequence in a name cannot forge rows on the operator's screen.
#[test]
fn user_names_and_keys_are_printed_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions");
    let store = Config::new(&path).purge_thread(false).open().expect("open");
    let mut s = store.create().expect("create");
    s.set_user(Some("mallory\u{1b}[2J\nroot"));
    s.insert_bytes("key\u{1b}[31m", vec![1]).expect("insert");
    store.save(&s).expect("save");
    let handle = s.handle().to_string();
    drop(store);
    for o in [run(&["list"], &path), run(&["show", &handle], &path)] {
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let text = stdout(&o);
        assert!(
            !text.contains('\u{1b}'),
            "a raw escape reached the terminal: {text:?}"
        );
        assert!(text.contains("mallory\\u{1b}[2J\\nroot"), "{text}");
    }
    let shown = stdout(&run(&["show", &handle], &path));
    assert!(shown.contains("key\\u{1b}[31m"), "{shown}");
}

/// The manual's sample outputs (OPERATIONS.md) are the program's: the labels `stats` and `show` print,
/// the columns of `list`, and the format version, as the CLI prints them now.
#[test]
fn the_readme_samples_match_the_program() {
    let readme = include_str!("../OPERATIONS.md");
    // The lines of the README's sample output of `$ sessile ARGS`, up to `[exit ...]`.
    let sample = |args: &str| -> Vec<&str> {
        let prompt = format!("$ sessile {args}");
        let mut lines = readme.lines().skip_while(|l| *l != prompt);
        assert!(
            lines.next().is_some(),
            "no sample of `{prompt}` in the README"
        );
        lines.take_while(|l| !l.starts_with("[exit")).collect()
    };
    // The first column: what comes before two spaces in a row.
    let labels = |lines: &[&str]| -> Vec<String> {
        lines
            .iter()
            .take_while(|l| !l.is_empty())
            .map(|l| l.split("  ").next().unwrap_or_default().trim().to_owned())
            .collect()
    };
    let words = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
    let f = fixture();

    let stats = stdout(&run(&["stats"], &f.path));
    let stats: Vec<&str> = stats.lines().collect();
    assert_eq!(labels(&sample("stats data")), labels(&stats), "stats");
    let version = |lines: &[&str]| {
        lines
            .iter()
            .find(|l| l.starts_with("format version"))
            .map(|l| words(l))
    };
    assert_eq!(version(&sample("stats data")), version(&stats));

    let list = stdout(&run(&["list"], &f.path));
    let header = list.lines().next().expect("a header");
    assert_eq!(words(sample("list data")[0]), words(header), "list");

    let show = stdout(&run(&["show", &f.alice[0].to_string()], &f.path));
    let show: Vec<&str> = show.lines().collect();
    let readme_show = readme
        .lines()
        .find(|l| l.starts_with("$ sessile show data ") && !l.contains("--"))
        .expect("a sample of show");
    let readme_show = readme_show.trim_start_matches("$ sessile ");
    assert_eq!(labels(&sample(readme_show)), labels(&show), "show");
}
