//! The connection ladder of `agent diagnose`: DNS, TCP, then TLS + authentication + database in
//! one session attempt through the agent's own connector, then the monitoring role's
//! privileges. Each rung is its own function; a failed rung marks the rungs that depend on it
//! skipped and is published as the connectivity check's outcome, so the same finding rules as
//! `agent run` classify it. Every step is bounded by its own timeout and the global deadline.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::time::Instant as TokioInstant;

use super::{Rung, RungStatus};
use crate::check::pg::connectivity;
use crate::dsn::Host;
use crate::error::{CheckError, ErrorKind};
use crate::findings::codes::Rung as Step;
use crate::findings::{Code, Finding};
use crate::pg::PgTarget;
use crate::snapshot::{Outcome, Store};

/// One walk down the ladder: what every rung needs, and what the walk produced.
pub(super) struct Ladder<'a> {
    pub(crate) pg: &'a Arc<PgTarget>,
    pub(crate) deadline: TokioInstant,
    /// The bound of one connection step (the connect timeout, at most a third of the budget).
    pub(crate) step: Duration,
    /// The bound of the privileges query.
    pub(crate) query_timeout: Duration,
    pub(crate) store: &'a Store,
    pub(crate) rungs: Vec<Rung>,
    /// Findings only the ladder sees (the role lacks pg_monitor).
    pub(crate) extra: Vec<Finding>,
}

/// Why a rung stopped the walk: it has already been recorded.
struct Stopped;

/// What failed on the way to a session before the agent's connector takes over (its own errors
/// are classified by `CheckError::from_pg`). Messages name the target and the step, so the
/// report says where the ladder broke; [`StepError::kind`] is the bounded classification the
/// finding rules read.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("{target}: cannot resolve '{host}': {source}")]
    Resolve {
        target: String,
        host: String,
        source: std::io::Error,
    },
    #[error("{target}: resolving '{host}' timed out")]
    ResolveTimeout { target: String, host: String },
    #[error("{target}: '{host}' resolved to no address")]
    NoAddress { target: String, host: String },
    #[error("{target}: TCP connect to {ip}:{port} failed: {source}")]
    Connect {
        target: String,
        ip: IpAddr,
        port: u16,
        source: std::io::Error,
    },
    #[error("{target}: TCP connect to {ip}:{port} timed out")]
    ConnectTimeout {
        target: String,
        ip: IpAddr,
        port: u16,
    },
    #[error("{target}: no session within the timeout")]
    SessionTimeout { target: String },
}

impl StepError {
    fn kind(&self) -> ErrorKind {
        match self {
            StepError::Resolve { .. }
            | StepError::ResolveTimeout { .. }
            | StepError::NoAddress { .. } => ErrorKind::Dns,
            StepError::Connect { source, .. } => match source.kind() {
                std::io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
                std::io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
                _ => ErrorKind::Unreachable,
            },
            StepError::ConnectTimeout { .. } | StepError::SessionTimeout { .. } => {
                ErrorKind::ConnectTimeout
            }
        }
    }
}

impl From<StepError> for CheckError {
    fn from(e: StepError) -> CheckError {
        CheckError::new(e.kind(), e.to_string())
    }
}

