//! Connections to the server: the client for a URL (TLS on rustls), the primary found
//! through Sentinel, and the pool's checks that a connection handed to a request still
//! reaches a primary that answers.

use std::time::{Duration, Instant};

use redis::ConnectionLike;

use crate::config::{RedisTarget, SentinelTarget, redact};
use crate::error::{Error, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the check of an idle connection waits for its answer.
const PING_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a Sentinel may take to connect and to answer where the primary is.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);

/// A pooled connection idle longer than this is checked before it is used: a server
/// restart or failover closes idle connections without the client noticing, and a
/// request must not be the one to find out. One given back moments ago is used as it is,
/// so a busy store pays nothing.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Opens connections with timeouts, so a server that stops answering gives an error
/// instead of a hang.
pub(super) struct Connector {
    nodes: Nodes,
}

enum Nodes {
    /// The server of the URL.
    Direct(redis::Client),
    /// Whatever primary the Sentinels name at the moment of connecting.
    Sentinel {
        sentinels: Vec<redis::Client>,
        master: String,
        /// The first URL's settings (scheme, TLS, user, password, database), given the
        /// primary's address at each connect.
        template: redis::ConnectionInfo,
    },
}

/// A connection and when it was last given back to the pool.
pub(super) struct Tracked {
    conn: redis::Connection,
    returned: Instant,
    /// An answer said this server is no longer a primary (`READONLY`, after a
    /// failover demoted it): the pool drops the connection when it comes back.
    demoted: bool,
}

impl Tracked {
    fn note(&mut self, e: &redis::RedisError) {
        if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            || e.to_string().contains("READONLY")
        {
            self.demoted = true;
        }
    }
}

impl ConnectionLike for Tracked {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        let answer = self.conn.req_packed_command(cmd);
        if let Err(e) = &answer {
            self.note(e);
        }
        answer
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        let answer = self.conn.req_packed_commands(cmd, offset, count);
        if let Err(e) = &answer {
            self.note(e);
        }
        answer
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.conn.check_connection()
    }

    fn is_open(&self) -> bool {
        self.conn.is_open()
    }
}

impl Connector {
    /// The connector for `target`: its URL, or its Sentinels.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a URL the client refuses or a PEM file that cannot be
    /// read.
    pub(super) fn new(target: &RedisTarget) -> Result<Connector> {
        let nodes = match &target.sentinel {
            None => Nodes::Direct(client(target, &target.url)?),
            Some(SentinelTarget { urls, master }) => Nodes::Sentinel {
                sentinels: urls
                    .iter()
                    .map(|url| client(target, url))
                    .collect::<Result<_>>()?,
                master: master.clone(),
                template: client(target, &target.url)?.get_connection_info().clone(),
            },
        };
        Ok(Connector { nodes })
    }

    /// The primary's client, as the first Sentinel that answers names it.
    fn primary(
        sentinels: &[redis::Client],
        master: &str,
        template: &redis::ConnectionInfo,
    ) -> redis::RedisResult<redis::Client> {
        let mut failure = None;
        for sentinel in sentinels {
            let asked = sentinel
                .get_connection_with_timeout(SENTINEL_TIMEOUT)
                .and_then(|mut conn| {
                    conn.set_read_timeout(Some(SENTINEL_TIMEOUT))?;
                    conn.set_write_timeout(Some(SENTINEL_TIMEOUT))?;
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(master)
                        .query::<Option<(String, u16)>>(&mut conn)
                });
            match asked {
                Ok(Some((host, port))) => {
                    let mut addr = template.addr().clone();
                    match &mut addr {
                        redis::ConnectionAddr::Tcp(h, p)
                        | redis::ConnectionAddr::TcpTls {
                            host: h, port: p, ..
                        } => {
                            *h = host;
                            *p = port;
                        }
                        _ => {
                            return Err(redis::RedisError::from((
                                redis::ErrorKind::InvalidClientConfig,
                                "Sentinel URLs must be TCP addresses",
                            )));
                        }
                    }
                    return redis::Client::open(template.clone().set_addr(addr));
                }
                Ok(None) => {
                    failure = Some(redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "the Sentinel does not know this primary name",
                        master.to_string(),
                    )));
                }
                Err(e) => failure = Some(e),
            }
        }
        Err(failure
            .unwrap_or_else(|| (redis::ErrorKind::InvalidClientConfig, "no Sentinel URL").into()))
    }
}

