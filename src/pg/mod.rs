//! The agent's one PostgreSQL connection and the discipline around it.
//!
//! - One connection, shared by every PostgreSQL check (a tokio-postgres `Client` pipelines
//!   concurrent queries), so the agent holds at most one backend.
//! - No startup `options` (default PgBouncer answers them with `08P01 unsupported startup
//!   parameter`, and one that ignores them drops the limits silently). The limits are set by
//!   the set-up statement below on a direct session, and through a pooler travel with every
//!   query: it is sent as one simple-protocol message `SET TRANSACTION READ ONLY; SET LOCAL
//!   statement_timeout = ..; SET LOCAL lock_timeout = ..; <query>`, which PostgreSQL runs as
//!   one implicit transaction (atomic, one round trip, nothing left open on error, the whole
//!   message on one server connection in every pool mode). The set-up statement itself always
//!   goes that way.
//! - Right after connecting, one statement tells whether the session is the server backend
//!   itself ("direct": `pg_backend_pid()` is the pid announced at startup, also through a plain
//!   TCP proxy) or a pooler's (PgBouncer announces a key of its own, [`sniff`]). On a direct
//!   session it also sets the session defaults
//!   again and the server-side liveness settings a role may set (`tcp_keepalives_*`, and on 14+
//!   `idle_session_timeout`, a few intervals long; `statement_timeout` bounds a statement), so a
//!   backend the agent abandoned in a network blip is reclaimed within [`Limits::liveness`]
//!   instead of the OS keepalive's two hours; and it terminates the agent's own previous backend
//!   (by pid *and* `backend_start`, same role, `application_name = rose-agent`: never another
//!   agent's session) when that one is still there. Through a pooler the session is shared, so
//!   nothing session-level is set and nothing is terminated.
//! - Connect (DNS + TCP + TLS + auth + that statement) bounded by the connect timeout; DNS is
//!   resolved by the agent so a name that does not resolve is told apart from a host that does
//!   not answer; every address of the name is tried in order, as libpq does (`localhost` ->
//!   `::1` then `127.0.0.1`, multi-A endpoints), a silent address getting only its share of the
//!   time left. TCP keepalives and `tcp_user_timeout` on the agent's socket.
//! - Never more than one connection attempt in flight; after a failure, capped jittered backoff.
//! - Every query bounded on the client side too; a timed-out or broken connection is dropped, and
//!   dropping it aborts the task that drives its socket.

pub(crate) mod batch;
pub(crate) mod sniff;
pub(crate) mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::dsn::{ChannelBinding, Dsn, Endpoint, Host, SslMode, TargetSessionAttrs};
use crate::error::{CheckError, ErrorKind};

/// The client-side bound on one query: the server-side limit (plus 10%) and the network's share,
/// measured as this connection's set-up time (several round trips: TCP, TLS, authentication),
/// at most the connect timeout. A distant database (400 ms round trip) is not "down" because
/// its answers travel; a near one keeps a bound of about the statement timeout.
pub(crate) fn query_deadline(limits: &Limits, connect_duration: Duration) -> Duration {
    limits.query_timeout + connect_duration.min(limits.connect_timeout)
}

/// The `application_name` every agent session carries (other checks filter on it, e.g.
/// `pg_connection_budget`, so it stays the same for every agent of a fleet).
pub(crate) const APPLICATION_NAME: &str = "rose-agent";

/// `idle_session_timeout` exists from PostgreSQL 14;
/// older servers get only the TCP keepalive settings.
pub(crate) const LIVENESS_SETTINGS_FROM: u32 = 140_000;

/// How soon the server must let go of a session the agent abandoned (a network blip, a killed
/// agent): four intervals, at least 10 s (short test intervals must not make the server drop a
/// healthy session that is merely between two cycles), at most 5 min.
pub(crate) fn liveness_for(interval: Duration) -> Duration {
    (interval * 4).clamp(Duration::from_secs(10), Duration::from_secs(300))
}

/// Session limits and backoff bounds.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Duration,
    pub(crate) lock_timeout: Duration,
    /// Client-side bound on one query.
    pub(crate) query_timeout: Duration,
    /// Longest wait between connection attempts; kept under one interval so recovery is seen
    /// within one interval of the fault ending.
    pub(crate) max_backoff: Duration,
    /// Bound on how long the server keeps a backend the agent abandoned ([`liveness_for`]).
    pub(crate) liveness: Duration,
}

impl Limits {
    /// The limits the configuration asks for.
    pub(crate) fn from_config(config: &crate::config::Config) -> Limits {
        Limits {
            connect_timeout: config.database.connect_timeout,
            statement_timeout: config.database.statement_timeout,
            lock_timeout: config.database.lock_timeout,
            query_timeout: config.database.query_timeout(),
            max_backoff: config.agent.interval.mul_f64(0.9),
            liveness: liveness_for(config.agent.interval),
        }
    }

