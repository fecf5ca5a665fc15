//! An axum server whose sessions survive restarts: tower-sessions on a sessile store.
//!
//! ```sh
//! cargo run --example server --features tower
//! ```
//!
//! Settings (environment):
//! - `SESSILE_DATA`: data folder, default `./sessile-data` (sessions in `sessions/`, the
//!   cookie-signing key in `cookie-key`, mode 0600, made on first start);
//! - `SESSILE_ADDR`: listen address, default `127.0.0.1:3000`;
//! - `SESSILE_COOKIE_KEY`: the cookie-signing key as base64 of at least 64 bytes, instead
//!   of the key file;
//! - `SESSILE_REDIS_URL` (with `--features tower,redis`): keep the sessions on this Redis
//!   or Valkey server instead of the folder, so several copies of this server behind a
//!   load balancer share them (give them the same cookie key); `SESSILE_REDIS_NAMESPACE`
//!   picks the key prefix (default `sessile`).
//!
//! Routes (all JSON):
//! - `GET /` -> `{"user": null | "name", "visits": N}`, N counting the loads of `/` in
//!   this session;
//! - `POST /login` with form fields `user` and, optionally, `remember=on` -> new session
//!   ID, user set; a remembered login idles out after 30 days instead of 30 minutes;
//! - `POST /logout` -> the session is destroyed;
//! - `GET /devices` -> the user's sessions (handles and times);
//! - `POST /logout-others` -> destroys the user's other sessions;
//! - `POST /note` with form fields `text` and, optionally, `delay_ms` (at most 5000) ->
//!   keeps the note in the session, after that delay: a slow request (a report, an
//!   upload) whose save keeps the visits counted by other requests meanwhile;
//!   `GET /note` -> `{"note": null | "text"}`.
//!
//! `kill -USR1 <pid>` writes an online backup of every session to
//! `<data>/backup-<unix ms>.jsonl` while it serves (`sessile import NEW_DIR FILE` restores
//! it). Ctrl-C or SIGTERM stops it gracefully; the store is flushed (off the executor) before
//! it exits.

mod common;

use std::error::Error;
use std::path::PathBuf;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use common::{AppError, devices_json};
use serde::Deserialize;
use serde_json::{Value, json};
use sessile::tower::{TowerStore, USER_KEY};
use tower_sessions::cookie::time::Duration;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

const VISITS: &str = "visits";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => common::report(&*e),
    }
}

