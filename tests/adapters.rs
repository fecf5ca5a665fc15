//! The adapter conformance suite (tests/adapter_suite) run against every adapter, each
//! behind a real server of its framework: axum + tower-sessions 0.15, axum +
//! tower-sessions 0.14 (the version axum-login uses), actix-web + actix-session.

#![cfg(any(feature = "tower", feature = "tower-014", feature = "actix"))]

#[path = "backend/mod.rs"]
mod backend;
#[macro_use]
mod adapter_suite;

/// A tower backend on one tower-sessions version (`$ts`: the crate, 0.15 or 0.14).
macro_rules! tower_backend {
    ($module:ident, $ts:ident) => {
        mod $module {
            use std::time::Duration;

            use axum::Json;
            use axum::Router;
            use axum::extract::Path;
            use axum::http::StatusCode;
            use axum::routing::{get, post};
            use serde_json::{Value, json};
            use sessile::Store;
            use sessile::tower::{TowerStore, USER_KEY};
            use $ts::cookie::Key;
            use $ts::{Expiry, Session, SessionManagerLayer};

            use super::adapter_suite::{Backend, Gate, KEY, Server};

            pub struct Tower;

            type Answer = Result<Json<Value>, StatusCode>;

            fn fail(e: $ts::session::Error) -> StatusCode {
                eprintln!("session error: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }

            async fn get_value(session: Session, Path(key): Path<String>) -> Answer {
                let value = session.get::<Value>(&key).await.map_err(fail)?;
                Ok(Json(json!({ "value": value })))
            }

            async fn set(session: Session, Path((key, value)): Path<(String, String)>) -> Answer {
                session.insert(&key, value).await.map_err(fail)?;
                Ok(Json(json!({})))
            }

            async fn remove(session: Session, Path(key): Path<String>) -> Answer {
                session.remove::<Value>(&key).await.map_err(fail)?;
                Ok(Json(json!({})))
            }

            async fn incr(session: Session) -> Answer {
                let n = session.get::<u64>("n").await.map_err(fail)?.unwrap_or(0) + 1;
                session.insert("n", n).await.map_err(fail)?;
                Ok(Json(json!({ "value": n })))
            }

            async fn cycle(session: Session) -> Answer {
                session.cycle_id().await.map_err(fail)?;
                Ok(Json(json!({})))
            }

            async fn login(session: Session, Path(user): Path<String>) -> Answer {
                session.cycle_id().await.map_err(fail)?;
                session.insert(USER_KEY, user).await.map_err(fail)?;
                Ok(Json(json!({})))
            }

            async fn logout(session: Session) -> Answer {
                session.flush().await.map_err(fail)?;
                Ok(Json(json!({})))
            }

            static GATE: Gate = Gate::new();

            async fn slow(session: Session, Path((key, value)): Path<(String, String)>) -> Answer {
                session.get::<Value>("theme").await.map_err(fail)?; // loads the session
                GATE.pass().await;
                session.insert(&key, value).await.map_err(fail)?;
                Ok(Json(json!({})))
            }

            static GATES_AFTER_CYCLE: [Gate; 2] = [Gate::new(), Gate::new()];
            static GATES_BEFORE_CYCLE: [Gate; 2] = [Gate::new(), Gate::new()];

            async fn gate_then_cycle(session: Session, Path(n): Path<usize>) -> Answer {
                session.get::<Value>("cart").await.map_err(fail)?; // loads the session
                GATES_BEFORE_CYCLE[n].pass().await;
                session.cycle_id().await.map_err(fail)?;
                Ok(Json(json!({})))
            }

            async fn slow_cycle(session: Session, Path(n): Path<usize>) -> Answer {
                session.get::<Value>("cart").await.map_err(fail)?; // loads the session
                session.cycle_id().await.map_err(fail)?;
                GATES_AFTER_CYCLE[n].pass().await;
                Ok(Json(json!({})))
            }

            impl Backend for Tower {
                fn gate() -> &'static Gate {
                    &GATE
                }
                fn gates_after_cycle() -> &'static [Gate; 2] {
                    &GATES_AFTER_CYCLE
                }
                fn gates_before_cycle() -> &'static [Gate; 2] {
                    &GATES_BEFORE_CYCLE
                }

                fn serve(store: Store, listener: std::net::TcpListener, ttl: Duration) -> Server {
                    let addr = listener.local_addr().expect("addr");
                    listener.set_nonblocking(true).expect("nonblocking");
                    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                    let for_server = store.clone();
                    let thread = std::thread::spawn(move || {
                        let runtime = tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(2)
                            .enable_all()
                            .build()
                            .expect("runtime");
                        runtime.block_on(async move {
                            let store = TowerStore::new(for_server);
                            let ttl = $ts::cookie::time::Duration::try_from(ttl).expect("ttl");
                            let layer = SessionManagerLayer::new(store.clone())
                                .with_secure(false)
                                .with_signed(Key::from(&KEY))
                                .with_expiry(Expiry::OnInactivity(ttl));
                            let app = Router::new()
                                .route("/get/{key}", get(get_value))
                                .route("/set/{key}/{value}", post(set))
                                .route("/remove/{key}", post(remove))
                                .route("/incr", post(incr))
                                .route("/cycle", post(cycle))
                                .route("/login/{user}", post(login))
                                .route("/logout", post(logout))
                                .route("/slow/{key}/{value}", post(slow))
                                .route("/slow-cycle/{n}", post(slow_cycle))
                                .route("/gate-then-cycle/{n}", post(gate_then_cycle))
                                .layer(layer);
                            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                            axum::serve(listener, app)
                                .with_graceful_shutdown(async move {
                                    let _ = stop_rx.await;
                                })
                                .await
                                .expect("serve");
                            store.flush().await.expect("flush");
                        });
                    });
                    let stop = Box::new(move || {
                        let _ = stop_tx.send(());
                    });
                    Server::new(addr, store, stop, thread)
                }
            }

        }
    };
}