impl Ladder<'_> {
    /// Walks DNS -> TCP -> TLS/auth/database -> privileges. Returns true when a session is open.
    pub(crate) async fn walk(&mut self, host: &Host, port: u16, tls: bool) -> bool {
        let walked = async {
            let ip = self.dns(host, port).await?;
            if let Some(ip) = ip {
                self.tcp(ip, port).await?;
            }
            let conn = self.session(tls).await?;
            self.privileges(&conn).await;
            Ok::<_, Stopped>(())
        };
        walked.await.is_ok()
    }

    fn push(&mut self, step: Step, status: RungStatus, took: Duration, detail: Option<String>) {
        self.rungs
            .push(Rung::new(step.as_str(), status, took, detail));
    }

    fn skip(&mut self, steps: &[Step]) {
        for s in steps {
            self.push(*s, RungStatus::Skipped, Duration::ZERO, None);
        }
    }

    /// Publishes a failed connection as the connectivity check's outcome.
    fn fail(&self, err: CheckError, took: Duration) {
        self.store.publish(
            connectivity::ID,
            Outcome {
                at: SystemTime::now(),
                duration: took,
                result: Err(err),
            },
            vec![],
        );
    }

    /// DNS: the address to connect to (none for a unix socket).
    async fn dns(&mut self, host: &Host, port: u16) -> Result<Option<IpAddr>, Stopped> {
        let name = match host {
            Host::Socket(_) => {
                let detail = Some("unix socket".into());
                self.push(Step::Dns, RungStatus::Ok, Duration::ZERO, detail);
                return Ok(None);
            }
            Host::Tcp(name) => name,
        };
        let t = Instant::now();
        let res = bounded(
            "dns",
            self.deadline,
            self.step,
            tokio::net::lookup_host((name.as_str(), port)),
        )
        .await
        .map(|r| r.map(|mut addrs| addrs.next().map(|a| a.ip())));
        let (target, host) = (self.pg.target().to_owned(), name.clone());
        let err = match res {
            Some(Ok(Some(ip))) => {
                self.push(Step::Dns, RungStatus::Ok, t.elapsed(), Some(ip.to_string()));
                return Ok(Some(ip));
            }
            Some(Err(source)) => StepError::Resolve {
                target,
                host,
                source,
            },
            None => StepError::ResolveTimeout { target, host },
            Some(Ok(None)) => StepError::NoAddress { target, host },
        };
        let detail = Some(err.to_string());
        self.push(Step::Dns, RungStatus::Critical, t.elapsed(), detail);
        self.fail(err.into(), t.elapsed());
        self.skip(&[Step::Tcp, Step::Tls, Step::Auth, Step::Database]);
        Err(Stopped)
    }

    /// TCP: a plain connect to the resolved address.
    async fn tcp(&mut self, ip: IpAddr, port: u16) -> Result<(), Stopped> {
        let t = Instant::now();
        let res = bounded(
            "tcp",
            self.deadline,
            self.step,
            tokio::net::TcpStream::connect((ip, port)),
        )
        .await;
        let target = self.pg.target().to_owned();
        let err = match res {
            Some(Ok(_)) => {
                let detail = Some(format!("{ip}:{port}"));
                self.push(Step::Tcp, RungStatus::Ok, t.elapsed(), detail);
                return Ok(());
            }
            Some(Err(source)) => StepError::Connect {
                target,
                ip,
                port,
                source,
            },
            None => StepError::ConnectTimeout { target, ip, port },
        };
        let detail = Some(err.to_string());
        self.push(Step::Tcp, RungStatus::Critical, t.elapsed(), detail);
        self.fail(err.into(), t.elapsed());
        self.skip(&[Step::Tls, Step::Auth, Step::Database]);
        Err(Stopped)
    }

    /// TLS + authentication + database, in one connection attempt; a failure lands on the rung
    /// its error kind names.
    async fn session(&mut self, tls: bool) -> Result<Arc<crate::pg::Conn>, Stopped> {
        let t = Instant::now();
        let conn = bounded(
            "connect",
            self.deadline,
            self.step + Duration::from_millis(100),
            self.pg.conn(),
        )
        .await
        .unwrap_or_else(|| {
            Err(StepError::SessionTimeout {
                target: self.pg.target().to_owned(),
            }
            .into())
        });
        let took = t.elapsed();
        let e = match conn {
            Ok(c) => {
                let tls_note = if tls {
                    "negotiated per sslmode"
                } else {
                    "disabled by sslmode"
                };
                self.push(Step::Tls, RungStatus::Ok, took, Some(tls_note.into()));
                self.push(Step::Auth, RungStatus::Ok, Duration::ZERO, None);
                let db = Some(self.pg.dbname().to_owned());
                self.push(Step::Database, RungStatus::Ok, Duration::ZERO, db);
                return Ok(c);
            }
            Err(e) => e,
        };
        let failed = match e.kind {
            ErrorKind::Tls => Step::Tls,
            ErrorKind::AuthFailed | ErrorKind::HbaRejected => Step::Auth,
            ErrorKind::ConnectTimeout if tls => Step::Tls,
            ErrorKind::ConnectTimeout => Step::Auth,
            _ => Step::Database,
        };
        for s in [Step::Tls, Step::Auth, Step::Database] {
            let (status, took, detail) = match s.cmp(&failed) {
                std::cmp::Ordering::Less => (RungStatus::Ok, Duration::ZERO, None),
                std::cmp::Ordering::Equal => (RungStatus::Critical, took, Some(e.message.clone())),
                std::cmp::Ordering::Greater => (RungStatus::Skipped, Duration::ZERO, None),
            };
            self.push(s, status, took, detail);
        }
        self.fail(e, took);
        Err(Stopped)
    }

    /// Privileges: pg_monitor membership (a finding when missing, never a stop).
    async fn privileges(&mut self, conn: &Arc<crate::pg::Conn>) {
        let t = Instant::now();
        let sql = "SELECT pg_has_role(current_user, 'pg_monitor', 'USAGE'), current_user";
        let rows = match bounded(
            "privileges",
            self.deadline,
            self.query_timeout,
            self.pg.simple_query(conn, sql),
        )
        .await
        {
            Some(Ok(rows)) => rows,
            Some(Err(e)) => {
                let detail = Some(e.message);
                return self.push(Step::Privileges, RungStatus::Critical, t.elapsed(), detail);
            }
            None => {
                let detail = Some("timed out".into());
                return self.push(Step::Privileges, RungStatus::Critical, t.elapsed(), detail);
            }
        };
        let row = rows.first();
        let has = row
            .and_then(|r| r.first().cloned().flatten())
            .is_some_and(|v| v == "t");
        let user = row
            .and_then(|r| r.get(1).cloned().flatten())
            .unwrap_or_default();
        if has {
            let detail = Some(format!("{user} has pg_monitor"));
            self.push(Step::Privileges, RungStatus::Ok, t.elapsed(), detail);
            return;
        }
        let detail = Some(format!("{user} lacks pg_monitor"));
        self.push(Step::Privileges, RungStatus::Warning, t.elapsed(), detail);
        self.extra.push(Finding::new(
            Code::PrivilegeMissing,
            format!("The monitoring role {user} is not a member of pg_monitor"),
            format!("{}: pg_has_role({user}, 'pg_monitor') is false: other sessions' queries and some statistics are hidden", self.pg.target()),
            vec![
                format!("GRANT pg_monitor TO {user};"),
                "Or create the least-privilege role with scripts/create-monitoring-role.sql and use it in AGENT_DATABASE_URL".into(),
            ],
        ));
    }
}

