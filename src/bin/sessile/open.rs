//! Opening a store the way an operator needs it: no purge thread, no store created by
//! accident, and errors that say what to do. A store is a folder, or a Redis URL
//! (`redis://host:port/db`, and the other schemes the client takes: `rediss://`,
//! `redis+unix://`, `unix://`, `valkey://` ...), with the key namespace taken
//! from `SESSILE_REDIS_NAMESPACE` (default `sessile`), as the server's `Config` has it.
//! With `SESSILE_REDIS_CLUSTER=1` the URL is one node of a Redis Cluster
//! (`Config::redis_cluster`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sessile::{Config, Error, Store};

use crate::exit::{self, CliError};

/// The largest record sessile accepts whatever a server configured (4 MiB), so an import
/// never refuses a session its server stored.
pub const LARGEST_RECORD: usize = 4 << 20;

/// Whether the folder must already hold a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// Inspection and maintenance: the folder must exist and hold a store.
    Existing,
    /// `import`: create the folder if it is missing.
    CreateIfMissing,
}

/// The settings every command opens a store with.
///
/// - No purge thread: looking at a store never purges it behind the operator's back.
/// - A session counts as live while its stored expiry is in the future. The server wrote
///   that expiry from its own timeouts, which this tool does not know; sessile's defaults
///   (30 minutes idle, 12 hours absolute) would otherwise make sessions of a server with
///   longer timeouts look expired, and `revoke --user` would leave them alive. The
///   longest timeouts and ceilings a store accepts are at least as long as any server's,
///   so sessions with their own lifetimes are judged by their stored expiry too.
pub fn config(dir: &Path) -> Config {
    let base = match redis_url(dir) {
        Some(url) if cluster() => tls(Config::redis_cluster([url]).redis_namespace(namespace())),
        Some(url) => tls(Config::redis(url).redis_namespace(namespace())),
        None => Config::new(dir),
    };
    base.purge_thread(false)
        .idle_timeout(sessile::MAX_TIMEOUT)
        .max_idle_timeout(sessile::MAX_TIMEOUT)
        .max_absolute_timeout(sessile::MAX_TIMEOUT)
        .no_absolute_timeout()
        .max_record_size(LARGEST_RECORD)
}

/// Opens the store in `dir` with [`config`] changed by `tweak`.
pub fn open(
    dir: &Path,
    folder: Folder,
    tweak: impl FnOnce(Config) -> Config,
) -> Result<Store, CliError> {
    match redis_url(dir) {
        Some(url) => check_namespace(url, folder)?,
        None => check_folder(dir, folder)?,
    }
    tweak(config(dir)).open().map_err(|e| open_error(e, dir))
}

/// `dir` as it may be printed: a folder as it is, a Redis URL without its password.
pub fn shown(dir: &Path) -> String {
    config(dir).path().display().to_string()
}

/// The store a command names: a folder or a Redis URL as given, or for `-` the Redis URL
/// in `SESSILE_REDIS_URL`, so a password never shows in the process list.
///
/// # Errors
///
/// `-` without `SESSILE_REDIS_URL`, or with a value that is not a Redis URL.
pub fn store_arg(arg: &str) -> Result<std::path::PathBuf, String> {
    if arg != "-" {
        return Ok(arg.into());
    }
    let url = std::env::var("SESSILE_REDIS_URL")
        .map_err(|_| "`-` names the Redis URL in SESSILE_REDIS_URL, which is not set".to_owned())?;
    let url = std::path::PathBuf::from(url);
    if redis_url(&url).is_none() {
        return Err("SESSILE_REDIS_URL is not a Redis URL (redis://, rediss://, ...)".to_owned());
    }
    Ok(url)
}

/// The Redis URL `dir` is, if it is one rather than a folder.
pub fn redis_url(dir: &Path) -> Option<&str> {
    let s = dir.to_str()?;
    // Every scheme the redis client accepts.
    [
        "redis://",
        "rediss://",
        "redis+unix://",
        "valkey://",
        "valkeys://",
        "valkey+unix://",
        "unix://",
    ]
    .iter()
    .any(|scheme| s.starts_with(scheme))
    .then_some(s)
}

/// TLS settings from the environment, for `rediss://` URLs: `SESSILE_REDIS_CA` (a PEM CA
/// file, instead of the platform's roots), `SESSILE_REDIS_CLIENT_CERT` and
/// `SESSILE_REDIS_CLIENT_KEY` (PEM files, mutual TLS; both or neither).
fn tls(mut config: Config) -> Config {
    if let Some(ca) = std::env::var_os("SESSILE_REDIS_CA") {
        config = config.redis_tls_root_ca(ca);
    }
    if let (Some(cert), Some(key)) = (
        std::env::var_os("SESSILE_REDIS_CLIENT_CERT"),
        std::env::var_os("SESSILE_REDIS_CLIENT_KEY"),
    ) {
        config = config.redis_tls_client_auth(cert, key);
    }
    config
}

/// A client for `url` with the TLS settings of [`tls`], for the one check made before
/// the store is opened.
fn client(url: &str) -> redis::RedisResult<redis::Client> {
    match certificates()? {
        None => redis::Client::open(url),
        Some(certificates) => redis::Client::build_with_tls(url, certificates),
    }
}