#[cfg(feature = "tower")]
tower_backend!(tower_backend, tower_sessions);
#[cfg(feature = "tower-014")]
tower_backend!(tower014_backend, tower_sessions_014);

#[cfg(feature = "actix")]
mod actix_backend {
    use std::time::Duration;

    use actix_session::config::PersistentSession;
    use actix_session::{Session, SessionMiddleware};
    use actix_web::cookie::Key;
    use actix_web::{App, HttpResponse, HttpServer, web};
    use serde_json::{Value, json};
    use sessile::Store;
    use sessile::actix::{ActixStore, USER_KEY};

    use super::adapter_suite::{Backend, Gate, KEY, Server};

    pub struct Actix;

    type Answer = actix_web::Result<HttpResponse>;

    async fn get_value(session: Session, key: web::Path<String>) -> Answer {
        let value = session.get::<Value>(&key)?;
        Ok(HttpResponse::Ok().json(json!({ "value": value })))
    }

    async fn set(session: Session, path: web::Path<(String, String)>) -> Answer {
        let (key, value) = path.into_inner();
        session.insert(key, value)?;
        Ok(HttpResponse::Ok().json(json!({})))
    }

    async fn remove(session: Session, key: web::Path<String>) -> Answer {
        session.remove(&key);
        Ok(HttpResponse::Ok().json(json!({})))
    }

    async fn incr(session: Session) -> Answer {
        let n = session.get::<u64>("n")?.unwrap_or(0) + 1;
        session.insert("n", n)?;
        Ok(HttpResponse::Ok().json(json!({ "value": n })))
    }

    async fn cycle(session: Session) -> Answer {
        session.renew();
        Ok(HttpResponse::Ok().json(json!({})))
    }

    async fn login(session: Session, user: web::Path<String>) -> Answer {
        session.renew();
        session.insert(USER_KEY, user.into_inner())?;
        Ok(HttpResponse::Ok().json(json!({})))
    }

    async fn logout(session: Session) -> Answer {
        session.purge();
        Ok(HttpResponse::Ok().json(json!({})))
    }

    static GATE: Gate = Gate::new();

    async fn slow(session: Session, path: web::Path<(String, String)>) -> Answer {
        session.get::<Value>("theme")?; // the middleware loaded the session
        GATE.pass().await;
        let (key, value) = path.into_inner();
        session.insert(key, value)?;
        Ok(HttpResponse::Ok().json(json!({})))
    }