async fn run() -> Result<(), Box<dyn Error + Send + Sync>> {
    let data = PathBuf::from(std::env::var_os("SESSILE_DATA").unwrap_or("./sessile-data".into()));
    let addr = std::env::var("SESSILE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());

    let (store, key) = common::open(&data).await?;
    let store = TowerStore::new(store);

    let sessions = SessionManagerLayer::new(store.clone())
        .with_signed(key)
        .with_expiry(ORDINARY);
    let app = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/devices", get(devices))
        .route("/logout-others", post(logout_others))
        .route("/note", get(note).post(set_note))
        .layer(axum::middleware::from_fn(keep_remembered))
        .layer(sessions)
        .with_state(store.clone());

    common::serve(&addr, app, &store, &data).await
}

/// `GET /`: counts this session's visits.
async fn index(session: Session) -> Result<Json<Value>, AppError> {
    let visits = session.get::<u64>(VISITS).await?.unwrap_or(0) + 1;
    session.insert(VISITS, visits).await?;
    let user = session.get::<String>(USER_KEY).await?;
    Ok(Json(json!({ "user": user, "visits": visits })))
}

#[derive(Deserialize)]
struct Login {
    user: String,
    /// The "remember me" checkbox: `on` when ticked, absent otherwise.
    remember: Option<String>,
}

/// How long an ordinary session lasts without activity.
const ORDINARY: Expiry = Expiry::OnInactivity(Duration::minutes(30));
/// How long a "remember me" login lasts without activity. The store's default idle
/// timeout (30 minutes) does not cut it: the adapter makes it the session's own lifetime,
/// within the store's ceilings (`Config::max_idle_timeout`, 90 days by default), and
/// keeps an absolute timeout as long (a new login after 30 days, however active).
const REMEMBERED: Expiry = Expiry::OnInactivity(Duration::days(30));
/// The session key marking a "remember me" login.
const REMEMBER_KEY: &str = "remembered";

/// tower-sessions does not store `Session::set_expiry`: every request starts from the
/// layer's expiry. So a remembered login gets its expiry back on every request, before
/// the handler's writes save the session.
async fn keep_remembered(session: Session, request: Request, next: Next) -> Response {
    if let Ok(Some(true)) = session.get::<bool>(REMEMBER_KEY).await {
        session.set_expiry(Some(REMEMBERED));
    }
    next.run(request).await
}

/// `POST /login`: a fresh session ID (against session fixation), then the user.
async fn login(session: Session, Form(form): Form<Login>) -> Result<Response, AppError> {
    let user = form.user.trim();
    if user.is_empty() || user.len() > sessile::MAX_USER_LEN {
        let error = json!({ "error": "the form field `user` must hold 1 to 1024 bytes" });
        return Ok((StatusCode::BAD_REQUEST, Json(error)).into_response());
    }
    session.cycle_id().await?;
    session.insert(USER_KEY, user).await?;
    let remembered = form.remember.as_deref() == Some("on");
    session.insert(REMEMBER_KEY, remembered).await?;
    session.set_expiry(Some(if remembered { REMEMBERED } else { ORDINARY }));
    let visits = session.get::<u64>(VISITS).await?.unwrap_or(0);
    let body = json!({ "user": user, "visits": visits, "remembered": remembered });
    Ok(Json(body).into_response())
}

/// `POST /logout`: `flush` deletes the record; `clear` would keep an empty one.
async fn logout(session: Session) -> Result<Json<Value>, AppError> {
    session.flush().await?;
    Ok(Json(json!({ "user": null, "logged_out": true })))
}

/// `GET /devices`: the logged-in user's sessions, by handle (never by cookie value).
async fn devices(State(store): State<TowerStore>, session: Session) -> Result<Response, AppError> {
    let Some(user) = session.get::<String>(USER_KEY).await? else {
        return Ok(not_logged_in());
    };
    let current = session.id().map(|id| store.handle(&id));
    let list = devices_json(store.sessions_of(&user).await?, current);
    Ok(Json(json!({ "user": user, "devices": list })).into_response())
}

/// `POST /logout-others`: destroys every session of the user but this one.
async fn logout_others(
    State(store): State<TowerStore>,
    session: Session,
) -> Result<Response, AppError> {
    let Some(user) = session.get::<String>(USER_KEY).await? else {
        return Ok(not_logged_in());
    };
    let current = session.id().map(|id| store.handle(&id));
    let destroyed = store.destroy_user(&user, current).await?;
    Ok(Json(json!({ "user": user, "destroyed": destroyed })).into_response())
}

const NOTE: &str = "note";

#[derive(Deserialize)]
struct Note {
    text: String,
    delay_ms: Option<u64>,
}

/// `POST /note`: loads the session, waits `delay_ms`, then keeps the note. Other
/// requests of the session meanwhile (a visit of `/` in another tab) keep their changes:
/// the save writes only the note.
async fn set_note(session: Session, Form(form): Form<Note>) -> Result<Json<Value>, AppError> {
    let visits = session.get::<u64>(VISITS).await?.unwrap_or(0);
    let delay = form.delay_ms.unwrap_or(0).min(5000);
    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    session.insert(NOTE, &form.text).await?;
    Ok(Json(json!({ "note": form.text, "visits_seen": visits })))
}

/// `GET /note`: the note kept in the session.
async fn note(session: Session) -> Result<Json<Value>, AppError> {
    Ok(Json(json!({ "note": session.get::<String>(NOTE).await? })))
}

fn not_logged_in() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "not logged in" })),
    )
        .into_response()
}
