//! Connections to the server: the client for a URL (TLS on rustls), the primary found
//! through Sentinel, a Redis Cluster, and the pool's checks that a connection handed to
//! a request still reaches a primary that answers.

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
    /// The namespace's hash tag: on a Cluster, the check of an idle connection asks the
    /// node that holds it.
    tag: String,
}

enum Nodes {
    /// The server of the URL.
    Direct(redis::Client),
    /// A Redis Cluster: one connection per node, commands routed by key slot.
    Cluster(redis::cluster::ClusterClient),
    /// Whatever primary the Sentinels name at the moment of connecting.
    Sentinel {
        sentinels: Vec<redis::Client>,
        master: String,
        /// The first URL's settings (scheme, TLS, user, password, database), given the
        /// primary's address at each connect.
        template: redis::ConnectionInfo,
    },
}

/// A connection to one server, or to every node of a Cluster.
enum Link {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Link {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> redis::RedisResult<()> {
        match self {
            Link::Single(c) => c.set_read_timeout(timeout),
            Link::Cluster(c) => c.set_read_timeout(timeout),
        }
    }

    fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Link::Single(c) => c,
            Link::Cluster(c) => &mut **c,
        }
    }
}

/// A connection and when it was last given back to the pool.
pub(super) struct Tracked {
    conn: Link,
    returned: Instant,
    /// An answer said this server is no longer a primary (`READONLY`, after a
    /// failover demoted it): the pool drops the connection when it comes back.
    demoted: bool,
}

impl Tracked {
    /// Runs `cmd`, a command that names no key, on the server that holds the keys whose
    /// hash tag is `tag` (on a single server, that server): `SCAN`, `INFO`, `WAIT`.
    pub(super) fn on_node_of<T: redis::FromRedisValue>(
        &mut self,
        tag: &str,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let answer = match &mut self.conn {
            Link::Single(c) => cmd.query(c),
            Link::Cluster(c) => c.route_command(
                cmd,
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                    tag,
                    SlotAddr::Master,
                ))),
            ),
        };
        if let Err(e) = &answer {
            self.note(e);
        }
        Ok(redis::from_redis_value(answer?)?)
    }

    /// Sends `commands` as one pipeline (on a Cluster, one per node) and returns their
    /// answers in order.
    pub(super) fn pipeline<T: redis::FromRedisValue>(
        &mut self,
        commands: Vec<redis::Cmd>,
    ) -> redis::RedisResult<T> {
        let answer = match &mut self.conn {
            Link::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in commands {
                    pipe.add_command(cmd);
                }
                pipe.query(c)
            }
            Link::Cluster(c) => {
                let mut pipe = redis::cluster::cluster_pipe();
                for cmd in commands {
                    pipe.add_command(cmd);
                }
                pipe.query(c)
            }
        };
        if let Err(e) = &answer {
            self.note(e);
        }
        answer
    }

    /// Marks the connection for the pool to drop if `e` says the server is no longer a
    /// primary that takes writes: `READONLY` (demoted by a failover) or `NOREPLICAS` (cut
    /// off from its replicas, with `min-replicas-to-write`): a new connection asks
    /// Sentinel again.
    fn note(&mut self, e: &redis::RedisError) {
        let text = e.to_string();
        if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            || text.contains("READONLY")
            || text.contains("NOREPLICAS")
        {
            self.demoted = true;
        }
    }
}

impl ConnectionLike for Tracked {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        let answer = self.conn.as_dyn().req_packed_command(cmd);
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
        let answer = self.conn.as_dyn().req_packed_commands(cmd, offset, count);
        if let Err(e) = &answer {
            self.note(e);
        }
        answer
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        // A Cluster connection routes by the command's keys, so it needs the command,
        // not its bytes.
        let answer = self.conn.as_dyn().req_command(cmd);
        if let Err(e) = &answer {
            self.note(e);
        }
        answer
    }

    fn get_db(&self) -> i64 {
        match &self.conn {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        self.conn.as_dyn().check_connection()
    }

    fn is_open(&self) -> bool {
        match &self.conn {
            Link::Single(c) => c.is_open(),
            Link::Cluster(c) => c.is_open(),
        }
    }
}

/// The multiplexed connection the async adapters await on a single server (see
/// [`RedisBackend::get_async`](super::RedisBackend::get_async)): one connection, many
/// requests in flight, made on first use inside a multi-thread tokio runtime, and made
/// again for another runtime (its driver task lives on the runtime that made it). Not for
/// Sentinel or Cluster, nor on a current-thread runtime (actix's workers, a test's
/// `block_on`), whose calls take the pooled path.
#[cfg(any(feature = "tower", feature = "tower-014"))]
pub(super) struct Multiplexed {
    client: Option<redis::Client>,
    state: parking_lot::Mutex<MultiplexedState>,
}