    static GATES_AFTER_CYCLE: [Gate; 2] = [Gate::new(), Gate::new()];

    static GATES_BEFORE_CYCLE: [Gate; 2] = [Gate::new(), Gate::new()];

    async fn gate_then_cycle(session: Session, n: web::Path<usize>) -> Answer {
        GATES_BEFORE_CYCLE[n.into_inner()].pass().await;
        session.renew();
        Ok(HttpResponse::Ok().json(json!({})))
    }

    async fn slow_cycle(session: Session, n: web::Path<usize>) -> Answer {
        session.renew();
        GATES_AFTER_CYCLE[n.into_inner()].pass().await;
        Ok(HttpResponse::Ok().json(json!({})))
    }

    impl Backend for Actix {
        fn gate() -> &'static Gate {
            &GATE
        }
        fn gates_after_cycle() -> &'static [Gate; 2] {
            &GATES_AFTER_CYCLE
        }
        fn gates_before_cycle() -> &'static [Gate; 2] {
            &GATES_BEFORE_CYCLE
        }

        fn serve(store: Store, listener: std::net::TcpListener, ttl: Duration) -> Server {
            let addr = listener.local_addr().expect("addr");
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let for_server = store.clone();
            let thread = std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let store = ActixStore::new(for_server);
                    let ttl = actix_web::cookie::time::Duration::try_from(ttl).expect("ttl");
                    let key = Key::from(&KEY);
                    let for_app = store.clone();
                    let server = HttpServer::new(move || {
                        App::new()
                            .wrap(
                                SessionMiddleware::builder(for_app.clone(), key.clone())
                                    .cookie_secure(false)
                                    .session_lifecycle(
                                        PersistentSession::default().session_ttl(ttl),
                                    )
                                    .build(),
                            )
                            .route("/get/{key}", web::get().to(get_value))
                            .route("/set/{key}/{value}", web::post().to(set))
                            .route("/remove/{key}", web::post().to(remove))
                            .route("/incr", web::post().to(incr))
                            .route("/cycle", web::post().to(cycle))
                            .route("/login/{user}", web::post().to(login))
                            .route("/logout", web::post().to(logout))
                            .route("/slow/{key}/{value}", web::post().to(slow))
                            .route("/slow-cycle/{n}", web::post().to(slow_cycle))
                            .route("/gate-then-cycle/{n}", web::post().to(gate_then_cycle))
                    })
                    .workers(2)
                    .disable_signals()
                    .listen(listener)
                    .expect("listen")
                    .run();
                    let handle = server.handle();
                    actix_web::rt::spawn(async move {
                        let _ = stop_rx.await;
                        handle.stop(true).await;
                    });
                    server.await.expect("serve");
                    store.flush().await.expect("flush");
                });
            });
            let stop = Box::new(move || {
                let _ = stop_tx.send(());
            });
            Server::new(addr, store, stop, thread)
        }
    }
}

#[cfg(feature = "tower")]
conformance_suite!(tower, crate::tower_backend::Tower);
#[cfg(feature = "tower-014")]
conformance_suite!(tower014, crate::tower014_backend::Tower);
#[cfg(feature = "actix")]
conformance_suite!(actix, crate::actix_backend::Actix);

/// The store contract called directly, for what HTTP cannot force: an ID collision.
#[cfg(feature = "tower")]
mod tower_contract {
    use std::collections::HashMap;

    use serde_json::json;
    use sessile::tower::TowerStore;
    use tower_sessions::cookie::time::{Duration, OffsetDateTime};
    use tower_sessions::session::{Id, Record};
    use tower_sessions::session_store::SessionStore;

    fn record(id: i128, value: &str) -> Record {
        Record {
            id: Id(id),
            data: HashMap::from([("v".to_owned(), json!(value))]),
            expiry_date: OffsetDateTime::now_utc() + Duration::minutes(5),
        }
    }

