//! tower-sessions-stores' route tests (the checks every store in that repository passes:
//! its `tests/common`), run on sessile's tower adapter for both tower-sessions versions,
//! on the suites' backend (sled, or Redis with `SESSILE_TEST_BACKEND=redis`). Each test
//! sends one-shot requests to an axum app and looks at the cookie each answer sets and at
//! what the session holds. Time moves on the store's manual clock, not by sleeping.

#![cfg(any(feature = "tower", feature = "tower-014"))]

mod support;

/// The route tests on one tower-sessions version (`$ts`: the crate, 0.15 or 0.14).
macro_rules! route_tests {
    ($module:ident, $ts:ident) => {
        mod $module {
            use std::time::Duration as StdDuration;

            use axum::Router;
            use axum::body::Body;
            use axum::http::{Request, Response, StatusCode, header};
            use axum::routing::get;
            use sessile::Store;
            use sessile::tower::TowerStore;
            use tower::ServiceExt;
            use $ts::cookie::time::Duration;
            use $ts::cookie::{Cookie, SameSite};
            use $ts::{Expiry, Session, SessionManagerLayer};

            use crate::support::Fixture;

            type Answer = Result<String, StatusCode>;

            fn fail(e: $ts::session::Error) -> StatusCode {
                eprintln!("session error: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }

            /// The routes of tower-sessions-stores' tests, over `store`, with sessions
            /// expiring after `inactivity` (a browser-session cookie if `None`).
            fn app(store: &Store, inactivity: Option<Duration>) -> Router {
                let store = TowerStore::new(store.clone());
                let mut layer = SessionManagerLayer::new(store).with_secure(true);
                if let Some(inactivity) = inactivity {
                    layer = layer.with_expiry(Expiry::OnInactivity(inactivity));
                }
                Router::new()
                    .route("/", get(|_: Session| async { "Hello, world!" }))
                    .route(
                        "/insert",
                        get(|s: Session| async move {
                            s.insert("foo", 42)
                                .await
                                .map_err(fail)
                                .map(|()| String::new())
                        }),
                    )
                    .route(
                        "/get",
                        get(|s: Session| async move {
                            let foo = s.get::<usize>("foo").await.map_err(fail)?;
                            foo.map(|n| n.to_string()).ok_or(StatusCode::NOT_FOUND)
                        }),
                    )
                    .route(
                        "/get_value",
                        get(|s: Session| async move {
                            let value = s.get_value("foo").await.map_err(fail)?;
                            Answer::Ok(format!("{value:?}"))
                        }),
                    )
                    .route(
                        "/remove_value",
                        get(|s: Session| async move {
                            s.remove_value("foo").await.map_err(fail)?;
                            Answer::Ok(String::new())
                        }),
                    )
                    .route(
                        "/cycle_id",
                        get(|s: Session| async move {
                            s.cycle_id().await.map_err(fail).map(|()| String::new())
                        }),
                    )
                    .route(
                        "/flush",
                        get(|s: Session| async move {
                            s.flush().await.map_err(fail).map(|()| String::new())
                        }),
                    )
                    .layer(layer)
            }

            /// `GET uri`, with `cookie` sent back if given.
            async fn send(app: &Router, uri: &str, cookie: Option<&Cookie<'_>>) -> Response<Body> {
                let mut request = Request::builder().uri(uri);
                if let Some(cookie) = cookie {
                    request = request.header(header::COOKIE, cookie.stripped().to_string());
                }
                let request = request.body(Body::empty()).expect("request");
                app.clone().oneshot(request).await.expect("infallible")
            }

            /// The session cookie the answer sets, if any.
            fn set_cookie(response: &Response<Body>) -> Option<Cookie<'static>> {
                let value = response.headers().get(header::SET_COOKIE)?;
                Cookie::parse(value.to_str().expect("ascii").to_owned()).ok()
            }

            async fn body(response: Response<Body>) -> String {
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                    .await
                    .expect("body");
                String::from_utf8(bytes.to_vec()).expect("utf-8")
            }

            /// A fixture, its store and an app on it with sessions idle for at most an
            /// hour.
            fn hour() -> (Fixture, Store, Router) {
                let fixture = Fixture::new();
                let store = fixture.open();
                let app = app(&store, Some(Duration::hours(1)));
                (fixture, store, app)
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_request_that_touches_no_value_sets_no_cookie() {
                let (_fixture, _store, app) = hour();
                let response = send(&app, "/", None).await;
                assert_eq!(response.status(), StatusCode::OK);
                assert!(set_cookie(&response).is_none());
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_unknown_session_id_gets_a_new_one() {
                let (_fixture, store, app) = hour();
                let bogus = Cookie::new("id", "AAAAAAAAAAAAAAAAAAAAAA");
                let response = send(&app, "/insert", Some(&bogus)).await;
                assert_eq!(response.status(), StatusCode::OK);
                let cookie = set_cookie(&response).expect("a new session's cookie");
                assert_ne!(cookie.value(), bogus.value());
                assert_eq!(store.len().expect("len"), 1);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_malformed_session_id_gets_a_new_one() {
                let (_fixture, _store, app) = hour();
                let malformed = Cookie::new("id", "malformed");
                let response = send(&app, "/", Some(&malformed)).await;
                assert_eq!(response.status(), StatusCode::OK);
                let cookie = set_cookie(&response).expect("the removal of the bad cookie");
                assert_ne!(cookie.value(), "malformed");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_insert_sets_the_session_cookie() {
                let (_fixture, _store, app) = hour();
                let response = send(&app, "/insert", None).await;
                let cookie = set_cookie(&response).expect("cookie");
                assert_eq!(cookie.name(), "id");
                assert_eq!(cookie.http_only(), Some(true));
                assert_eq!(cookie.same_site(), Some(SameSite::Strict));
                assert!(
                    cookie
                        .max_age()
                        .is_some_and(|age| age <= Duration::hours(1))
                );
                assert_eq!(cookie.secure(), Some(true));
                assert_eq!(cookie.path(), Some("/"));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn without_an_expiry_the_cookie_is_a_browser_sessions() {
                let fixture = Fixture::new();
                let app = app(&fixture.open(), None);
                let response = send(&app, "/insert", None).await;
                let cookie = set_cookie(&response).expect("cookie");
                assert_eq!(cookie.name(), "id");
                assert!(cookie.max_age().is_none());
                assert_eq!(cookie.secure(), Some(true));
                assert_eq!(cookie.http_only(), Some(true));
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_value_inserted_is_read_back() {
                let (_fixture, _store, app) = hour();
                let cookie = set_cookie(&send(&app, "/insert", None).await).expect("cookie");
                let response = send(&app, "/get", Some(&cookie)).await;
                assert_eq!(response.status(), StatusCode::OK);
                assert_eq!(body(response).await, "42");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_new_session_has_no_value() {
                let (_fixture, _store, app) = hour();
                assert_eq!(body(send(&app, "/get_value", None).await).await, "None");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_expired_session_has_no_value() {
                let fixture = Fixture::new();
                let app = app(&fixture.open(), Some(Duration::seconds(1)));
                let cookie = set_cookie(&send(&app, "/insert", None).await).expect("cookie");
                assert_eq!(body(send(&app, "/get", Some(&cookie)).await).await, "42");
                fixture.clock.advance(StdDuration::from_millis(1100));
                let response = send(&app, "/get_value", Some(&cookie)).await;
                assert_eq!(body(response).await, "None");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn removing_the_last_value_leaves_none() {
                let (_fixture, _store, app) = hour();
                let cookie = set_cookie(&send(&app, "/insert", None).await).expect("cookie");
                let response = send(&app, "/remove_value", Some(&cookie)).await;
                assert_eq!(response.status(), StatusCode::OK);
                let response = send(&app, "/get_value", Some(&cookie)).await;
                assert_eq!(body(response).await, "None");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_cycled_id_keeps_the_values_and_retires_the_old_id() {
                let (_fixture, _store, app) = hour();
                let first = set_cookie(&send(&app, "/insert", None).await).expect("cookie");
                let second =
                    set_cookie(&send(&app, "/cycle_id", Some(&first)).await).expect("new cookie");
                assert_ne!(first.value(), second.value());
                assert_eq!(body(send(&app, "/get", Some(&second)).await).await, "42");
                let old = send(&app, "/get_value", Some(&first)).await;
                assert_eq!(body(old).await, "None");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_flush_removes_the_cookie_and_the_session() {
                let (_fixture, store, app) = hour();
                let cookie = set_cookie(&send(&app, "/insert", None).await).expect("cookie");
                let response = send(&app, "/flush", Some(&cookie)).await;
                let removal = set_cookie(&response).expect("removal cookie");
                assert_eq!(removal.value(), "");
                assert_eq!(removal.max_age(), Some(Duration::ZERO));
                assert_eq!(store.len().expect("len"), 0);
                let response = send(&app, "/get_value", Some(&cookie)).await;
                assert_eq!(body(response).await, "None");
            }
        }
    };
}

#[cfg(feature = "tower")]
route_tests!(tower_sessions_015, tower_sessions);
#[cfg(feature = "tower-014")]
route_tests!(tower_sessions_014, tower_sessions_014);
