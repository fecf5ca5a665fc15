//! A store on a three-master Redis Cluster (`redis-server --cluster-enabled yes`, joined
//! by `redis-cli --cluster create`), on loopback ports in temporary folders. Every key of
//! a namespace shares its hash slot, so the scripts run on one node; namespaces spread
//! over the shards; the whole lifecycle, revocations, the cap, handles, the purge, an
//! import and `verify` work there as on one server.

#![cfg(feature = "redis")]

#[path = "backend/mod.rs"]
mod backend;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use backend::RedisServer;
use redis::Commands;
use sessile::{Config, ManualClock, Session, Store};

/// Three masters joined into one Cluster, or `None` without redis-server outside CI.
fn cluster() -> Option<Vec<RedisServer>> {
    if !backend::installed("redis-server", "redis-server") {
        return None;
    }
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| {
            RedisServer::start_with(
                None,
                &[
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ],
            )
            .expect("cluster node")
        })
        .collect();
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("redis-cli --cluster create");
    assert!(status.success(), "redis-cli --cluster create failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &nodes {
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut raw(&node.url()))
                .expect("cluster info");
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Some(nodes)
}

fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("client")
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connection")
}

fn open(nodes: &[RedisServer], ns: &str, clock: &ManualClock) -> Store {
    // One seed is enough: the client learns the others from it.
    Config::redis_cluster([nodes[0].url()])
        .redis_namespace(ns)
        .max_sessions_per_user(3)
        .purge_thread(false)
        .clock(clock.clock())
        .open()
        .expect("open on the cluster")
}

fn logged_in(store: &Store, user: &str, n: u32) -> Session {
    let mut s = store.create().expect("create");
    s.set_user(Some(user));
    s.insert("n", &n).expect("insert");
    store.save(&s).expect("save");
    s
}

/// Which node holds `ns`'s keys: the port of the one whose `KEYS` finds them (each must
/// be on exactly one).
fn holder(nodes: &[RedisServer], ns: &str) -> u16 {
    let holding: Vec<u16> = nodes
        .iter()
        .filter(|n| {
            let keys: Vec<String> = raw(&n.url()).keys(format!("{{{ns}}}:*")).expect("keys");
            !keys.is_empty()
        })
        .map(|n| n.port)
        .collect();
    assert_eq!(holding.len(), 1, "{ns} is on {holding:?}");
    holding[0]
}

#[test]
fn a_cluster_runs_the_whole_lifecycle_with_each_namespace_on_one_shard() {
    let Some(nodes) = cluster() else { return };
    let clock = ManualClock::new();
    let a = open(&nodes, "shop", &clock);
    let b = open(&nodes, "shop", &clock);

    // Writes through one store, reads and changes through the other.
    let mut s = logged_in(&a, "ada", 1);
    let mut stale = a.load(s.id()).expect("load").expect("live");
    let mut seen = b.load(s.id()).expect("load").expect("b sees a's write");
    assert_eq!(seen.get::<u32>("n").expect("get"), Some(1));
    seen.insert("n", &2u32).expect("insert");
    b.save(&seen).expect("save");
    stale.insert("other", &"x").expect("insert");
    a.save(&stale).expect("a stale copy merges");
    let merged = a.load(s.id()).expect("load").expect("live");
    assert_eq!(merged.get::<u32>("n").expect("get"), Some(2));
    assert_eq!(
        merged.get::<String>("other").expect("get").as_deref(),
        Some("x")
    );
    a.update(s.id(), |s| s.insert("n", &3u32)).expect("update");
    a.regenerate(&mut s).expect("regenerate");

    // The cap, revoke-all and a revoke by handle.
    let more: Vec<Session> = (0..3).map(|i| logged_in(&b, "ada", 10 + i)).collect();
    assert_eq!(a.sessions_of("ada").expect("list").len(), 3, "capped at 3");
    assert_eq!(
        a.destroy_user("ada", Some(more[2].id())).expect("revoke"),
        2
    );
    assert!(b.destroy_by_handle(&more[2].handle()).expect("by handle"));
    assert!(a.sessions_of("ada").expect("list").is_empty());

    // Expiry and the purge.
    let short = a.create().expect("create");
    let kept = logged_in(&a, "bob", 5);
    clock.advance(Duration::from_secs(25 * 60));
    a.touch(kept.id()).expect("touch");
    clock.advance(Duration::from_secs(10 * 60));
    assert!(a.purge_expired().expect("purge") >= 1);
    assert!(b.load(short.id()).expect("load").is_none());
    assert!(b.load(kept.id()).expect("load").is_some());

    // Export from one namespace, import into another, verify both.
    let mut dump = Vec::new();
    let exported = a.export(&mut dump).expect("export");
    let copy = open(&nodes, "copy", &clock);
    assert_eq!(copy.import(dump.as_slice()).expect("import"), exported);
    assert!(copy.load(kept.id()).expect("load").is_some());
    assert_eq!(copy.len().expect("len"), a.len().expect("len"));
    for store in [&a, &copy] {
        let report = store.verify(false).expect("verify");
        assert!(report.is_consistent(), "{report:?}");
    }
    assert!(a.destroy(kept.id()).expect("logout"));

    // Each namespace on one node; several namespaces on more than one node.
    let mut holders = BTreeSet::new();
    for i in 0..8 {
        let ns = format!("app{i}");
        let store = open(&nodes, &ns, &clock);
        logged_in(&store, "u", i);
        holders.insert(holder(&nodes, &ns));
    }
    holder(&nodes, "shop");
    assert!(holders.len() >= 2, "eight namespaces all on {holders:?}");
}

/// The CLI on a Cluster (`SESSILE_REDIS_CLUSTER=1`): a dump imported into a namespace is
/// counted by `stats` and checked by `verify`; a namespace that holds no store is
/// refused, not created.
#[cfg(feature = "cli")]
#[test]
fn the_cli_imports_into_and_reads_a_cluster() {
    let Some(nodes) = cluster() else { return };
    let clock = ManualClock::new();
    let source = open(&nodes, "from", &clock);
    for i in 0..50 {
        logged_in(&source, &format!("u{i}"), i);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("dump.jsonl");
    source.export_to(&dump).expect("export");
    let sessile = |ns: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sessile"))
            .args(args)
            .env("SESSILE_REDIS_CLUSTER", "1")
            .env("SESSILE_REDIS_NAMESPACE", ns)
            .output()
            .expect("run sessile")
    };
    let url = nodes[1].url();
    let imported = sessile("into", &["import", &url, dump.to_str().expect("utf-8")]);
    assert!(imported.status.success(), "{imported:?}");
    let stats = sessile("into", &["stats", &url]);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.status.success() && text.contains("50"), "{text}");
    let verify = sessile("into", &["verify", &url]);
    assert!(verify.status.success(), "{verify:?}");
    let missing = sessile("nothing-here", &["stats", &url]);
    assert_eq!(missing.status.code(), Some(5), "{missing:?}");
    let keys: Vec<String> = nodes
        .iter()
        .flat_map(|n| {
            raw(&n.url())
                .keys::<_, Vec<String>>("{nothing-here}:*")
                .expect("keys")
        })
        .collect();
    assert!(keys.is_empty(), "{keys:?}");
}