    /// A loaded session emptied and given a new ID (`cycle_id`) carries only what the
    /// request loaded: tower creates nothing for an empty session, nor does the store.
    #[tokio::test]
    async fn an_emptied_session_with_a_new_id_is_not_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TowerStore::new(
            crate::backend::config_at(dir.path().join("s"))
                .open()
                .expect("open"),
        );
        let mut created = record(0, "x");
        store.create(&mut created).await.expect("create");
        let mut loaded = store.load(&created.id).await.expect("load").expect("live");
        loaded.data.remove("v");
        assert_eq!(loaded.data.len(), 1, "only sessile.base is left");
        store.delete(&created.id).await.expect("delete"); // cycle_id
        store.create(&mut loaded).await.expect("create");
        assert_eq!(store.store().len().expect("len"), 0);
    }

    /// A record saved before the user was kept as a value (its user only in the index):
    /// a request that loaded it and a logout by another request that cleared it; the
    /// first request's later save of a cart does not write the user back.
    #[tokio::test]
    async fn a_stale_request_does_not_log_a_cleared_legacy_session_back_in() {
        use sessile::tower::USER_KEY;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TowerStore::new(
            crate::backend::config_at(dir.path().join("s"))
                .open()
                .expect("open"),
        );
        let mut created = record(0, "x");
        created.data.insert(USER_KEY.to_owned(), json!("alice"));
        store.create(&mut created).await.expect("create");
        // Make it a legacy record: the user in the index only.
        let core = store.store();
        let mut dump = core
            .inspect(&store.handle(&created.id))
            .expect("inspect")
            .expect("stored");
        dump.values.remove(USER_KEY);
        core.restore(&dump).expect("restore");

        let mut stale = store.load(&created.id).await.expect("load").expect("live");
        assert_eq!(
            stale.data[USER_KEY],
            json!("alice"),
            "handed out as the user"
        );
        let mut logout = store.load(&created.id).await.expect("load").expect("live");
        logout.data.clear();
        store.save(&logout).await.expect("logout");
        stale.data.insert("cart".to_owned(), json!([1]));
        store.save(&stale).await.expect("save");
        let now = store.load(&created.id).await.expect("load").expect("live");
        assert_eq!(now.data.get(USER_KEY), None, "the user came back");
        assert_eq!(now.data["cart"], json!([1]));
        assert!(core.sessions_of("alice").expect("list").is_empty());
    }

    /// `create` always issues a fresh ID: after `Session::flush` (logout) tower-sessions
    /// calls `create` with the old ID, which must never be handed out again.
    #[tokio::test]
    async fn create_always_issues_a_fresh_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TowerStore::new(
            crate::backend::config_at(dir.path().join("s"))
                .open()
                .expect("open"),
        );
        let mut first = record(5, "first");
        store.create(&mut first).await.expect("create");
        assert_ne!(first.id, Id(5), "the ID the record came with is not used");
        let taken = first.id;
        let mut second = record(taken.0, "second");
        store.create(&mut second).await.expect("create");
        assert_ne!(second.id, taken, "nor a taken one");
        let loaded = store.load(&taken).await.expect("load").expect("live");
        assert_eq!(loaded.data["v"], json!("first"), "never overwritten");
        let loaded = store.load(&second.id).await.expect("load").expect("live");
        assert_eq!(loaded.data["v"], json!("second"));
        assert!(store.load(&Id(5)).await.expect("load").is_none());
    }

    /// axum-login's data indexes the session under its user id; `USER_KEY` wins and
    /// loads back as saved, also when equal to the id; `null` keeps the session out of
    /// the index across saves.
    #[tokio::test]
    async fn axum_login_data_indexes_the_user_and_user_key_round_trips() {
        use sessile::tower::{AXUM_LOGIN_KEY, BASE_KEY, USER_KEY};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TowerStore::new(
            crate::backend::config_at(dir.path().join("s"))
                .open()
                .expect("open"),
        );
        let login = json!({ "user_id": 1, "auth_hash": [1, 2, 3] });
        let with = |pairs: &[(&str, serde_json::Value)]| Record {
            id: Id(0),
            data: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            expiry_date: OffsetDateTime::now_utc() + Duration::minutes(5),
        };
        let mut plain = with(&[(AXUM_LOGIN_KEY, login.clone())]);
        store.create(&mut plain).await.expect("create");
        let listed = store.sessions_of("1").await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].handle, store.handle(&plain.id));
        let mut loaded = store.load(&plain.id).await.expect("load").expect("live");
        assert!(
            loaded.data.remove(BASE_KEY).is_some(),
            "what the request loaded"
        );
        assert_eq!(
            loaded.data, plain.data,
            "axum-login's value stays, nothing else added"
        );

        let mut both = with(&[(AXUM_LOGIN_KEY, login.clone()), (USER_KEY, json!("1"))]);
        store.create(&mut both).await.expect("create");
        let loaded = store.load(&both.id).await.expect("load").expect("live");
        assert_eq!(loaded.data[USER_KEY], json!("1"), "USER_KEY loads back");

        let mut opted_out = with(&[(AXUM_LOGIN_KEY, login), (USER_KEY, json!(null))]);
        store.create(&mut opted_out).await.expect("create");
        let mut again = store
            .load(&opted_out.id)
            .await
            .expect("load")
            .expect("live");
        again.data.insert("x".into(), json!(1));
        store.save(&again).await.expect("save");
        let handles: Vec<_> = store
            .sessions_of("1")
            .await
            .expect("list")
            .iter()
            .map(|i| i.handle)
            .collect();
        assert_eq!(handles.len(), 2, "the null opt-out holds after a save");
        assert!(!handles.contains(&store.handle(&opted_out.id)));
    }

    #[tokio::test]
    async fn save_after_delete_and_past_expiry_keep_the_session_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TowerStore::new(
            crate::backend::config_at(dir.path().join("s"))
                .open()
                .expect("open"),
        );
        let mut r = record(9, "x");
        store.create(&mut r).await.expect("create");
        store.delete(&r.id).await.expect("delete");
        store
            .save(&r)
            .await
            .expect("save of a deleted record is not an error");
        assert!(store.load(&r.id).await.expect("load").is_none());

        let mut r = record(10, "y");
        store.create(&mut r).await.expect("create");
        r.expiry_date = OffsetDateTime::now_utc() - Duration::seconds(1);
        store.save(&r).await.expect("save");
        assert!(store.load(&r.id).await.expect("load").is_none());
    }
}

