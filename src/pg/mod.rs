//! The agent's one PostgreSQL connection and the discipline around it.
//!
//! - One connection, shared by every PostgreSQL check (a tokio-postgres `Client` pipelines
//!   concurrent queries), so the agent holds at most one backend.
//! - Session set-up in the startup packet (no extra round trip): `application_name=rose-agent`,
//!   `statement_timeout`, `lock_timeout`, `idle_in_transaction_session_timeout`,
//!   `default_transaction_read_only=on`; TCP keepalives and `tcp_user_timeout`.
//! - Connect (DNS + TCP + TLS + auth) bounded by the connect timeout; DNS is resolved by the agent
//!   so a name that does not resolve is told apart from a host that does not answer.
//! - Never more than one connection attempt in flight; after a failure, capped jittered backoff.
//! - Every query bounded on the client side too; a timed-out or broken connection is dropped, and
//!   dropping it aborts the task that drives its socket.

pub mod leader;
pub mod tls;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::dsn::{Dsn, Host, SslMode};
use crate::error::{CheckError, ErrorKind};

/// The `application_name` every agent session carries.
pub const APPLICATION_NAME: &str = "rose-agent";

/// Session limits and backoff bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    /// Client-side bound on one query.
    pub query_timeout: Duration,
    /// Longest wait between connection attempts; kept under one interval so recovery is seen
    /// within one interval of the fault ending.
    pub max_backoff: Duration,
}

/// An open connection. Dropping the last handle aborts the socket task.
pub struct Conn {
    pub client: Client,
    task: JoinHandle<()>,
    pub generation: u64,
    pub connect_duration: Duration,
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
}

impl PgTarget {
    pub fn new(dsn: Dsn, limits: Limits) -> PgTarget {
        let target = dsn.target();
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
            }),
            connecting: tokio::sync::Mutex::new(()),
            on_connect: None,
        }
    }

    /// Calls `hook(ok)` after every connection attempt (for the attempts counter).
    pub fn with_connect_hook(mut self, hook: impl Fn(bool) + Send + Sync + 'static) -> PgTarget {
        self.on_connect = Some(Box::new(hook));
        self
    }

    /// The sanitized `host:port/dbname`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Span attributes of this server.
    pub fn check_target(&self) -> crate::check::CheckTarget {
        let address = match &self.dsn.host {
            Host::Tcp(h) => h.clone(),
            Host::Socket(p) => p.display().to_string(),
        };
        crate::check::CheckTarget::Postgres {
            namespace: self.dsn.dbname.clone(),
            address,
            port: self.dsn.port,
        }
    }

    pub fn dbname(&self) -> &str {
        &self.dsn.dbname
    }

    pub fn limits(&self) -> &Limits {
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
        {
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
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(self.limits.connect_timeout, self.connect()).await {
            Ok(r) => r,
            Err(_) => Err(CheckError::new(
                ErrorKind::ConnectTimeout,
                format!(
                    "{}: no connection within the connect timeout ({} ms)",
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
            Ok((client, task)) => {
                slot.generation += 1;
                let conn = Arc::new(Conn {
                    client,
                    task,
                    generation: slot.generation,
                    connect_duration: started.elapsed(),
                });
                slot.conn = Some(conn.clone());
                slot.failures = 0;
                slot.retry_at = None;
                slot.last_error = None;
                tracing::info!(target_db = %self.target, ms = started.elapsed().as_millis() as u64, "Connected to PostgreSQL.");
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
                tracing::warn!(target_db = %self.target, kind = %e.kind, error = %e.message, retry_ms = (started + wait).saturating_duration_since(Instant::now()).as_millis() as u64, "Connection to PostgreSQL failed.");
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

    /// Runs a simple-protocol query (one round trip, no prepared statement) under the
    /// client-side timeout; drops the connection when the query times out or the socket broke.
    pub async fn simple_query(
        &self,
        conn: &Conn,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, CheckError> {
        match tokio::time::timeout(self.limits.query_timeout, conn.client.simple_query(sql)).await {
            Err(_) => {
                self.invalidate(conn.generation);
                Err(CheckError::new(
                    ErrorKind::QueryTimeout,
                    format!(
                        "{}: no answer within {} ms; connection dropped",
                        self.target,
                        self.limits.query_timeout.as_millis()
                    ),
                ))
            }
            Ok(Err(e)) => {
                let err = CheckError::from_pg(&e, &self.target);
                if conn.client.is_closed() || err.kind == ErrorKind::ConnectionClosed {
                    self.invalidate(conn.generation);
                }
                Err(err)
            }
            Ok(Ok(msgs)) => Ok(msgs
                .into_iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => Some(
                        (0..r.len())
                            .map(|i| r.get(i).map(str::to_owned))
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                })
                .collect()),
        }
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

    async fn connect(&self) -> Result<(Client, JoinHandle<()>), CheckError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.user(&self.dsn.user)
            .dbname(&self.dsn.dbname)
            .port(self.dsn.port)
            .application_name(APPLICATION_NAME);
        if let Some(p) = self.dsn.password() {
            cfg.password(p);
        }
        match &self.dsn.host {
            Host::Socket(dir) => {
                cfg.host_path(dir);
            }
            Host::Tcp(name) => {
                let ip = resolve(name, self.dsn.port, &self.target).await?;
                cfg.host(name).hostaddr(ip);
            }
        }
        let ms = |d: Duration| d.as_millis().max(1);
        cfg.options(format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={} -c default_transaction_read_only=on",
            ms(self.limits.statement_timeout),
            ms(self.limits.lock_timeout),
            ms(self.limits.query_timeout * 2),
        ));
        cfg.connect_timeout(self.limits.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(self.limits.query_timeout.max(Duration::from_secs(1)) * 2);
        let target = self.target.as_str();
        let map = |e: tokio_postgres::Error| CheckError::from_pg(&e, target);
        match tls::connector(&self.dsn)? {
            None => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, conn) = cfg.connect(NoTls).await.map_err(map)?;
                Ok((client, tokio::spawn(async move { drop(conn.await) })))
            }
            Some(tls) => {
                cfg.ssl_mode(if self.dsn.sslmode == SslMode::Prefer {
                    tokio_postgres::config::SslMode::Prefer
                } else {
                    tokio_postgres::config::SslMode::Require
                });
                let (client, conn) = cfg.connect(tls).await.map_err(|e| {
                    let mut err = map(e);
                    if err.kind == ErrorKind::Other && err.sqlstate.is_none() {
                        err.kind = ErrorKind::Tls;
                    }
                    err
                })?;
                Ok((client, tokio::spawn(async move { drop(conn.await) })))
            }
        }
    }
}

async fn resolve(name: &str, port: u16, target: &str) -> Result<IpAddr, CheckError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(ip);
    }
    match tokio::net::lookup_host((name, port)).await {
        Ok(mut addrs) => addrs.next().map(|a| a.ip()).ok_or_else(|| {
            CheckError::new(
                ErrorKind::Dns,
                format!("{target}: '{name}' resolved to no address"),
            )
        }),
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
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let base =
        Duration::from_millis(250).saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = base.min(cap);
    capped.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

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
