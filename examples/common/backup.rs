//! The example servers' online backup, on a signal. Shared by the axum and the actix-web
//! examples (which cannot share the rest of `common`, written for axum).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

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
