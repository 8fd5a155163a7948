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
    pub pg: &'a Arc<PgTarget>,
    pub deadline: TokioInstant,
    /// The bound of one connection step (the connect timeout, at most a third of the budget).
    pub step: Duration,
    /// The bound of the privileges query.
    pub query_timeout: Duration,
    pub store: &'a Store,
    pub rungs: Vec<Rung>,
    /// Findings only the ladder sees (the role lacks pg_monitor).
    pub extra: Vec<Finding>,
}

/// Why a rung stopped the walk: it has already been recorded.
struct Stopped;

impl Ladder<'_> {
    /// Walks DNS -> TCP -> TLS/auth/database -> privileges. Returns true when a session is open.
    pub async fn walk(&mut self, host: &Host, port: u16, tls: bool) -> bool {
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
        let target = self.pg.target();
        let msg = match res {
            Some(Ok(Some(ip))) => {
                self.push(Step::Dns, RungStatus::Ok, t.elapsed(), Some(ip.to_string()));
                return Ok(Some(ip));
            }
            Some(Err(e)) => format!("{target}: cannot resolve '{name}': {e}"),
            None => format!("{target}: resolving '{name}' timed out"),
            Some(Ok(None)) => format!("{target}: '{name}' resolved to no address"),
        };
        self.push(
            Step::Dns,
            RungStatus::Critical,
            t.elapsed(),
            Some(msg.clone()),
        );
        self.fail(CheckError::new(ErrorKind::Dns, msg), t.elapsed());
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
        let target = self.pg.target();
        let (kind, msg) = match res {
            Some(Ok(_)) => {
                let detail = Some(format!("{ip}:{port}"));
                self.push(Step::Tcp, RungStatus::Ok, t.elapsed(), detail);
                return Ok(());
            }
            Some(Err(e)) => {
                let kind = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
                    std::io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
                    _ => ErrorKind::Unreachable,
                };
                (
                    kind,
                    format!("{target}: TCP connect to {ip}:{port} failed: {e}"),
                )
            }
            None => (
                ErrorKind::ConnectTimeout,
                format!("{target}: TCP connect to {ip}:{port} timed out"),
            ),
        };
        self.push(
            Step::Tcp,
            RungStatus::Critical,
            t.elapsed(),
            Some(msg.clone()),
        );
        self.fail(CheckError::new(kind, msg), t.elapsed());
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
            Err(CheckError::new(
                ErrorKind::ConnectTimeout,
                format!("{}: no session within the timeout", self.pg.target()),
            ))
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