/// The tower adapter's hot records (a tower ID straight to the converted record): every
/// change made by any other path shows at the next load, and a load racing writes never
/// goes back to an older version.
#[cfg(feature = "tower")]
mod tower_hot {
    use std::collections::HashMap;
    use std::sync::{Arc, Barrier, mpsc};
    use std::time::Duration as StdDuration;

    use serde_json::json;
    use sessile::ManualClock;
    use sessile::tower::{TowerStore, USER_KEY};
    use tower_sessions::cookie::time::{Duration, OffsetDateTime};
    use tower_sessions::session::{Id, Record};
    use tower_sessions::session_store::SessionStore;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// A session of `user` holding `n`, loaded three times (so its converted record is
    /// remembered) through `store`.
    async fn hot_session(store: &TowerStore, user: &str, n: u64) -> Id {
        let mut record = Record {
            id: Id::default(),
            data: HashMap::from([
                ("n".to_owned(), json!(n)),
                (USER_KEY.to_owned(), json!(user)),
            ]),
            expiry_date: OffsetDateTime::now_utc() + Duration::minutes(30),
        };
        store.create(&mut record).await.expect("create");
        for _ in 0..3 {
            assert!(store.load(&record.id).await.expect("load").is_some());
        }
        record.id
    }

    async fn value(store: &TowerStore, id: &Id) -> Option<serde_json::Value> {
        let record = store.load(id).await.expect("load")?;
        Some(record.data["n"].clone())
    }

