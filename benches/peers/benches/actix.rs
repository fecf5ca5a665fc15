//! sessile's actix-session store, measured the same ways as the tower adapter:
//!
//! - `SessionStore::load` and `update_ttl` through actix-session's trait, 100k sessions
//!   of ~200 bytes, hot (99% of lookups on 1%) and uniform, one thread;
//! - whole requests through actix-web's `test::call_service` (in-process, no sockets) with
//!   `SessionMiddleware`, 10k sessions, 99% of requests on 100 of them, a reading and an
//!   incrementing handler; against actix-session's `CookieSessionStore` (the state lives
//!   in the cookie: no server-side storage at all, the in-memory upper bound).
//!
//! `cargo bench --manifest-path benches/peers/Cargo.toml --bench actix`;
//! `SESSILE_BENCH_QUICK=1` (or `cargo test`) for a small run.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use actix_session::storage::{CookieSessionStore, SessionKey, SessionStore};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::{App, HttpResponse, test, web};
use criterion::Throughput;

mod common;

use common::{Rng, picks, smoke};

/// actix-session's state: JSON strings by key, about 200 bytes.
fn state(i: usize) -> HashMap<String, String> {
    HashMap::from([
        ("user_id".into(), (1_000_000 + i).to_string()),
        (
            "csrf".into(),
            "\"p8yJ1bQm4Xw0n3zVt7uKcE2sLd9hRa5fGi6oYj-MNkW\"".into(),
        ),
        ("locale".into(), "\"en-GB\"".into()),
        ("cart".into(), "[100001,100002,100003,250000,250001]".into()),
        ("flash".into(), "\"Your changes were saved.\"".into()),
    ])
}

async fn read(session: Session) -> HttpResponse {
    let n: u64 = session.get("n").ok().flatten().unwrap_or(0);
    HttpResponse::Ok().body(n.to_string())
}

async fn incr(session: Session) -> HttpResponse {
    let n: u64 = session.get("n").ok().flatten().unwrap_or(0) + 1;
    session.insert("n", n).expect("insert");
    HttpResponse::Ok().body(n.to_string())
}

fn main() {
    let mut c = common::criterion();
    let dir = tempfile::tempdir().expect("tempdir");
    let system = actix_web::rt::System::new();
    let ttl = actix_web::cookie::time::Duration::minutes(30);

    // Store level.
    let n = if smoke() { 2_000 } else { 100_000 };
    let store = sessile::actix::ActixStore::new(
        sessile::Store::open(dir.path().join("store")).expect("open"),
    );
    let keys: Vec<SessionKey> = system.block_on(async {
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            keys.push(store.save(state(i), &ttl).await.expect("save"));
        }
        keys
    });
    for hot in [true, false] {
        let seq = picks(&mut Rng::new(11), n, 1 << 17, hot);
        let mut g = c.benchmark_group(format!("actix/{n}/{}", if hot { "hot" } else { "uniform" }));
        g.throughput(Throughput::Elements(1));
        g.bench_function("sessile_load", |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters as usize {
                        let key = &keys[seq[i & (seq.len() - 1)]];
                        black_box(store.load(key).await.expect("load"));
                    }
                    start.elapsed()
                })
            })
        });
        g.bench_function("sessile_update_ttl", |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters as usize {
                        let key = &keys[seq[i & (seq.len() - 1)]];
                        store.update_ttl(key, &ttl).await.expect("update_ttl");
                    }
                    start.elapsed()
                })
            })
        });
        g.finish();
    }

    // Request level.
    let n = if smoke() { 500 } else { 10_000 };
    let key = Key::generate();
    let backends = [
        (
            "sessile",
            Backend::Sessile(sessile::actix::ActixStore::new(
                sessile::Store::open(dir.path().join("requests")).expect("open"),
            )),
        ),
        ("cookie_store", Backend::Cookie),
    ];
    for path in ["/read", "/incr"] {
        let mut g = c.benchmark_group(format!("actix-requests/{n}{path}"));
        g.throughput(Throughput::Elements(1));
        for (name, backend) in &backends {
            let app = system.block_on(test::init_service(
                App::new()
                    .wrap(
                        SessionMiddleware::builder(backend.clone(), key.clone())
                            .cookie_secure(false)
                            .build(),
                    )
                    .route("/read", web::get().to(read))
                    .route("/incr", web::get().to(incr)),
            ));
            let cookies = system.block_on(async {
                let mut cookies = Vec::with_capacity(n);
                for _ in 0..n {
                    let request = test::TestRequest::get().uri("/incr").to_request();
                    let response = test::call_service(&app, request).await;
                    let cookie = response.response().cookies().next().expect("a cookie");
                    cookies.push(cookie.into_owned());
                }
                cookies
            });
            let seq = picks(&mut Rng::new(11), n, 1 << 16, true);
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    system.block_on(async {
                        let start = Instant::now();
                        for i in 0..iters as usize {
                            let cookie = cookies[seq[i & (seq.len() - 1)]].clone();
                            let request = test::TestRequest::get()
                                .uri(path)
                                .cookie(cookie)
                                .to_request();
                            black_box(test::call_service(&app, request).await);
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

/// Either store behind one type, so one `App` type serves both.
#[derive(Clone)]
enum Backend {
    Sessile(sessile::actix::ActixStore),
    /// actix-session's `CookieSessionStore` (it holds nothing).
    Cookie,
}

impl SessionStore for Backend {
    async fn load(
        &self,
        key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, actix_session::storage::LoadError> {
        match self {
            Backend::Sessile(s) => s.load(key).await,
            Backend::Cookie => CookieSessionStore::default().load(key).await,
        }
    }

    async fn save(
        &self,
        state: HashMap<String, String>,
        ttl: &actix_web::cookie::time::Duration,
    ) -> Result<SessionKey, actix_session::storage::SaveError> {
        match self {
            Backend::Sessile(s) => s.save(state, ttl).await,
            Backend::Cookie => CookieSessionStore::default().save(state, ttl).await,
        }
    }

    async fn update(
        &self,
        key: SessionKey,
        state: HashMap<String, String>,
        ttl: &actix_web::cookie::time::Duration,
    ) -> Result<SessionKey, actix_session::storage::UpdateError> {
        match self {
            Backend::Sessile(s) => s.update(key, state, ttl).await,
            Backend::Cookie => CookieSessionStore::default().update(key, state, ttl).await,
        }
    }

    async fn update_ttl(
        &self,
        key: &SessionKey,
        ttl: &actix_web::cookie::time::Duration,
    ) -> anyhow::Result<()> {
        match self {
            Backend::Sessile(s) => s.update_ttl(key, ttl).await,
            Backend::Cookie => CookieSessionStore::default().update_ttl(key, ttl).await,
        }
    }

    async fn delete(&self, key: &SessionKey) -> anyhow::Result<()> {
        match self {
            Backend::Sessile(s) => s.delete(key).await,
            Backend::Cookie => CookieSessionStore::default().delete(key).await,
        }
    }
}