/// Awaits `fut` for at most `step`, and never past `deadline`.
pub(super) async fn bounded<F: std::future::Future>(
    rung: &'static str,
    deadline: TokioInstant,
    step: Duration,
    fut: F,
) -> Option<F::Output> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "diagnose rung",
        otel.name = format!("diagnose {rung}"),
        rung,
        outcome = tracing::field::Empty
    );
    let until = deadline.min(TokioInstant::now() + step);
    let r = tokio::time::timeout_at(until, fut)
        .instrument(span.clone())
        .await
        .ok();
    span.record("outcome", if r.is_some() { "done" } else { "timeout" });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_errors_name_the_step_and_classify_it() {
        let refused = StepError::Connect {
            target: "db:5432/rose".into(),
            ip: [127, 0, 0, 1].into(),
            port: 5432,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let e = CheckError::from(refused);
        assert_eq!(e.kind, ErrorKind::Refused);
        assert!(
            e.message
                .starts_with("db:5432/rose: TCP connect to 127.0.0.1:5432 failed: "),
            "{}",
            e.message
        );
        let dns = StepError::NoAddress {
            target: "db:5432/rose".into(),
            host: "db".into(),
        };
        assert_eq!(dns.kind(), ErrorKind::Dns);
        assert_eq!(dns.to_string(), "db:5432/rose: 'db' resolved to no address");
    }
}
