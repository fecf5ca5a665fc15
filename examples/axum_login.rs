//! An axum server with axum-login on a sessile store: logins survive restarts, and "your
//! devices" and "log out everywhere" work with no session bookkeeping of the app's own.
//!
//! ```sh
//! cargo run --example axum_login --features tower-014
//! ```
//!
//! axum-login 0.18 is built on tower-sessions 0.14, hence the feature `tower-014`. It
//! keeps the logged-in user's id under `axum-login.data` in the session;
//! `sessile::tower::TowerStore` indexes the session under that id, so
//! `TowerStore::sessions_of("1")` lists user 1's devices and
//! `TowerStore::destroy_user("1", ..)` logs them out.
//!
//! Settings (environment): `SESSILE_DATA` (default `./sessile-data-login`), `SESSILE_ADDR`
//! (default `127.0.0.1:3000`), `SESSILE_COOKIE_KEY`, as for `examples/server.rs`.
//!
//! Demo users (in memory): `alice` / `wonderland` (id 1), `bob` / `builder` (id 2).
//!
//! Routes (all JSON):
//! - `POST /login` with form fields `username`, `password`, optionally `remember=on`;
//! - `GET /me` (protected) -> the user and this session's handle;
//! - `GET /devices` (protected) -> the user's sessions;
//! - `POST /logout-others` (protected) -> destroys the user's other sessions;
//! - `POST /logout-everywhere` (protected) -> destroys all of them, this one included;
//! - `POST /logout` -> this session is destroyed.

mod common;

use std::collections::HashMap;
use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use axum_login::tower_sessions::cookie::time::Duration;
use axum_login::tower_sessions::{Expiry, Session, SessionManagerLayer};
use axum_login::{AuthManagerLayerBuilder, AuthUser, AuthnBackend, UserId};
use common::{AppError, devices_json};
use serde::Deserialize;
use serde_json::{Value, json};
use sessile::tower::TowerStore;

/// How long an ordinary login lasts without activity, and a remembered one.
const ORDINARY: Expiry = Expiry::OnInactivity(Duration::minutes(30));
const REMEMBERED: Expiry = Expiry::OnInactivity(Duration::days(30));
const REMEMBER_KEY: &str = "remembered";

#[derive(Clone, Debug)]
struct User {
    id: i64,
    name: &'static str,
    password: &'static str,
    /// Changes when the password does, which logs out every session (axum-login checks
    /// it on each request).
    auth_hash: [u8; 32],
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> i64 {
        self.id
    }

    fn session_auth_hash(&self) -> &[u8] {
        &self.auth_hash
    }
}

/// The users, in memory: a real app asks its database.
#[derive(Clone)]
struct Users(Arc<HashMap<i64, User>>);

impl Users {
    fn demo() -> Users {
        let user = |id, name, password: &'static str| User {
            id,
            name,
            password,
            auth_hash: blake3::hash(password.as_bytes()).into(),
        };
        Users(Arc::new(HashMap::from([
            (1, user(1, "alice", "wonderland")),
            (2, user(2, "bob", "builder")),
        ])))
    }
}

#[derive(Clone, Deserialize)]
struct Credentials {
    username: String,
    password: String,
    /// The "remember me" checkbox: `on` when ticked.
    remember: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("no such user")]
struct NoSuchUser;

impl AuthnBackend for Users {
    type User = User;
    type Credentials = Credentials;
    type Error = NoSuchUser;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, NoSuchUser> {
        let found = self.0.values().find(|u| u.name == creds.username);
        // A real app compares password hashes in constant time.
        Ok(found.filter(|u| u.password == creds.password).cloned())
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, NoSuchUser> {
        Ok(self.0.get(id).cloned())
    }
}

type AuthSession = axum_login::AuthSession<Users>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => common::report(&*e),
    }
}

