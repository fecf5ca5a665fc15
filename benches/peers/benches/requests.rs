//! Whole requests: an axum `Router` with tower-sessions' `SessionManagerLayer` in front of
//! each store, driven in-process with `tower::ServiceExt::oneshot` (no sockets), one
//! thread, 10k sessions with 99% of the requests on 100 of them. Two handlers: one reads
//! a value, one increments it (a save per request).
//!
//! Contenders: sessile's adapter (tower-sessions 0.15, and 0.14 as axum-login uses it),
//! tower-sessions' MemoryStore, tower-sessions-sled-store 0.2 (on 0.14) and
//! tower-sessions-rusqlite-store (on 0.15).
//!
//! `cargo bench --manifest-path benches/peers/Cargo.toml --bench requests`;
//! `SESSILE_BENCH_QUICK=1` (or `cargo test`) for a small run.

use std::hint::black_box;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use criterion::Throughput;
use http::{Request, header};
use tower::ServiceExt as _;

mod common;

use common::{Rng, picks, smoke};

/// The same two handlers on one tower-sessions version (`$ts`), in module `$m`.
macro_rules! app {
    ($m:ident, $ts:ident) => {
        mod $m {
            use axum::Router;
            use axum::routing::get;
            use $ts::{Expiry, Session, SessionManagerLayer, SessionStore, cookie::time::Duration};

            async fn read(session: Session) -> String {
                let n: u64 = session.get("n").await.ok().flatten().unwrap_or(0);
                n.to_string()
            }

            async fn incr(session: Session) -> String {
                let n: u64 = session.get("n").await.ok().flatten().unwrap_or(0) + 1;
                session.insert("n", n).await.expect("insert");
                n.to_string()
            }

            pub fn app<S: SessionStore + Clone>(store: S) -> Router {
                Router::new()
                    .route("/read", get(read))
                    .route("/incr", get(incr))
                    .layer(
                        SessionManagerLayer::new(store)
                            .with_secure(false)
                            .with_expiry(Expiry::OnInactivity(Duration::minutes(30))),
                    )
            }
        }
    };
}

app!(on015, tower_sessions_015);
app!(on014, tower_sessions_014);

/// Creates `n` sessions through `router` and returns their cookies.
async fn sessions(router: &Router, n: usize) -> Vec<String> {
    let mut cookies = Vec::with_capacity(n);
    for _ in 0..n {
        let response = router
            .clone()
            .oneshot(Request::get("/incr").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let cookie = response.headers()[header::SET_COOKIE]
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("cookie")
            .to_owned();
        cookies.push(cookie);
    }
    cookies
}

fn main() {
    let mut c = common::criterion();
    let n = if smoke() { 500 } else { 10_000 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");

    let sessile15 = sessile::tower::TowerStore::new(
        sessile::Store::open(dir.path().join("sessile-15")).expect("open"),
    );
    let sessile14 = sessile::tower::TowerStore::new(
        sessile::Store::open(dir.path().join("sessile-14")).expect("open"),
    );
    let sled_db = sled::open(dir.path().join("sled-store")).expect("sled");
    let sled_store =
        tower_sessions_sled_store::SledStore::new(sled_db.open_tree("sessions").expect("tree"));
    let rusqlite = rt.block_on(async {
        let conn = tokio_rusqlite::Connection::open(dir.path().join("sessions.sqlite"))
            .await
            .expect("sqlite");
        conn.call(|c| {
            c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
            Ok::<_, tokio_rusqlite::rusqlite::Error>(())
        })
        .await
        .expect("pragma");
        let store = tower_sessions_rusqlite_store::RusqliteStore::new(conn);
        store.migrate().await.expect("migrate");
        store
    });
    let routers: Vec<(&str, Router)> = vec![
        ("sessile", on015::app(sessile15)),
        ("sessile_on_0.14", on014::app(sessile14)),
        (
            "memory_store",
            on015::app(tower_sessions_memory_store::MemoryStore::default()),
        ),
        ("sled_store", on014::app(sled_store)),
        ("rusqlite_store", on015::app(rusqlite)),
    ];
    let picks = picks(&mut Rng::new(7), n, 1 << 16, true);
    let t = Instant::now();
    let cookies: Vec<Vec<String>> = rt.block_on(async {
        let mut all = Vec::new();
        for (_, router) in &routers {
            all.push(sessions(router, n).await);
        }
        all
    });
    eprintln!(
        "{} routers with {n} sessions each in {:.1?}",
        routers.len(),
        t.elapsed()
    );
    for path in ["/read", "/incr"] {
        let mut g = c.benchmark_group(format!("requests/{n}{path}"));
        g.throughput(Throughput::Elements(1));
        for ((name, router), cookies) in routers.iter().zip(&cookies) {
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for i in 0..iters as usize {
                            let cookie = &cookies[picks[i & (picks.len() - 1)]];
                            let request = Request::get(path)
                                .header(header::COOKIE, cookie)
                                .body(Body::empty())
                                .expect("request");
                            let response = router.clone().oneshot(request).await;
                            black_box(response.expect("response"));
                        }
                        start.elapsed()
                    })
                })
            });
        }
        g.finish();
    }
    c.final_summary();
}
