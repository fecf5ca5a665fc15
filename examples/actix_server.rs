//! An actix-web server whose sessions survive restarts: actix-session on a sessile store.
//! The same routes, settings and behaviour as `examples/server.rs` (axum).
//!
//! ```sh
//! cargo run --example actix_server --features actix
//! ```
//!
//! Settings (environment):
//! - `SESSILE_DATA`: data folder, default `./sessile-data` (sessions in `sessions/`, the
//!   cookie-signing key in `cookie-key`, mode 0600, made on first start);
//! - `SESSILE_ADDR`: listen address, default `127.0.0.1:3000`;
//! - `SESSILE_COOKIE_KEY`: the cookie-signing key as base64 of at least 64 bytes, instead
//!   of the key file.
//!
//! Routes (all JSON):
//! - `GET /` -> `{"user": null | "name", "visits": N}`, N counting the loads of `/` in
//!   this session;
//! - `POST /login` with form field `user` -> new session key, user set;
//! - `POST /logout` -> the session is destroyed;
//! - `GET /devices` -> the user's sessions (handles and times);
//! - `POST /logout-others` -> destroys the user's other sessions.
//!
//! `kill -USR1 <pid>` writes an online backup of every session to
//! `<data>/backup-<unix ms>.jsonl` while it serves (`sessile import NEW_DIR FILE` restores
//! it). Ctrl-C or SIGTERM stops it gracefully (actix-web handles both); the store is then
//! flushed off the executor before the process exits.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[path = "common/process.rs"]
mod process;
use process::{backups_on_signal, report};

use actix_session::config::PersistentSession;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::cookie::time::Duration;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;
use serde_json::json;
use sessile::SessionHandle;
use sessile::actix::{ActixStore, HANDLE_KEY, USER_KEY};

const VISITS: &str = "visits";

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => report(&*e),
    }
}

async fn run() -> Result<(), Box<dyn Error + Send + Sync>> {
    let data = PathBuf::from(std::env::var_os("SESSILE_DATA").unwrap_or("./sessile-data".into()));
    let addr = std::env::var("SESSILE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());

    let folder = data.clone();
    let (store, key) = web::block(move || {
        let key = cookie_key(&folder)?;
        let store = sessile::Config::new(folder.join("sessions")).open()?;
        Ok::<_, Box<dyn Error + Send + Sync>>((store, key))
    })
    .await??;
    let store = ActixStore::new(store);

    let for_app = store.clone();
    let server = HttpServer::new(move || {
        let sessions = SessionMiddleware::builder(for_app.clone(), key.clone())
            .session_lifecycle(PersistentSession::default().session_ttl(Duration::minutes(30)))
            .build();
        App::new()
            .app_data(web::Data::new(for_app.clone()))
            .wrap(sessions)
            .route("/", web::get().to(index))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/devices", web::get().to(devices))
            .route("/logout-others", web::post().to(logout_others))
    })
    .workers(2)
    .bind(&addr)?;
    // Before the banner: a SIGUSR1 sent as soon as it appears must find the handler.
    backups_on_signal(store.store().clone(), &data);
    for a in server.addrs() {
        println!("listening on http://{a}");
    }
    server.run().await?;
    println!("shutting down");
    store.flush().await?;
    println!(
        "stopped; sessions flushed to {}",
        store.store().path().display()
    );
    Ok(())
}

/// `GET /`: counts this session's visits.
async fn index(session: Session) -> actix_web::Result<HttpResponse> {
    let visits = session.get::<u64>(VISITS)?.unwrap_or(0) + 1;
    session.insert(VISITS, visits)?;
    let user = session.get::<String>(USER_KEY)?;
    Ok(HttpResponse::Ok().json(json!({ "user": user, "visits": visits })))
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

/// `POST /login`: a fresh session key (against session fixation), then the user.
async fn login(session: Session, form: web::Form<Login>) -> actix_web::Result<HttpResponse> {
    let user = form.user.trim();
    if user.is_empty() || user.len() > sessile::MAX_USER_LEN {
        let error = json!({ "error": "the form field `user` must hold 1 to 1024 bytes" });
        return Ok(HttpResponse::BadRequest().json(error));
    }
    session.renew();
    session.insert(USER_KEY, user)?;
    let visits = session.get::<u64>(VISITS)?.unwrap_or(0);
    Ok(HttpResponse::Ok().json(json!({ "user": user, "visits": visits })))
}

/// `POST /logout`: `purge` deletes the record and the cookie.
async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().json(json!({ "user": null, "logged_out": true }))
}

/// `GET /devices`: the logged-in user's sessions, by handle (never by cookie value).
async fn devices(
    store: web::Data<ActixStore>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let Some(user) = session.get::<String>(USER_KEY)? else {
        return Ok(not_logged_in());
    };
    let current = current_handle(&session)?;
    let list: Vec<_> = store
        .sessions_of(&user)
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?
        .into_iter()
        .map(|s| {
            json!({
                "handle": s.handle.to_string(),
                "current": Some(s.handle) == current,
                "created_at": unix_seconds(s.created_at),
                "last_seen": unix_seconds(s.last_seen),
                "expires_at": unix_seconds(s.expires_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "user": user, "devices": list })))
}

/// `POST /logout-others`: destroys every session of the user but this one.
async fn logout_others(
    store: web::Data<ActixStore>,
    session: Session,
) -> actix_web::Result<HttpResponse> {
    let Some(user) = session.get::<String>(USER_KEY)? else {
        return Ok(not_logged_in());
    };
    let Some(current) = current_handle(&session)? else {
        // A session saved in this very request has no handle yet: nothing to keep.
        let error = json!({ "error": "session not stored yet; retry" });
        return Ok(HttpResponse::Conflict().json(error));
    };
    let destroyed = store
        .destroy_user(&user, Some(current))
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    Ok(HttpResponse::Ok().json(json!({ "user": user, "destroyed": destroyed })))
}

/// This session's handle, which the adapter puts under `HANDLE_KEY` on load.
fn current_handle(session: &Session) -> actix_web::Result<Option<SessionHandle>> {
    Ok(session
        .get::<String>(HANDLE_KEY)?
        .and_then(|h| h.parse().ok()))
}

fn not_logged_in() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "error": "not logged in" }))
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The cookie-signing key, kept in the data folder (see [`process::cookie_key_bytes`]).
fn cookie_key(data: &Path) -> Result<Key, Box<dyn Error + Send + Sync>> {
    let bytes = process::cookie_key_bytes(data)?;
    Ok(Key::try_from(bytes.as_slice()).map_err(|e| format!("the cookie key: {e}"))?)
}