async fn run() -> Result<(), Box<dyn Error + Send + Sync>> {
    let data =
        PathBuf::from(std::env::var_os("SESSILE_DATA").unwrap_or("./sessile-data-login".into()));
    let addr = std::env::var("SESSILE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let (store, key) = common::open(&data).await?;
    let store = TowerStore::new(store);

    let sessions = SessionManagerLayer::new(store.clone())
        .with_signed(key)
        .with_expiry(ORDINARY);
    let auth = AuthManagerLayerBuilder::new(Users::demo(), sessions).build();
    let protected = Router::new()
        .route("/me", get(me))
        .route("/devices", get(devices))
        .route("/logout-others", post(logout_others))
        .route("/logout-everywhere", post(logout_everywhere))
        .route_layer(axum::middleware::from_fn(login_required));
    let app = Router::new()
        .merge(protected)
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(axum::middleware::from_fn(keep_remembered))
        .layer(auth)
        .with_state(store.clone());

    common::serve(&addr, app, &store, &data).await
}

/// Answers 401 unless a user is logged in.
async fn login_required(auth: AuthSession, request: Request, next: Next) -> Response {
    match auth.user {
        Some(_) => next.run(request).await,
        None => not_logged_in(),
    }
}

/// tower-sessions does not store `Session::set_expiry`: a remembered login gets its
/// expiry back on every request (see `examples/server.rs`).
async fn keep_remembered(session: Session, request: Request, next: Next) -> Response {
    if let Ok(Some(true)) = session.get::<bool>(REMEMBER_KEY).await {
        session.set_expiry(Some(REMEMBERED));
    }
    next.run(request).await
}

/// `POST /login`: axum-login checks the password, rotates the session ID and stores the
/// user id, which the store indexes.
async fn login(
    mut auth: AuthSession,
    session: Session,
    Form(creds): Form<Credentials>,
) -> Result<Response, AppError> {
    let remembered = creds.remember.as_deref() == Some("on");
    let Some(user) = auth.authenticate(creds).await? else {
        let error = json!({ "error": "wrong user name or password" });
        return Ok((StatusCode::UNAUTHORIZED, Json(error)).into_response());
    };
    auth.login(&user).await?;
    session.insert(REMEMBER_KEY, remembered).await?;
    session.set_expiry(Some(if remembered { REMEMBERED } else { ORDINARY }));
    Ok(Json(json!({ "user": user.name, "id": user.id, "remembered": remembered })).into_response())
}

/// `GET /me`.
async fn me(auth: AuthSession, State(store): State<TowerStore>, session: Session) -> Response {
    let user = auth.user.as_ref().map(|u| u.name);
    let handle = session.id().map(|id| store.handle(&id).to_string());
    Json(json!({ "user": user, "handle": handle })).into_response()
}

/// `GET /devices`: the user's sessions, straight from sessile's per-user index.
async fn devices(
    auth: AuthSession,
    State(store): State<TowerStore>,
    session: Session,
) -> Result<Response, AppError> {
    let Some(user) = auth.user else {
        return Ok(not_logged_in());
    };
    let current = session.id().map(|id| store.handle(&id));
    let list = devices_json(store.sessions_of(&user.id.to_string()).await?, current);
    Ok(Json(json!({ "user": user.name, "devices": list })).into_response())
}

/// `POST /logout-others`: every session of the user but this one.
async fn logout_others(
    auth: AuthSession,
    State(store): State<TowerStore>,
    session: Session,
) -> Result<Response, AppError> {
    let Some(user) = auth.user else {
        return Ok(not_logged_in());
    };
    let current = session.id().map(|id| store.handle(&id));
    let destroyed = store.destroy_user(&user.id.to_string(), current).await?;
    Ok(Json(json!({ "user": user.name, "destroyed": destroyed })).into_response())
}

/// `POST /logout-everywhere`: every session of the user, this one included.
async fn logout_everywhere(
    auth: AuthSession,
    State(store): State<TowerStore>,
) -> Result<Response, AppError> {
    let Some(user) = auth.user else {
        return Ok(not_logged_in());
    };
    let destroyed = store.destroy_user(&user.id.to_string(), None).await?;
    Ok(Json(json!({ "user": user.name, "destroyed": destroyed })).into_response())
}

/// `POST /logout`: axum-login flushes the session (the record is deleted).
async fn logout(mut auth: AuthSession) -> Result<Json<Value>, AppError> {
    auth.logout().await?;
    Ok(Json(json!({ "user": null, "logged_out": true })))
}

fn not_logged_in() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "not logged in" })),
    )
        .into_response()
}
