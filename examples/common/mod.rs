//! What the example servers share: the cookie key that survives restarts, graceful
//! shutdown, and error answers.
#![allow(dead_code, reason = "each example uses what it needs")]

use std::error::Error;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tower_sessions::cookie::Key;

mod process;
pub use process::{backups_on_signal, report};

/// Opens the store and the cookie key, on the blocking pool (they read the disk or the
/// network). The store is in `<data>/sessions`, or on the Redis server at
/// `SESSILE_REDIS_URL` (key namespace `SESSILE_REDIS_NAMESPACE`, default `sessile`) if
/// that is set: then any number of these servers share their sessions (give them the same
/// cookie key too).
pub async fn open(data: &Path) -> Result<(sessile::Store, Key), Box<dyn Error + Send + Sync>> {
    let folder = data.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let key = cookie_key(&folder)?;
        let store = store_config(&folder)?.open()?;
        Ok((store, key))
    })
    .await?
}

/// The store's settings: `<data>/sessions`, or `SESSILE_REDIS_URL`.
fn store_config(data: &Path) -> Result<sessile::Config, Box<dyn Error + Send + Sync>> {
    let Ok(url) = std::env::var("SESSILE_REDIS_URL") else {
        return Ok(sessile::Config::new(data.join("sessions")));
    };
    #[cfg(feature = "redis")]
    {
        let namespace =
            std::env::var("SESSILE_REDIS_NAMESPACE").unwrap_or_else(|_| "sessile".into());
        Ok(sessile::Config::redis(url).redis_namespace(namespace))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Err("SESSILE_REDIS_URL is set: build with `--features redis`".into())
    }
}

/// Serves `app` on `addr` until Ctrl-C or SIGTERM, then flushes `store` (off the
/// executor) so a write right before the signal survives the restart.
pub async fn serve(
    addr: &str,
    app: Router,
    store: &sessile::tower::TowerStore,
    data: &Path,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // Before the banner: a SIGUSR1 sent as soon as it appears must find the handler.
    backups_on_signal(store.store().clone(), data);
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    store.flush().await?;
    println!(
        "stopped; sessions flushed to {}",
        store.store().path().display()
    );
    Ok(())
}

/// A "your devices" list: each session of the user by handle (never by cookie value),
/// `current` marking the one making the request.
pub fn devices_json(
    sessions: Vec<sessile::SessionInfo>,
    current: Option<sessile::SessionHandle>,
) -> Vec<serde_json::Value> {
    sessions
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
        .collect()
}

/// Seconds since the Unix epoch, for JSON answers.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The cookie-signing key (see [`process::cookie_key_bytes`]).
pub fn cookie_key(data: &Path) -> Result<Key, Box<dyn Error + Send + Sync>> {
    let bytes = process::cookie_key_bytes(data)?;
    Ok(Key::try_from(bytes.as_slice()).map_err(|e| format!("the cookie key: {e}"))?)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                eprintln!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    println!("shutting down");
}

/// Any failure in a handler: logged, answered with a 500 that says nothing more.
pub struct AppError(Box<dyn Error + Send + Sync>);

impl<E: Into<Box<dyn Error + Send + Sync>>> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        eprintln!("request failed: {}", self.0);
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": "internal error" })),
        )
            .into_response()
    }
}
