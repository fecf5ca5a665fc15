//! What every example server process does, whatever its framework (the rest of `common`
//! is written for axum): the cookie key that survives restarts, the online backup on a
//! signal, and errors reported as sentences.

use std::error::Error;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// The bytes of the cookie-signing key: from `SESSILE_COOKIE_KEY` (base64), else from
/// `<data>/cookie-key`, created (mode 0600) on first start. It must outlive restarts, or
/// every cookie dies with the server.
pub fn cookie_key_bytes(data: &Path) -> Result<Vec<u8>, Box<dyn Error + Send + Sync>> {
    use base64::Engine as _;
    if let Ok(text) = std::env::var("SESSILE_COOKIE_KEY") {
        return Ok(base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("SESSILE_COOKIE_KEY is not base64: {e}"))?);
    }
    let at = |what: &str, path: &Path, e: std::io::Error| {
        format!("cannot {what} {}: {e}", path.display())
    };
    let mut folder = std::fs::DirBuilder::new();
    folder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut folder, 0o700);
    folder
        .create(data)
        .map_err(|e| at("create the data folder", data, e))?;
    let path = data.join("cookie-key");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::TryRng as _;
            let mut bytes = [0u8; 64];
            rand::rngs::SysRng.try_fill_bytes(&mut bytes).map_err(|e| {
                format!("the operating system's random number generator failed: {e}")
            })?;
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
            let write = |file: &mut std::fs::File| {
                file.write_all(&bytes)?;
                file.sync_all()
            };
            let mut opened = file.open(&path).map_err(|e| at("create", &path, e))?;
            write(&mut opened).map_err(|e| at("write", &path, e))?;
            Ok(bytes.to_vec())
        }
        Err(e) => Err(at("read", &path, e).into()),
    }
}

/// Prints `e` and its causes as one line on standard error (not Rust's debug form) and
/// returns the failure exit code.
pub fn report(e: &(dyn Error + 'static)) -> ExitCode {
    let mut line = format!("error: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
        source = cause.source();
    }
    eprintln!("{line}");
    ExitCode::FAILURE
}

/// The online backup: on every SIGUSR1 (`kill -USR1 <pid>`), writes every session to
/// `<data>/backup-<unix ms>.jsonl` while the server keeps serving (`Store::export_to`, on
/// the blocking pool), and prints where. `sessile import NEW_DIR FILE` restores it.
pub fn backups_on_signal(store: sessile::Store, data: &Path) {
    #[cfg(unix)]
    {
        let data = data.to_path_buf();
        let mut signal =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(signal) => signal,
                Err(e) => {
                    eprintln!("cannot listen for SIGUSR1, so no backups on request: {e}");
                    return;
                }
            };
        tokio::spawn(async move {
            while signal.recv().await.is_some() {
                let ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let file = data.join(format!("backup-{ms}.jsonl"));
                let (store, target) = (store.clone(), file.clone());
                match tokio::task::spawn_blocking(move || store.export_to(&target)).await {
                    Ok(Ok(n)) => println!("backup: {n} sessions written to {}", file.display()),
                    Ok(Err(e)) => eprintln!("backup to {} failed: {e}", file.display()),
                    Err(e) => eprintln!("backup to {} failed: {e}", file.display()),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (store, data);
}