/// The certificates the TLS variables of [`tls`] name, read; `None` if none is set.
fn certificates() -> redis::RedisResult<Option<redis::TlsCertificates>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |var: &str| {
        std::env::var_os(var)
            .map(|path| {
                std::fs::read(&path).map_err(|e| {
                    redis::RedisError::from(std::io::Error::new(
                        e.kind(),
                        format!(
                            "{var}: cannot read {}: {e}",
                            std::path::Path::new(&path).display()
                        ),
                    ))
                })
            })
            .transpose()
    };
    let root_cert = read("SESSILE_REDIS_CA")?;
    let client_tls = match (
        read("SESSILE_REDIS_CLIENT_CERT")?,
        read("SESSILE_REDIS_CLIENT_KEY")?,
    ) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// Whether a Redis URL names a node of a Redis Cluster: `SESSILE_REDIS_CLUSTER=1`.
fn cluster() -> bool {
    std::env::var_os("SESSILE_REDIS_CLUSTER").is_some_and(|v| v == "1")
}

/// The key namespace of Redis stores: `SESSILE_REDIS_NAMESPACE`, default `sessile`.
pub fn namespace() -> String {
    std::env::var("SESSILE_REDIS_NAMESPACE").unwrap_or_else(|_| "sessile".into())
}

/// On Redis, a store exists once its format marker does: commands other than `import`
/// must not create one in a mistyped namespace or database.
fn check_namespace(url: &str, folder: Folder) -> Result<(), CliError> {
    if folder == Folder::CreateIfMissing {
        return Ok(());
    }
    // On a Cluster the namespace is the keys' hash tag.
    let marker = match cluster() {
        true => format!("{{{}}}:format", namespace()),
        false => format!("{}:format", namespace()),
    };
    let exists = if cluster() {
        let mut builder = redis::cluster::ClusterClient::builder([url])
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(5))
            .retries(1);
        match certificates() {
            Ok(Some(certificates)) => builder = builder.certs(certificates),
            Ok(None) => {}
            Err(e) => {
                return Err(CliError::failed(format!(
                    "cannot reach the Redis server: {e}"
                )));
            }
        }
        builder
            .build()
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("EXISTS").arg(&marker).query::<bool>(&mut c))
    } else {
        client(url)
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .and_then(|mut c| {
                c.set_read_timeout(Some(Duration::from_secs(5)))?;
                redis::cmd("EXISTS").arg(&marker).query::<bool>(&mut c)
            })
    }
    .map_err(|e| CliError::failed(format!("cannot reach the Redis server: {e}")))?;
    if exists {
        return Ok(());
    }
    Err(CliError::not_found(format!(
        "there is no session store on this Redis server in namespace {:?} (no {marker} key)",
        namespace()
    ))
    .hint("check the URL's database number and SESSILE_REDIS_NAMESPACE; this command never creates a store"))
}

fn check_folder(dir: &Path, folder: Folder) -> Result<(), CliError> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(CliError::failed(format!(
                "{shown} is a file, not a session store folder"
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match folder {
                Folder::CreateIfMissing => Ok(()),
                Folder::Existing => Err(CliError::not_found(format!(
                    "there is no session store at {shown}: the folder does not exist"
                ))
                .hint("check the path (the folder the server was configured with); this command never creates a store")),
            };
        }
        Err(e) => return Err(CliError::from(e).context(shown)),
    }
    // sled keeps its log in a file named `db` next to `conf`; a folder without it holds no
    // store yet, and opening it would make an empty one.
    if dir.join("db").is_file() {
        return Ok(());
    }
    let empty = std::fs::read_dir(dir)
        .map_err(|e| CliError::from(e).context(&shown))?
        .next()
        .is_none();
    match folder {
        Folder::CreateIfMissing if empty => Ok(()),
        Folder::CreateIfMissing => Err(CliError::failed(format!(
            "{shown} is not empty and holds no session store"
        ))
        .hint("import into a new or empty folder")),
        Folder::Existing => Err(CliError::not_found(format!(
            "there is no session store in {shown}: it has no sled database (no `db` file)"
        ))
        .hint("check the path (the folder the server was configured with); this command never creates a store")),
    }
}

fn open_error(e: Error, dir: &Path) -> CliError {
    let shown = shown(dir);
    match e {
        Error::Locked { .. } => CliError::with_code(
            exit::LOCKED,
            format!(
                "the session store at {shown} is open in another process, most likely a \
                 running server (sled locks the folder while it is open)"
            ),
        )
        .hint(
            "stop the server and run the command again, or work on a copy: have the running \
             server write a backup (`Store::export_to`; the example servers do on \
             `kill -USR1 <pid>`), then `sessile import NEW_DIR FILE` and point this command \
             at NEW_DIR",
        ),
        Error::UnsupportedFormat { .. } => CliError::from(e)
            .hint("use the sessile release that wrote this store, or a newer one".to_string()),
        other => CliError::from(other).context(format!("opening {shown}")),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}