    /// The server-side liveness settings of a direct session, as `(name, value)`; the last
    /// only from [`LIVENESS_SETTINGS_FROM`]. Keepalives: first probe after half the bound, then
    /// four probes an eighth apart, so a peer that vanished is found within the bound.
    ///
    /// Not `client_connection_check_interval`: it would end a statement whose client vanished
    /// before `statement_timeout` does, which bounds every statement of the agent anyway, and
    /// its timer wakes the idle backend once a cycle (0.1 ms of the server's CPU each time,
    /// about 6% of the agent's whole cost on the server, docs/performance.md).
    pub(crate) fn liveness_settings(&self) -> Vec<(&'static str, String)> {
        let secs = |d: Duration| d.as_secs().max(1).to_string();
        let ms = |d: Duration| d.as_millis().max(1).to_string();
        let l = self.liveness;
        vec![
            ("tcp_keepalives_idle", secs(l / 2)),
            ("tcp_keepalives_interval", secs(l / 8)),
            ("tcp_keepalives_count", "4".into()),
            ("idle_session_timeout", ms(l)),
        ]
    }
}

/// A server backend, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub(crate) pid: i32,
    pub(crate) start: String,
}

/// An open connection. Dropping the last handle aborts the socket task.
pub struct Conn {
    pub(crate) client: Client,
    task: JoinHandle<()>,
    pub(crate) generation: u64,
    pub(crate) connect_duration: Duration,
    /// The session is the server backend itself; false through a pooler such as PgBouncer,
    /// where session state (settings, session advisory locks) may be shared with other clients.
    pub direct: bool,
    /// The combined statements prepared on this session (direct sessions only, [`batch`]).
    pub(crate) prepared: batch::Prepared,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Slot {
    conn: Option<Arc<Conn>>,
    generation: u64,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<CheckError>,
    /// Completed connection attempts: a caller that waited on someone else's attempt shares
    /// its outcome instead of starting another.
    attempts: u64,
    /// The backend of the last direct session: terminated at the next connect if it lingers.
    last_backend: Option<Backend>,
}

type ConnectHook = Box<dyn Fn(bool) + Send + Sync>;

/// One monitored server.
pub struct PgTarget {
    dsn: Dsn,
    target: String,
    limits: Limits,
    slot: Mutex<Slot>,
    connecting: tokio::sync::Mutex<()>,
    on_connect: Option<ConnectHook>,
    /// Addresses to use instead of resolving the host name (tests of multi-address names).
    addresses: Option<Vec<IpAddr>>,
    /// Gathers the JSON statements of one cycle into one ([`batch`]).
    batch: batch::Batcher,
}

/// Connection attempts of the agent's PostgreSQL targets (`rose_agent_pg_connects_total`),
/// counted by the connect hook; kept across reloads. Cheap to share.
#[derive(Debug, Default)]
pub struct ConnectCounts {
    ok: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

impl ConnectCounts {
    /// Counts one attempt.
    pub(crate) fn record(&self, ok: bool) {
        let c = if ok { &self.ok } else { &self.failed };
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (succeeded, failed) so far.
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.ok.load(std::sync::atomic::Ordering::Relaxed),
            self.failed.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// What the set-up statement found out.
struct Session {
    direct: bool,
    backend: Backend,
    terminated: u32,
}

impl PgTarget {
    pub(crate) fn new(dsn: Dsn, limits: Limits) -> PgTarget {
        let target = dsn.target();
        if !dsn.ignored.is_empty() {
            // Names from the agent's own list only: never a value.
            // Service files, GSSAPI, encrypted keys and load balancing are not supported; keepalives,
            // timeouts and the application name are the agent's own.
            tracing::warn!(target_db = %target, parameters = %dsn.ignored.join(", "), "The DSN sets libpq parameters the agent does not use; they are ignored.");
        }
        PgTarget {
            dsn,
            target,
            limits,
            slot: Mutex::new(Slot {
                conn: None,
                generation: 0,
                failures: 0,
                retry_at: None,
                last_error: None,
                attempts: 0,
                last_backend: None,
            }),
            connecting: tokio::sync::Mutex::new(()),
            on_connect: None,
            addresses: None,
            batch: batch::Batcher::default(),
        }
    }

    /// Uses these addresses, in this order, instead of resolving the DSN's host name (which
    /// still names the server for TLS). For tests: a name with several addresses cannot be made
    /// up on a shared machine without editing /etc/hosts.
    #[doc(hidden)]
    pub fn with_addresses(mut self, addresses: Vec<IpAddr>) -> PgTarget {
        self.addresses = Some(addresses);
        self
    }

    /// Calls `hook(ok)` after every connection attempt (for the attempts counter).
    pub(crate) fn with_connect_hook(
        mut self,
        hook: impl Fn(bool) + Send + Sync + 'static,
    ) -> PgTarget {
        self.on_connect = Some(Box::new(hook));
        self
    }

    /// The sanitized `host:port/dbname`.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Span attributes of this server.
    pub(crate) fn check_target(&self) -> crate::catalog::otel::CheckTarget {
        let address = match &self.dsn.host {
            Host::Tcp(h) => h.clone(),
            Host::Socket(p) => p.display().to_string(),
        };
        crate::catalog::otel::CheckTarget::Postgres {
            namespace: self.dsn.dbname.clone(),
            address,
            port: self.dsn.port,
        }
    }

    pub(crate) fn dbname(&self) -> &str {
        &self.dsn.dbname
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// An open connection: the current one, or a new one if none is open and backoff allows.
    pub async fn conn(&self) -> Result<Arc<Conn>, CheckError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let seen = self.lock().attempts;
        let _attempt = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let previous = {
            let slot = self.lock();
            // An attempt finished (and failed) while this caller waited: share its outcome, so
            // callers queued behind a hanging server do not each wait out a connect timeout.
            if slot.attempts != seen
                && let Some(err) = &slot.last_error
            {
                return Err(err.clone());
            }
            if let (Some(at), Some(err)) = (slot.retry_at, &slot.last_error) {
                let now = Instant::now();
                if now < at {
                    let mut e = err.clone();
                    e.message = format!(
                        "{} (next attempt in {} ms)",
                        err.message,
                        (at - now).as_millis()
                    );
                    return Err(e);
                }
            }
            slot.last_backend.clone()
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(
            self.limits.connect_timeout,
            self.connect(previous.as_ref()),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(CheckError::new(
                ErrorKind::ConnectTimeout,
                format!(
                    "{}: no connection within AGENT_CONNECT_TIMEOUT ({} ms)",
                    self.target,
                    self.limits.connect_timeout.as_millis()
                ),
            )),
        };
        if let Some(hook) = &self.on_connect {
            hook(result.is_ok());
        }
        let mut slot = self.lock();
        slot.attempts += 1;
        match result {
            Ok((client, task, session)) => {
                slot.generation += 1;
                let conn = Arc::new(Conn {
                    client,
                    task,
                    generation: slot.generation,
                    connect_duration: started.elapsed(),
                    direct: session.direct,
                    prepared: batch::Prepared::default(),
                });
                slot.conn = Some(conn.clone());
                slot.failures = 0;
                slot.retry_at = None;
                slot.last_error = None;
                if session.direct {
                    slot.last_backend = Some(session.backend);
                }
                tracing::info!(target_db = %self.target, ms = started.elapsed().as_millis() as u64, direct = session.direct, "Connected to PostgreSQL.");
                if session.terminated > 0 {
                    tracing::info!(target_db = %self.target, pid = previous.as_ref().map(|b| b.pid), "Terminated this agent's previous session, which outlived its connection.");
                }
                if !session.direct {
                    // PostgreSQL does not see the agent's own socket: limits are set per transaction (holds in
                    // every pool mode), no session settings, no session advisory lock (it follows a
                    // directly connected leader when there is one, else runs the database-wide checks).
                    tracing::warn!(target_db = %self.target, "Connected through a connection pooler (PgBouncer?): limits per transaction, no leader election from this agent; point AGENT_DATABASE_URL at PostgreSQL itself for leader election.");
                }
                Ok(conn)
            }
            Err(e) => {
                slot.failures = slot.failures.saturating_add(1);
                let wait = backoff(slot.failures, self.limits.max_backoff);
                // Counted from the start of the attempt, not its end: an attempt that took the
                // whole connect timeout must not push the next one past the next tick, or
                // recovery would take two intervals instead of one.
                slot.retry_at = Some(started + wait);
                slot.last_error = Some(e.clone());
                let retry_ms = (started + wait)
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64;
                // The first failure of an outage is a warning; each retry after it is debug (the
                // metrics and findings carry every attempt), so an outage is not a WARN per retry.
                if slot.failures == 1 {
                    tracing::warn!(target_db = %self.target, kind = %e.kind, error = %e.message, retry_ms, "Connection to PostgreSQL failed.");
                } else {
                    tracing::debug!(target_db = %self.target, kind = %e.kind, error = %e.message, retry_ms, failures = slot.failures, "Connection to PostgreSQL still failing.");
                }
                Err(e)
            }
        }
    }

    /// Drops the connection of the given generation (after a timeout or a broken socket).
    pub fn invalidate(&self, generation: u64) {
        let mut slot = self.lock();
        if slot
            .conn
            .as_ref()
            .is_some_and(|c| c.generation == generation)
        {
            slot.conn = None;
        }
    }

    /// Runs a query under the agent's limits (the session's own on a direct session; through a
    /// pooler [`guarded`]: one round trip, one implicit read-only transaction with
    /// `statement_timeout` and `lock_timeout`), bounded on the client side too; drops the connection when the query times out or the socket broke.
    pub async fn simple_query(
        &self,
        conn: &Conn,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, CheckError> {
        exec(conn, &self.limits, &self.target, sql)
            .await
            .inspect_err(|e| {
                if needs_invalidate(conn, e) {
                    self.invalidate(conn.generation);
                }
            })
    }

    /// [`Self::simple_query`] under other limits for this one statement: the `SET LOCAL`s of
    /// [`guarded`] carry them on a direct session too.
    pub(crate) async fn simple_query_under(
        &self,
        conn: &Conn,
        limits: &Limits,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, CheckError> {
        let wrapped;
        let sql = if conn.direct {
            wrapped = guarded(limits, sql);
            wrapped.as_str()
        } else {
            sql
        };
        exec(conn, limits, &self.target, sql)
            .await
            .inspect_err(|e| {
                if needs_invalidate(conn, e) {
                    self.invalidate(conn.generation);
                }
            })
    }

    /// The cycle batcher of this target ([`batch`]).
    pub fn batch(&self) -> &batch::Batcher {
        &self.batch
    }

    /// The generation of the open connection, if one is open (no connection attempt).
    pub fn current_generation(&self) -> Option<u64> {
        self.current().map(|c| c.generation)
    }

    fn current(&self) -> Option<Arc<Conn>> {
        let mut slot = self.lock();
        match &slot.conn {
            Some(c) if !c.client.is_closed() => Some(c.clone()),
            Some(_) => {
                slot.conn = None;
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn base_config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.user(&self.dsn.user)
            .dbname(&self.dsn.dbname)
            .port(self.dsn.port)
            .application_name(APPLICATION_NAME)
            .connect_timeout(self.limits.connect_timeout);
        if let Some(p) = self.dsn.password() {
            cfg.password(p);
        }
        cfg.channel_binding(match self.dsn.channel_binding {
            ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
            ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
            ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
        });
        cfg.ssl_mode(match self.dsn.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        cfg
    }

    async fn connect(
        &self,
        previous: Option<&Backend>,
    ) -> Result<(Client, JoinHandle<()>, Session), CheckError> {
        let (client, task, announced) = self.connect_any().await?;
        let sql = guarded(&self.limits, &setup_sql(&self.limits, announced, previous));
        let msgs = match client.simple_query(&sql).await {
            Ok(m) => m,
            Err(e) => {
                task.abort();
                return Err(CheckError::from_pg(&e, &self.target));
            }
        };
        match parse_setup(&rows(msgs)) {
            Some(session) => Ok((client, task, session)),
            None => {
                task.abort();
                Err(CheckError::new(
                    ErrorKind::Protocol,
                    format!("{}: the session set-up returned no row", self.target),
                ))
            }
        }
    }

    /// Tries the DSN's hosts in order, as libpq does, until one gives a session that
    /// `target_session_attrs` accepts (`prefer-standby`: a standby on a first pass, any on a
    /// second). Each host gets its share of the time left, as each address of a host does.
    async fn connect_any(&self) -> Result<(Client, JoinHandle<()>, Option<i32>), CheckError> {
        let endpoints = self.dsn.endpoints();
        let many = endpoints.len() > 1;
        let deadline = Instant::now() + self.limits.connect_timeout;
        let passes: &[TargetSessionAttrs] = match self.dsn.target_session_attrs {
            TargetSessionAttrs::PreferStandby => {
                &[TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
            }
            TargetSessionAttrs::Any => &[TargetSessionAttrs::Any],
            TargetSessionAttrs::ReadWrite => &[TargetSessionAttrs::ReadWrite],
            TargetSessionAttrs::ReadOnly => &[TargetSessionAttrs::ReadOnly],
            TargetSessionAttrs::Primary => &[TargetSessionAttrs::Primary],
            TargetSessionAttrs::Standby => &[TargetSessionAttrs::Standby],
        };
        let mut plan: Vec<(TargetSessionAttrs, &Endpoint)> = Vec::new();
        for want in passes {
            for ep in &endpoints {
                plan.push((*want, ep));
            }
        }
        let tries = plan.len();
        let mut errors: Vec<CheckError> = Vec::new();
        for (n, (want, ep)) in plan.into_iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let share = left / (tries - n) as u32;
            let label = if many {
                format!("{}/{}", ep.host_port(), self.dsn.dbname)
            } else {
                self.target.clone()
            };
            let attempt = async {
                let (client, task, announced) = self.connect_endpoint(ep, &label, share).await?;
                if let Err(e) = session_attrs_match(&client, want, &label).await {
                    task.abort();
                    return Err(e);
                }
                Ok((client, task, announced))
            };
            match tokio::time::timeout(share, attempt).await {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(CheckError::new(
                    ErrorKind::ConnectTimeout,
                    format!("{label}: no session within {} ms", share.as_millis()),
                )),
            }
        }
        Err(pick_error(errors, &self.target))
    }

    /// One host: its Unix socket, or each of its addresses in turn.
    async fn connect_endpoint(
        &self,
        ep: &Endpoint,
        label: &str,
        budget: Duration,
    ) -> Result<(Client, JoinHandle<()>, Option<i32>), CheckError> {
        let name = match (&ep.host, ep.hostaddr) {
            (Host::Tcp(name), _) => name.clone(),
            (Host::Socket(_), Some(addr)) => addr.to_string(),
            (Host::Socket(dir), None) => {
                let path = dir.join(format!(".s.PGSQL.{}", ep.port));
                let stream = tokio::net::UnixStream::connect(&path)
                    .await
                    .map_err(|e| CheckError::from_io(&e, label))?;
                let announced = sniff::Announced::new();
                // libpq does not use TLS over a Unix socket, and neither does tokio-postgres.
                let (client, conn) = self
                    .base_config()
                    .connect_raw(sniff::Sniffer::raw(stream, announced.clone()), NoTls)
                    .await
                    .map_err(|e| connect_error(&e, label))?;
                return Ok((
                    client,
                    tokio::spawn(async move { drop(conn.await) }),
                    announced.pid(),
                ));
            }
        };
        self.connect_tcp(&name, ep, label, budget).await
    }

    /// Tries every address of `name` (its `hostaddr` when given) in order until one gives a
    /// session, as libpq does. Each address gets its share of the time left (a refused one
    /// returns at once and leaves its share to the next; a silent one cannot eat the others'
    /// time); the last gets all of it.
    async fn connect_tcp(
        &self,
        name: &str,
        ep: &Endpoint,
        label: &str,
        budget: Duration,
    ) -> Result<(Client, JoinHandle<()>, Option<i32>), CheckError> {
        let addrs = match (ep.hostaddr, &self.addresses) {
            (Some(a), _) => vec![a],
            (None, Some(a)) => a.clone(),
            (None, None) => resolve(name, ep.port, label).await?,
        };
        let deadline = Instant::now() + budget;
        let many = addrs.len() > 1;
        let mut errors: Vec<CheckError> = Vec::new();
        for (i, ip) in addrs.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let share = left / (addrs.len() - i) as u32;
            let addr = SocketAddr::new(*ip, ep.port);
            let label = if many {
                format!("{label} [{addr}]")
            } else {
                label.to_owned()
            };
            match tokio::time::timeout(share, self.connect_addr(name, addr, &label)).await {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(CheckError::new(
                    ErrorKind::ConnectTimeout,
                    format!("{label}: no session within {} ms", share.as_millis()),
                )),
            }
        }
        Err(pick_error(errors, label))
    }

    /// One address: TCP, then TLS (per `sslmode`, the host name for SNI and verification) and
    /// the startup on that socket.
    async fn connect_addr(
        &self,
        name: &str,
        addr: SocketAddr,
        label: &str,
    ) -> Result<(Client, JoinHandle<()>, Option<i32>), CheckError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| CheckError::from_io(&e, label))?;
        self.tune_socket(&stream);
        let announced = sniff::Announced::new();
        let stream = sniff::Sniffer::raw(stream, announced.clone());
        let cfg = self.base_config();
        let (client, task) = match tls::connector(&self.dsn)? {
            None => {
                let (client, conn) = cfg
                    .connect_raw(stream, NoTls)
                    .await
                    .map_err(|e| connect_error(&e, label))?;
                (client, tokio::spawn(async move { drop(conn.await) }))
            }
            Some(mut tls) => {
                let tls = <_ as MakeTlsConnect<TcpStream>>::make_tls_connect(&mut tls, name)
                    .map_err(|e| CheckError::new(ErrorKind::Tls, format!("{label}: {e}")))?;
                let tls = sniff::SniffTls {
                    inner: tls,
                    out: announced.clone(),
                };
                let (client, conn) = cfg.connect_raw(stream, tls).await.map_err(|e| {
                    let mut err = connect_error(&e, label);
                    if err.kind == ErrorKind::Other && err.sqlstate.is_none() {
                        err.kind = ErrorKind::Tls;
                    }
                    err
                })?;
                (client, tokio::spawn(async move { drop(conn.await) }))
            }
        };
        Ok((client, task, announced.pid()))
    }

    /// TCP keepalives and `tcp_user_timeout` on the agent's side of the socket.
    fn tune_socket(&self, stream: &TcpStream) {
        let sock = socket2::SockRef::from(stream);
        let ka = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(5))
            .with_retries(3);
        let _ = sock.set_tcp_keepalive(&ka);
        let _ = sock.set_tcp_user_timeout(Some(
            self.limits.query_timeout.max(Duration::from_secs(1)) * 2,
        ));
        let _ = sock.set_tcp_nodelay(true);
    }
}

/// Whether a new session is one `target_session_attrs` accepts: `read-write`/`read-only` by
/// `transaction_read_only` (as libpq), `primary`/`standby` by `pg_is_in_recovery()`. Asked
/// before the set-up statement, which makes the agent's own session read-only.
async fn session_attrs_match(
    client: &Client,
    want: TargetSessionAttrs,
    label: &str,
) -> Result<(), CheckError> {
    if matches!(
        want,
        TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby
    ) {
        return Ok(());
    }
    let msgs = client
        .simple_query(
            "SELECT pg_catalog.pg_is_in_recovery()::text, pg_catalog.current_setting('transaction_read_only')",
        )
        .await
        .map_err(|e| CheckError::from_pg(&e, label))?;
    let row = rows(msgs).into_iter().next().unwrap_or_default();
    let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let (recovery, read_only) = (col(0) == "true", col(1) == "on");
    let why = match want {
        TargetSessionAttrs::ReadWrite if read_only => "the server is read-only",
        TargetSessionAttrs::ReadOnly if !read_only => "the server is not read-only",
        TargetSessionAttrs::Primary if recovery => "the server is a standby",
        TargetSessionAttrs::Standby if !recovery => "the server is not a standby",
        _ => return Ok(()),
    };
    Err(CheckError::new(
        ErrorKind::Other,
        format!(
            "{label}: {why} (target_session_attrs={})",
            serde_json::to_value(want)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
    ))
}

/// [`PgTarget::simple_query`] without the target: a timed-out or broken connection is for the
/// caller to drop ([`needs_invalidate`]).
async fn exec(
    conn: &Conn,
    limits: &Limits,
    target: &str,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, CheckError> {
    let guarded_sql;
    let sql = if conn.direct {
        sql
    } else {
        guarded_sql = guarded(limits, sql);
        guarded_sql.as_str()
    };
    let deadline = query_deadline(limits, conn.connect_duration);
    match tokio::time::timeout(deadline, conn.client.simple_query(sql)).await {
        Err(_) => Err(no_answer(target, deadline)),
        Ok(Err(e)) => Err(CheckError::from_pg(&e, target)),
        Ok(Ok(msgs)) => Ok(rows(msgs)),
    }
}

/// The error of a query that got no answer within the client-side bound (the caller drops the
/// connection, [`needs_invalidate`]).
fn no_answer(target: &str, deadline: Duration) -> CheckError {
    CheckError::new(
        ErrorKind::QueryTimeout,
        format!(
            "{target}: no answer within {} ms; connection dropped",
            deadline.as_millis()
        ),
    )
}

/// Whether an error of [`exec`] means the connection must be dropped: no answer within the
/// client-side bound, or a broken socket.
fn needs_invalidate(conn: &Conn, err: &CheckError) -> bool {
    (err.kind == ErrorKind::QueryTimeout && err.sqlstate.is_none())
        || conn.client.is_closed()
        || err.kind == ErrorKind::ConnectionClosed
}

/// The rows of a simple-protocol answer, as text.
fn rows(msgs: Vec<SimpleQueryMessage>) -> Vec<Vec<Option<String>>> {
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).map(str::to_owned))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .collect()
}

/// `sql` under the agent's limits, as one simple-protocol message: PostgreSQL runs the
/// statements of one message as one implicit transaction, so the `SET LOCAL`s apply to `sql`
/// alone, an error rolls everything back (nothing is left open, the pipelined next query is
/// unaffected), and a pooler in transaction mode hands the whole message to one server
/// connection. `statement_timeout` applies to each statement of the message separately.
pub(crate) fn guarded(limits: &Limits, sql: &str) -> String {
    let ms = |d: Duration| d.as_millis().max(1);
    format!(
        "SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}; {sql}",
        ms(limits.statement_timeout),
        ms(limits.lock_timeout),
    )
}

/// The statement run once per connection: whether the session is direct (the backend is the one
/// that announced itself at startup), the backend's pid and start, and on a direct session the session defaults, the liveness settings
/// and the termination of the agent's previous backend if it is still there.
fn setup_sql(limits: &Limits, announced: Option<i32>, previous: Option<&Backend>) -> String {
    let direct = match announced {
        Some(pid) => format!("pg_backend_pid() = {pid}"),
        None => "false".into(),
    };
    let ms = |d: Duration| d.as_millis().max(1).to_string();
    let mut session = vec![
        ("statement_timeout", ms(limits.statement_timeout)),
        ("lock_timeout", ms(limits.lock_timeout)),
        (
            "idle_in_transaction_session_timeout",
            ms(limits.query_timeout * 2),
        ),
        ("default_transaction_read_only", "on".to_owned()),
    ];
    let all = limits.liveness_settings();
    let (old, new): (Vec<_>, Vec<_>) = all.into_iter().partition(|(n, _)| n.starts_with("tcp_"));
    session.extend(old);
    let set = |list: &[(&str, String)]| {
        list.iter()
            .map(|(n, v)| format!("set_config('{n}', '{v}', false)"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let terminate = match previous {
        Some(b) => format!(
            "(SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a WHERE a.pid = {} \
             AND a.backend_start = '{}'::timestamptz AND a.usename = current_user \
             AND a.application_name = '{APPLICATION_NAME}' AND a.pid <> pg_backend_pid())",
            b.pid,
            b.start.replace('\'', "''")
        ),
        None => "0".into(),
    };
    format!(
        "WITH s AS (SELECT {direct} AS direct, current_setting('server_version_num')::int AS v) \
         SELECT s.direct, pg_backend_pid(), \
         (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())::text, \
         CASE WHEN s.direct THEN concat_ws(',', {}, \
           CASE WHEN s.v >= {LIVENESS_SETTINGS_FROM} THEN concat_ws(',', {}) END) END, \
         CASE WHEN s.direct THEN {terminate} ELSE 0 END \
         FROM s",
        set(&session),
        set(&new),
    )
}

fn parse_setup(rows: &[Vec<Option<String>>]) -> Option<Session> {
    let r = rows.first()?;
    let col = |i: usize| r.get(i).cloned().flatten();
    Some(Session {
        direct: col(0)? == "t",
        backend: Backend {
            pid: col(1)?.parse().ok()?,
            start: col(2).unwrap_or_default(),
        },
        terminated: col(4).and_then(|s| s.parse().ok()).unwrap_or(0),
    })
}

/// A connection error; a startup packet the peer refuses (`08P01`, a pooler's answer to a
/// parameter it does not know) names PgBouncer's setting.
fn connect_error(e: &tokio_postgres::Error, target: &str) -> CheckError {
    let mut err = CheckError::from_pg(e, target);
    if err.sqlstate.as_deref() == Some("08P01") {
        err.message.push_str(
            " (a connection pooler refused the startup packet: the agent sends only user, database, application_name and client_encoding; PgBouncer's ignore_startup_parameters must allow any other the pooler lists)",
        );
    }
    err
}

/// The error of a connection attempt over several addresses: one the server itself answered
/// (authentication, no slots...) says more than a refused or silent address; else the last.
fn pick_error(mut errors: Vec<CheckError>, target: &str) -> CheckError {
    if errors.len() <= 1 {
        return errors.into_iter().next().unwrap_or_else(|| {
            CheckError::new(
                ErrorKind::ConnectTimeout,
                format!("{target}: no address could be tried within AGENT_CONNECT_TIMEOUT"),
            )
        });
    }
    let all = errors
        .iter()
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let answered = errors.iter().rposition(|e| e.sqlstate.is_some());
    let mut chosen = match answered {
        Some(i) => errors.swap_remove(i),
        None => errors
            .pop()
            .unwrap_or_else(|| CheckError::new(ErrorKind::Other, "")),
    };
    chosen.message = crate::dsn::redact(&format!("every address failed: {all}"));
    chosen
}

/// Every address of `name` (an IP literal is its own one address), in the resolver's order.
async fn resolve(name: &str, port: u16, target: &str) -> Result<Vec<IpAddr>, CheckError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    match tokio::net::lookup_host((name, port)).await {
        Ok(addrs) => {
            let mut out: Vec<IpAddr> = Vec::new();
            for a in addrs {
                if !out.contains(&a.ip()) {
                    out.push(a.ip());
                }
            }
            if out.is_empty() {
                Err(CheckError::new(
                    ErrorKind::Dns,
                    format!("{target}: '{name}' resolved to no address"),
                ))
            } else {
                Ok(out)
            }
        }
        Err(e) => Err(CheckError::new(
            if crate::error::is_local_resource_error(&e) {
                ErrorKind::LocalResources
            } else {
                ErrorKind::Dns
            },
            format!("{target}: cannot resolve '{name}': {e}"),
        )),
    }
}

/// Exponential backoff from 250 ms, capped, with jitter in [50%, 100%].
pub(crate) fn backoff(failures: u32, cap: Duration) -> Duration {
    let base =
        Duration::from_millis(250).saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = base.min(cap);
    capped.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_millis(1500),
            lock_timeout: Duration::from_millis(200),
            query_timeout: Duration::from_secs(2),
            max_backoff: Duration::from_secs(1),
            liveness: liveness_for(Duration::from_secs(15)),
        }
    }

    #[test]
    fn every_query_carries_the_limits_in_its_own_transaction() {
        let g = guarded(&limits(), "SELECT 1");
        assert_eq!(
            g,
            "SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = 1500; SET LOCAL lock_timeout = 200; SELECT 1"
        );
    }

    #[test]
    fn liveness_is_a_few_intervals_and_bounded() {
        assert_eq!(
            liveness_for(Duration::from_secs(15)),
            Duration::from_secs(60)
        );
        assert_eq!(
            liveness_for(Duration::from_secs(1)),
            Duration::from_secs(10)
        );
        assert_eq!(
            liveness_for(Duration::from_secs(3600)),
            Duration::from_secs(300)
        );
        let s = limits().liveness_settings();
        let get = |n: &str| s.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(get("tcp_keepalives_idle"), "30");
        assert_eq!(get("tcp_keepalives_interval"), "7");
        assert_eq!(get("tcp_keepalives_count"), "4");
        assert_eq!(get("idle_session_timeout"), "60000");
        assert!(
            s.iter()
                .all(|(k, _)| *k != "client_connection_check_interval")
        );
    }

    #[test]
    fn setup_sets_session_state_only_on_a_direct_session_and_terminates_only_our_old_backend() {
        let prev = Backend {
            pid: 4242,
            start: "2024-01-01 00:00:00.1+00".into(),
        };
        let sql = setup_sql(&limits(), Some(50123), Some(&prev));
        assert!(sql.contains("pg_backend_pid() = 50123"), "{sql}");
        assert!(sql.contains("CASE WHEN s.direct THEN concat_ws"), "{sql}");
        assert!(sql.contains("s.v >= 140000"), "{sql}");
        assert!(sql.contains("set_config('idle_session_timeout', '60000', false)"));
        assert!(sql.contains("a.pid = 4242 AND a.backend_start = '2024-01-01 00:00:00.1+00'"));
        assert!(sql.contains("a.usename = current_user"));
        assert!(sql.contains("a.application_name = 'rose-agent'"));
        let unix = setup_sql(&limits(), None, None);
        assert!(unix.contains("SELECT false AS direct"), "{unix}");
        assert!(!unix.contains("pg_terminate_backend"), "{unix}");
        let odd = Backend {
            pid: 1,
            start: "x' OR true --".into(),
        };
        assert!(setup_sql(&limits(), Some(1), Some(&odd)).contains("'x'' OR true --'"));
    }

    #[test]
    fn setup_row_is_parsed() {
        let r = vec![vec![
            Some("t".into()),
            Some("77".into()),
            Some("2024-01-01".into()),
            Some("0,0".into()),
            Some("1".into()),
        ]];
        let s = parse_setup(&r).unwrap();
        assert!(s.direct);
        assert_eq!(s.backend.pid, 77);
        assert_eq!(s.terminated, 1);
        assert!(parse_setup(&[]).is_none());
        assert!(parse_setup(&[vec![None]]).is_none());
    }

    #[test]
    fn of_several_addresses_the_one_the_server_answered_is_reported() {
        let refused = CheckError::new(ErrorKind::Refused, "t [::1]:5432: refused");
        let mut auth = CheckError::new(ErrorKind::AuthFailed, "t [127.0.0.1]:5432: auth");
        auth.sqlstate = Some("28P01".into());
        let e = pick_error(vec![refused.clone(), auth], "t");
        assert_eq!(e.kind, ErrorKind::AuthFailed);
        assert!(e.message.contains("[::1]:5432: refused") && e.message.contains("auth"));
        let timeout = CheckError::new(ErrorKind::ConnectTimeout, "t [10.0.0.1]:5432: silent");
        assert_eq!(
            pick_error(vec![timeout, refused.clone()], "t").kind,
            ErrorKind::Refused
        );
        assert_eq!(
            pick_error(vec![refused], "t").message,
            "t [::1]:5432: refused"
        );
        assert_eq!(pick_error(vec![], "t").kind, ErrorKind::ConnectTimeout);
    }

    #[tokio::test]
    async fn a_name_resolves_to_every_address() {
        let a = resolve("localhost", 5432, "t").await.unwrap();
        assert!(a.iter().any(|ip| ip.is_loopback()), "{a:?}");
        assert_eq!(resolve("127.0.0.1", 1, "t").await.unwrap().len(), 1);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let cap = Duration::from_secs(10);
        for n in 1..40 {
            let b = backoff(n, cap);
            assert!(b <= cap, "{n}: {b:?}");
        }
        assert!(backoff(1, cap) <= Duration::from_millis(250));
        assert!(backoff(8, cap) >= Duration::from_secs(5));
    }
}