    #[test]
    fn a_hot_load_sees_every_change_made_through_another_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let core = crate::backend::config_at(dir.path().join("s"))
            .clock(clock.clock())
            .purge_thread(false)
            .open()
            .expect("open");
        let hot = TowerStore::new(core.clone());
        let other = TowerStore::new(core.clone());
        runtime().block_on(async {
            // A save through another TowerStore (its own hot records).
            let id = hot_session(&hot, "ann", 1).await;
            let mut changed = other.load(&id).await.expect("load").expect("live");
            changed.data.insert("n".to_owned(), json!(2));
            other.save(&changed).await.expect("save");
            assert_eq!(value(&hot, &id).await, Some(json!(2)));

            // A logout everywhere through the core store.
            assert_eq!(core.destroy_user("ann", None).expect("revoke"), 1);
            assert_eq!(value(&hot, &id).await, None, "a revoked session loaded");

            // A delete through another TowerStore.
            let id = hot_session(&hot, "bob", 3).await;
            other.delete(&id).await.expect("delete");
            assert_eq!(value(&hot, &id).await, None, "a deleted session loaded");

            // The expiry passing, with nothing written.
            let id = hot_session(&hot, "cat", 4).await;
            clock.advance(StdDuration::from_secs(31 * 60));
            assert_eq!(value(&hot, &id).await, None, "an expired session loaded");
        });
    }

    /// Loads through one TowerStore on two threads racing saves and deletes through
    /// another, released together, many rounds: no load returns a version older than one
    /// a load returned before it began, and the first load after the writes returns what
    /// they left.
    #[test]
    fn hot_loads_racing_writes_never_go_back_to_an_older_version() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let rounds: u64 = std::env::var("SESSILE_RACE_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(40);
        let dir = tempfile::tempdir().expect("tempdir");
        let core = crate::backend::config_at(dir.path().join("s"))
            .open()
            .expect("open");
        let reader = TowerStore::new(core.clone());
        let writer = TowerStore::new(core.clone());
        for round in 0..rounds {
            let id = runtime().block_on(hot_session(&reader, "ann", 0));
            let barrier = Arc::new(Barrier::new(3));
            let done = Arc::new(AtomicBool::new(false));
            // The newest version any load has returned (u64::MAX once deleted).
            let newest = Arc::new(AtomicU64::new(0));
            let (tx, rx) = mpsc::channel();
            let mut threads = Vec::new();
            let (w, start, finished) = (writer.clone(), Arc::clone(&barrier), Arc::clone(&done));
            let sent = tx.clone();
            threads.push(std::thread::spawn(move || {
                start.wait();
                runtime().block_on(async {
                    for n in 1..=20u64 {
                        let mut r = w.load(&id).await.expect("load").expect("live");
                        r.data.insert("n".to_owned(), json!(n));
                        w.save(&r).await.expect("save");
                    }
                    if round % 2 == 1 {
                        w.delete(&id).await.expect("delete");
                    }
                });
                finished.store(true, Ordering::SeqCst);
                let _ = sent.send(None);
            }));
            for _ in 0..2 {
                let (r, start, done) = (reader.clone(), Arc::clone(&barrier), Arc::clone(&done));
                let (newest, sent) = (Arc::clone(&newest), tx.clone());
                threads.push(std::thread::spawn(move || {
                    start.wait();
                    let mut went_back = None;
                    runtime().block_on(async {
                        loop {
                            let last = done.load(Ordering::SeqCst);
                            let before = newest.load(Ordering::SeqCst);
                            let n = match value(&r, &id).await {
                                Some(n) => n.as_u64().expect("a number"),
                                None => u64::MAX, // deleted: nothing may come back
                            };
                            if n < before {
                                went_back = Some((before, n));
                            }
                            newest.fetch_max(n, Ordering::SeqCst);
                            if last {
                                break;
                            }
                        }
                    });
                    let _ = sent.send(Some(went_back));
                }));
            }
            for _ in 0..3 {
                let outcome = rx
                    .recv_timeout(StdDuration::from_secs(60))
                    .expect("a racing thread hung");
                if let Some(went_back) = outcome {
                    assert_eq!(went_back, None, "round {round}: a load went back");
                }
            }
            for thread in threads {
                thread.join().expect("a racing thread panicked");
            }
            let after = runtime().block_on(value(&reader, &id));
            let expected = if round % 2 == 1 {
                None
            } else {
                Some(json!(20))
            };
            assert_eq!(after, expected, "round {round}: the load after the writes");
        }
    }
}