/// The multiplexed connection and what became of the last attempt to make one.
#[cfg(any(feature = "tower", feature = "tower-014"))]
#[derive(Default)]
struct MultiplexedState {
    conn: Option<(tokio::runtime::Id, redis::aio::ConnectionManager)>,
    /// One attempt at a time: the others take the pooled path meanwhile.
    making: bool,
    /// When the last attempt failed: no other is made for [`RETRY_AFTER`].
    failed: Option<Instant>,
}

/// How long after a failed attempt to make the multiplexed connection the next is made.
#[cfg(any(feature = "tower", feature = "tower-014"))]
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[cfg(any(feature = "tower", feature = "tower-014"))]
impl Multiplexed {
    pub(super) fn new(target: &RedisTarget) -> Result<Multiplexed> {
        let client = match (&target.sentinel, &target.cluster) {
            (None, None) => Some(client(target, &target.url)?),
            _ => None,
        };
        Ok(Multiplexed {
            client,
            state: parking_lot::Mutex::new(MultiplexedState::default()),
        })
    }

    /// The connection for the current runtime, made now if there is none; `None` outside
    /// a multi-thread tokio runtime, for Sentinel and Cluster, while another task makes
    /// it, or for a second after an attempt failed (the pooled path then reports why).
    pub(super) async fn get(&self) -> Option<redis::aio::ConnectionManager> {
        let client = self.client.as_ref()?;
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return None;
        }
        {
            let mut state = self.state.lock();
            match &state.conn {
                Some((id, conn)) if *id == runtime.id() => return Some(conn.clone()),
                _ => {}
            }
            if state.making || state.failed.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
                return None;
            }
            state.making = true;
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_number_of_retries(1);
        // Made on a task of its own: a runtime without the I/O or time driver panics
        // there, and that panic is caught here instead of reaching the caller.
        let made = runtime
            .spawn(redis::aio::ConnectionManager::new_with_config(
                client.clone(),
                config,
            ))
            .await;
        let mut state = self.state.lock();
        state.making = false;
        match made {
            Ok(Ok(conn)) => {
                state.conn = Some((runtime.id(), conn.clone()));
                state.failed = None;
                Some(conn)
            }
            _ => {
                state.failed = Some(Instant::now());
                None
            }
        }
    }

    /// After `e` on the connection: if the connection itself failed (not a server's
    /// answer), it is dropped and the next call makes a new one.
    pub(super) fn failed(&self, e: &redis::RedisError) {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            self.state.lock().conn = None;
        }
    }
}