/// Whether the server on `conn` is a primary (`ROLE`'s first element).
fn is_primary(conn: &mut redis::Connection) -> redis::RedisResult<bool> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(conn)?;
    Ok(matches!(
        role.first(),
        Some(redis::Value::BulkString(b)) if b.as_slice() == b"master"
    ) || matches!(role.first(), Some(redis::Value::SimpleString(s)) if s == "master"))
}

fn not_primary() -> redis::RedisError {
    (
        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
        "the server the Sentinels named is not a primary (a failover is under way)",
    )
        .into()
}

impl r2d2::ManageConnection for Connector {
    type Connection = Tracked;
    type Error = redis::RedisError;

    fn connect(&self) -> std::result::Result<Tracked, redis::RedisError> {
        let conn = match &self.nodes {
            Nodes::Direct(client) => client.get_connection_with_timeout(CONNECT_TIMEOUT)?,
            Nodes::Sentinel {
                sentinels,
                master,
                template,
            } => {
                let client = Connector::primary(sentinels, master, template)?;
                let mut conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
                conn.set_read_timeout(Some(CONNECT_TIMEOUT))?;
                if !is_primary(&mut conn)? {
                    return Err(not_primary());
                }
                conn
            }
        };
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Tracked {
            conn,
            returned: Instant::now(),
            demoted: false,
        })
    }

    /// Run when a connection is checked out: if it sat idle (see [`IDLE_CHECK`]), `PING`
    /// (through Sentinel, `ROLE`: the server must still be the primary), with a short
    /// timeout, so a host that vanished without a word costs a moment per connection, not
    /// the full I/O timeout.
    fn is_valid(&self, t: &mut Tracked) -> std::result::Result<(), redis::RedisError> {
        if t.returned.elapsed() < IDLE_CHECK {
            return Ok(());
        }
        t.conn.set_read_timeout(Some(PING_TIMEOUT))?;
        let checked = match self.nodes {
            Nodes::Direct(_) => redis::cmd("PING").query::<()>(&mut t.conn),
            Nodes::Sentinel { .. } => match is_primary(&mut t.conn) {
                Ok(true) => Ok(()),
                Ok(false) => Err(not_primary()),
                Err(e) => Err(e),
            },
        };
        t.conn.set_read_timeout(Some(IO_TIMEOUT))?;
        checked
    }

    /// Run when a connection is given back.
    fn has_broken(&self, t: &mut Tracked) -> bool {
        t.returned = Instant::now();
        t.demoted || !t.conn.is_open()
    }
}

/// The client for `url` with `target`'s TLS settings: TLS for `rediss://` (and
/// `valkeys://`) URLs, trusting the platform's roots or the CA file set, presenting a
/// client certificate if set.
///
/// # Errors
///
/// [`Error::InvalidConfig`] for a URL the client refuses or a PEM file that cannot be read.
fn client(target: &RedisTarget, url: &str) -> Result<redis::Client> {
    let invalid = |setting: &'static str, reason: String| Error::InvalidConfig { setting, reason };
    let tls = target.tls_root_ca.is_some() || target.tls_client_auth.is_some();
    let tls_url = url.starts_with("rediss://") || url.starts_with("valkeys://");
    if tls && !tls_url {
        return Err(invalid(
            "redis_tls_root_ca",
            format!("TLS settings need a rediss:// URL, not {}", redact(url)),
        ));
    }
    if !tls {
        if tls_url {
            // rustls with ring, chosen once for the process (a provider installed
            // before, by the application, stays).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        return redis::Client::open(url)
            .map_err(|e| invalid("redis", format!("{} is not a Redis URL: {e}", redact(url))));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |setting: &'static str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| invalid(setting, format!("cannot read {}: {e}", path.display())))
    };
    let root_cert = target
        .tls_root_ca
        .as_deref()
        .map(|p| read("redis_tls_root_ca", p))
        .transpose()?;
    let client_tls = target
        .tls_client_auth
        .as_ref()
        .map(|(cert, key)| {
            Ok::<_, Error>(redis::ClientTlsConfig {
                client_cert: read("redis_tls_client_auth", cert)?,
                client_key: read("redis_tls_client_auth", key)?,
            })
        })
        .transpose()?;
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| invalid("redis", format!("{}: {e}", redact(url))))
}