impl Connector {
    /// The connector for `target`: its URL, or its Sentinels.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a URL the client refuses or a PEM file that cannot be
    /// read.
    pub(super) fn new(target: &RedisTarget, tag: &str) -> Result<Connector> {
        let nodes = match (&target.sentinel, &target.cluster) {
            (_, Some(seeds)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                // Few, quick retries: enough to follow a MOVED or ASK; more would hold a
                // call far past the timeouts, and send a script again after a lost reply.
                let mut builder = redis::cluster::ClusterClient::builder(seeds.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(IO_TIMEOUT)
                    .retries(1)
                    .min_retry_wait(10)
                    .max_retry_wait(100);
                if let Some(certificates) = certificates(target)? {
                    builder = builder.certs(certificates);
                }
                Nodes::Cluster(builder.build().map_err(|e| Error::InvalidConfig {
                    setting: "redis_cluster",
                    reason: format!("{}: {e}", redact(&target.url)),
                })?)
            }
            (None, None) => Nodes::Direct(client(target, &target.url)?),
            (Some(SentinelTarget { urls, master, auth }), None) => {
                let mut template = client(target, &target.url)?.get_connection_info().clone();
                if let Some((user, password)) = auth {
                    let mut settings = template.redis_settings().clone().set_password(password);
                    if let Some(user) = user {
                        settings = settings.set_username(user);
                    }
                    template = template.set_redis_settings(settings);
                }
                let sentinels = urls
                    .iter()
                    .map(|url| {
                        // A Sentinel has no databases: never SELECT one.
                        let info = client(target, url)?.get_connection_info().clone();
                        let settings = info.redis_settings().clone().set_db(0);
                        redis::Client::open(info.set_redis_settings(settings)).map_err(|e| {
                            Error::InvalidConfig {
                                setting: "redis_sentinel",
                                reason: format!("{}: {e}", redact(url)),
                            }
                        })
                    })
                    .collect::<Result<_>>()?;
                Nodes::Sentinel {
                    sentinels,
                    master: master.clone(),
                    template,
                }
            }
        };
        Ok(Connector {
            nodes,
            tag: tag.to_owned(),
        })
    }

    /// A connection to the primary: each Sentinel in turn is asked where it is, and the
    /// first address that answers as a primary (`ROLE`) is taken; a Sentinel that is
    /// down, or names a server that is not (or no longer) the primary, is passed over.
    fn primary(
        sentinels: &[redis::Client],
        master: &str,
        template: &redis::ConnectionInfo,
    ) -> redis::RedisResult<redis::Connection> {
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
            let reached = match asked {
                Ok(Some((host, port))) => Self::reach(template, host, port),
                Ok(None) => Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "the Sentinel does not know this primary name",
                    master.to_string(),
                ))),
                Err(e) => Err(e),
            };
            match reached {
                Ok(conn) => return Ok(conn),
                Err(e) => failure = Some(e),
            }
        }
        Err(failure
            .unwrap_or_else(|| (redis::ErrorKind::InvalidClientConfig, "no Sentinel URL").into()))
    }

    /// A connection to `host:port` with `template`'s settings, if that server is a
    /// primary.
    fn reach(
        template: &redis::ConnectionInfo,
        host: String,
        port: u16,
    ) -> redis::RedisResult<redis::Connection> {
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
        let client = redis::Client::open(template.clone().set_addr(addr))?;
        let mut conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        conn.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        if !is_primary(&mut conn)? {
            return Err(not_primary());
        }
        Ok(conn)
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
            Nodes::Cluster(client) => {
                let conn = client.get_connection()?;
                conn.set_write_timeout(Some(IO_TIMEOUT))?;
                return Ok(Tracked {
                    conn: Link::Cluster(Box::new(conn)),
                    returned: Instant::now(),
                    demoted: false,
                });
            }
            Nodes::Sentinel {
                sentinels,
                master,
                template,
            } => Connector::primary(sentinels, master, template)?,
        };
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Tracked {
            conn: Link::Single(conn),
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
        let checked = match (&self.nodes, &mut t.conn) {
            (Nodes::Sentinel { .. }, Link::Single(conn)) => match is_primary(conn) {
                Ok(true) => Ok(()),
                Ok(false) => Err(not_primary()),
                Err(e) => Err(e),
            },
            // The namespace's node only: another shard's trouble is not this store's.
            (Nodes::Cluster(_), _) => t.on_node_of::<()>(&self.tag, &redis::cmd("PING")),
            (_, conn) => redis::cmd("PING").query::<()>(conn.as_dyn()),
        };
        t.conn.set_read_timeout(Some(IO_TIMEOUT))?;
        checked
    }

    /// Run when a connection is given back.
    fn has_broken(&self, t: &mut Tracked) -> bool {
        t.returned = Instant::now();
        t.demoted || !t.is_open()
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
    let invalid = |reason: String| Error::InvalidConfig {
        setting: "redis",
        reason,
    };
    let tls_url = url.starts_with("rediss://") || url.starts_with("valkeys://");
    match certificates(target)? {
        Some(_) if !tls_url => Err(Error::InvalidConfig {
            setting: "redis_tls_root_ca",
            reason: format!("TLS settings need a rediss:// URL, not {}", redact(url)),
        }),
        Some(certificates) => redis::Client::build_with_tls(url, certificates)
            .map_err(|e| invalid(format!("{}: {e}", redact(url)))),
        None => {
            if tls_url {
                // rustls with ring, chosen once for the process (a provider installed
                // before, by the application, stays).
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            redis::Client::open(url)
                .map_err(|e| invalid(format!("{} is not a Redis URL: {e}", redact(url))))
        }
    }
}

/// The CA and client certificate `target` names, read from their PEM files; `None` if
/// it names neither (the platform's roots, no client certificate).
///
/// # Errors
///
/// [`Error::InvalidConfig`] for a PEM file that cannot be read.
fn certificates(target: &RedisTarget) -> Result<Option<redis::TlsCertificates>> {
    if target.tls_root_ca.is_none() && target.tls_client_auth.is_none() {
        return Ok(None);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |setting: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::InvalidConfig {
            setting,
            reason: format!("cannot read {}: {e}", path.display()),
        })
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
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}
