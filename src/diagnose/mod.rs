//! `agent diagnose`: the same configuration and checks as `agent run`, run once, walking the
//! ladder config -> DNS -> TCP -> TLS -> auth -> database -> privileges -> the PostgreSQL checks
//! (settings, extensions, schema, activity) -> app probes -> SQLite. A failed rung skips the
//! rungs that depend on it; independent rungs (the app, SQLite) run anyway, concurrently.
//!
//! Everything is bounded by one deadline (`--timeout`, default 10 s). The report is built from
//! the same pure finding rules as `agent run`, without the pending cycles.

pub mod report;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::time::Instant as TokioInstant;

pub use report::{Report, Rung, RungStatus};

use crate::check::{self, Check, pg};
use crate::config::{Config, ConfigError};
use crate::dsn::Host;
use crate::error::{CheckError, ErrorKind};
use crate::findings::{self, Code, Finding};
use crate::pg::PgTarget;
use crate::scheduler;
use crate::snapshot::{Outcome, Store};

/// Keys whose problems mean the DSN itself is unusable.
const DSN_KEYS: &[&str] = &[
    "DATABASE_URL",
    "AGENT_DATABASE_URL",
    "AGENT_DATABASE_URL_FILE",
    "DATABASE_READ_REPLICA_URL",
];

/// The report for a configuration that cannot be used.
pub fn config_report(err: &ConfigError) -> Report {
    let mut findings = Vec::new();
    for p in err.0.iter().filter(|p| DSN_KEYS.contains(&p.key.as_str())) {
        findings.push(
            Finding::new(
                Code::BadDatabaseUrl,
                format!("{} cannot be used", p.key),
                format!("{}: {}", p.key, p.message),
                vec![
                    format!("Fix {} (the agent read it as the monitoring DSN)", p.key),
                    "Percent-encode special characters in the user and password (@ as %40, / as %2F, : as %3A, # as %23, ? as %3F)".into(),
                    "The form is postgresql://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=require".into(),
                ],
            )
            .with_subject(p.key.clone()),
        );
    }
    let detail = err
        .0
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    Report::new(
        String::new(),
        findings,
        vec![Rung::new(
            "config",
            RungStatus::Critical,
            Duration::ZERO,
            Some(detail),
        )],
    )
    .force_unknown()
}

/// Runs the whole ladder once within `timeout`.
pub async fn diagnose(config: &Config, timeout: Duration) -> Report {
    let deadline = TokioInstant::now() + timeout;
    let store = Store::new(Vec::new());
    let mut rungs = vec![Rung::new("config", RungStatus::Ok, Duration::ZERO, None)];
    let target = config
        .database
        .dsn
        .as_ref()
        .map(|d| d.target())
        .unwrap_or_default();

    // Connect set-up never takes more than a third of the budget, so the checks get their turn.
    let mut db_config = config.clone();
    db_config.database.connect_timeout = config.database.connect_timeout.min(timeout / 3);
    let pg = crate::run::pg_target(&db_config, None);
    let all = check::registry(config, pg.clone());
    let (pg_checks, other_checks): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|c| c.id().starts_with("pg_"));

    // Independent rungs start now and run beside the database ladder. Growth needs two
    // readings: with both stores configured, `checkpoint_migration` reads again after a sample
    // (the growth window, at most half the budget), judged as a short sample.
    let sample = check::checkpoint_migration::diagnose_sample(
        config.app.growth_window,
        timeout,
        config.app.sqlite_path.is_some() && pg.is_some(),
    );
    let independent = async {
        let started = TokioInstant::now();
        let mut out = run_checks(other_checks, deadline).await;
        let again = out
            .iter()
            .position(|(c, _, _)| c.id() == check::checkpoint_migration::ID);
        if let (Some(wait), Some(i)) = (sample, again) {
            let c = out[i].0.clone();
            // The second reading is two quick statements; leave it a margin of the budget.
            let margin = (timeout / 5).max(Duration::from_millis(500));
            let until = (started + wait).min(deadline.checked_sub(margin).unwrap_or(started));
            tokio::time::sleep_until(until).await;
            if let Some(mut second) = run_checks(vec![c], deadline).await.pop() {
                if let Ok(check::Observation::CheckpointMigration(m)) = &second.1.result {
                    second.1.result = Ok(check::Observation::CheckpointMigration(
                        check::checkpoint_migration::judge_short_sample(m),
                    ));
                }
                out[i] = second;
            }
        }
        out
    };
    let ladder = async {
        let mut rungs = Vec::new();
        let mut extra = Vec::new();
        match (&pg, &db_config.database.dsn) {
            (Some(pg), Some(dsn)) => {
                let ok = ladder(
                    pg,
                    &dsn.host,
                    dsn.port,
                    dsn.sslmode != crate::dsn::SslMode::Disable,
                    &db_config,
                    deadline,
                    &store,
                    &mut rungs,
                    &mut extra,
                )
                .await;
                if ok {
                    for (c, outcome, samples) in run_checks(pg_checks, deadline).await {
                        rungs.push(rung_for(c.id(), &outcome));
                        store.publish(c.id(), outcome, samples);
                    }
                } else {
                    for name in [
                        "privileges",
                        "connections",
                        "pg_stat_statements",
                        "schema",
                        "sizes",
                        "activity",
                        "database_health",
                        "replication",
                    ] {
                        rungs.push(Rung::new(
                            name,
                            RungStatus::Skipped,
                            Duration::ZERO,
                            Some("the connection failed".into()),
                        ));
                    }
                }
            }
            _ => rungs.push(Rung::new(
                "database",
                RungStatus::Skipped,
                Duration::ZERO,
                Some(format!(
                    "no DSN configured (none of {} is set; FEATURE_DATABASE_TYPE={})",
                    crate::config::DSN_VARIABLES.join(", "),
                    match config.app.database_type {
                        crate::config::DatabaseType::Sqlite => "sqlite",
                        crate::config::DatabaseType::Postgresql => "postgresql",
                    }
                )),
            )),
        }
        (rungs, extra)
    };
    let (independent, (ladder_rungs, extra)) = tokio::join!(independent, ladder);
    rungs.extend(ladder_rungs);
    for (c, outcome, samples) in independent {
        if c.id() != check::process::ID {
            rungs.push(rung_for(c.id(), &outcome));
        }
        store.publish(c.id(), outcome, samples);
    }
    let cx = findings::Context::from_config(config);
    let mut found = findings::evaluate(&store.current(), &cx, SystemTime::now());
    found.extend(extra);
    let (mut found, silenced) =
        findings::silence::apply(found, &config.findings, SystemTime::now());
    found.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(b.code)));
    let rungs = judge_rungs(merge_rungs(rungs), &found);
    Report::new(target, found, rungs).with_silenced(silenced)
}

/// A rung's status is the worst of its own outcome and the severity of what it found: a rung
/// whose check ran but found a critical problem is critical, never "ok".
pub fn judge_rungs(mut rungs: Vec<Rung>, found: &[Finding]) -> Vec<Rung> {
    for f in found {
        let name = rung_of_code(f.code);
        let status = match f.severity {
            findings::Severity::Critical => RungStatus::Critical,
            findings::Severity::Warning => RungStatus::Warning,
            findings::Severity::Info => RungStatus::Info,
        };
        let note = format!("{} ({})", f.code, f.severity.as_str());
        match rungs.iter_mut().find(|r| r.name == name) {
            Some(r) => {
                r.status = r.status.max(status);
                let noted = r.detail.as_deref().is_some_and(|d| d.contains(&note));
                if !noted {
                    r.detail = Some(match r.detail.take() {
                        Some(d) => format!("{d}; found {note}"),
                        None => format!("found {note}"),
                    });
                }
            }
            None => rungs.push(Rung::new(
                name,
                status,
                Duration::ZERO,
                Some(format!("found {note}")),
            )),
        }
    }
    rungs.sort_by_key(|r| {
        RUNG_ORDER
            .iter()
            .position(|n| *n == r.name)
            .unwrap_or(RUNG_ORDER.len())
    });
    rungs
}

/// The rung a finding code belongs to (where its evidence comes from), from the code list.
pub fn rung_of_code(code: &str) -> &'static str {
    findings::code_def(code).map_or("other", |d| d.rung.as_str())
}

/// DNS, TCP, then TLS + auth + database through the agent's own connector. Returns true when a
/// session is open. A failure is published as the connectivity check's outcome so the same
/// finding rules as `agent run` classify it.
#[allow(clippy::too_many_arguments)]
async fn ladder(
    pg: &Arc<PgTarget>,
    host: &Host,
    port: u16,
    tls: bool,
    config: &Config,
    deadline: TokioInstant,
    store: &Store,
    rungs: &mut Vec<Rung>,
    extra: &mut Vec<Finding>,
) -> bool {
    let step = config.database.connect_timeout;
    let fail = |store: &Store, err: CheckError, took: Duration| {
        store.publish(
            pg::connectivity::ID,
            Outcome {
                at: SystemTime::now(),
                duration: took,
                result: Err(err),
            },
            vec![],
        );
    };
    let skip = |rungs: &mut Vec<Rung>, names: &[&'static str]| {
        for n in names {
            rungs.push(Rung::new(n, RungStatus::Skipped, Duration::ZERO, None));
        }
    };
    // DNS.
    let ip: Option<IpAddr> = match host {
        Host::Socket(_) => {
            rungs.push(Rung::new(
                "dns",
                RungStatus::Ok,
                Duration::ZERO,
                Some("unix socket".into()),
            ));
            None
        }
        Host::Tcp(name) => {
            let t = Instant::now();
            let res = bounded(
                "dns",
                deadline,
                step,
                tokio::net::lookup_host((name.as_str(), port)),
            )
            .await
            .map(|r| r.map(|mut addrs| addrs.next().map(|a| a.ip())));
            match res {
                Some(Ok(Some(ip))) => {
                    rungs.push(Rung::new(
                        "dns",
                        RungStatus::Ok,
                        t.elapsed(),
                        Some(ip.to_string()),
                    ));
                    Some(ip)
                }
                other => {
                    let msg = match other {
                        Some(Err(e)) => format!("{}: cannot resolve '{name}': {e}", pg.target()),
                        None => format!("{}: resolving '{name}' timed out", pg.target()),
                        _ => format!("{}: '{name}' resolved to no address", pg.target()),
                    };
                    rungs.push(Rung::new(
                        "dns",
                        RungStatus::Critical,
                        t.elapsed(),
                        Some(msg.clone()),
                    ));
                    fail(store, CheckError::new(ErrorKind::Dns, msg), t.elapsed());
                    skip(rungs, &["tcp", "tls", "auth", "database"]);
                    return false;
                }
            }
        }
    };
    // TCP.
    if let Some(ip) = ip {
        let t = Instant::now();
        match bounded(
            "tcp",
            deadline,
            step,
            tokio::net::TcpStream::connect((ip, port)),
        )
        .await
        {
            Some(Ok(_)) => rungs.push(Rung::new(
                "tcp",
                RungStatus::Ok,
                t.elapsed(),
                Some(format!("{ip}:{port}")),
            )),
            other => {
                let (kind, msg) = match other {
                    Some(Err(e)) => {
                        let kind = match e.kind() {
                            std::io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
                            std::io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
                            _ => ErrorKind::Unreachable,
                        };
                        (
                            kind,
                            format!("{}: TCP connect to {ip}:{port} failed: {e}", pg.target()),
                        )
                    }
                    _ => (
                        ErrorKind::ConnectTimeout,
                        format!("{}: TCP connect to {ip}:{port} timed out", pg.target()),
                    ),
                };
                rungs.push(Rung::new(
                    "tcp",
                    RungStatus::Critical,
                    t.elapsed(),
                    Some(msg.clone()),
                ));
                fail(store, CheckError::new(kind, msg), t.elapsed());
                skip(rungs, &["tls", "auth", "database"]);
                return false;
            }
        }
    }
    // TLS + authentication + database, in one connection attempt.
    let t = Instant::now();
    let conn = match bounded(
        "connect",
        deadline,
        step + Duration::from_millis(100),
        pg.conn(),
    )
    .await
    {
        Some(r) => r,
        None => Err(CheckError::new(
            ErrorKind::ConnectTimeout,
            format!("{}: no session within the timeout", pg.target()),
        )),
    };
    let took = t.elapsed();
    let conn = match conn {
        Ok(c) => {
            let tls_note = if tls {
                "negotiated per sslmode"
            } else {
                "disabled by sslmode"
            };
            rungs.push(Rung::new(
                "tls",
                RungStatus::Ok,
                took,
                Some(tls_note.into()),
            ));
            rungs.push(Rung::new("auth", RungStatus::Ok, Duration::ZERO, None));
            rungs.push(Rung::new(
                "database",
                RungStatus::Ok,
                Duration::ZERO,
                Some(pg.dbname().to_owned()),
            ));
            c
        }
        Err(e) => {
            let failed = match e.kind {
                ErrorKind::Tls => "tls",
                ErrorKind::AuthFailed | ErrorKind::HbaRejected => "auth",
                ErrorKind::ConnectTimeout if tls => "tls",
                ErrorKind::ConnectTimeout => "auth",
                _ => "database",
            };
            let order = ["tls", "auth", "database"];
            let pos = order.iter().position(|n| *n == failed).unwrap_or(2);
            for (i, n) in order.iter().enumerate() {
                let status = match i.cmp(&pos) {
                    std::cmp::Ordering::Less => RungStatus::Ok,
                    std::cmp::Ordering::Equal => RungStatus::Critical,
                    std::cmp::Ordering::Greater => RungStatus::Skipped,
                };
                let detail = (i == pos).then(|| e.message.clone());
                rungs.push(Rung::new(
                    n,
                    status,
                    if i == pos { took } else { Duration::ZERO },
                    detail,
                ));
            }
            fail(store, e, took);
            return false;
        }
    };
    // Privileges: pg_monitor membership.
    let t = Instant::now();
    let sql = "SELECT pg_has_role(current_user, 'pg_monitor', 'USAGE'), current_user";
    match bounded(
        "privileges",
        deadline,
        config.database.query_timeout(),
        pg.simple_query(&conn, sql),
    )
    .await
    {
        Some(Ok(rows)) => {
            let row = rows.first();
            let has = row
                .and_then(|r| r.first().cloned().flatten())
                .is_some_and(|v| v == "t");
            let user = row
                .and_then(|r| r.get(1).cloned().flatten())
                .unwrap_or_default();
            if has {
                rungs.push(Rung::new(
                    "privileges",
                    RungStatus::Ok,
                    t.elapsed(),
                    Some(format!("{user} has pg_monitor")),
                ));
            } else {
                rungs.push(Rung::new(
                    "privileges",
                    RungStatus::Warning,
                    t.elapsed(),
                    Some(format!("{user} lacks pg_monitor")),
                ));
                extra.push(Finding::new(
                    Code::PrivilegeMissing,
                    format!("The monitoring role {user} is not a member of pg_monitor"),
                    format!("{}: pg_has_role({user}, 'pg_monitor') is false: other sessions' queries and some statistics are hidden", pg.target()),
                    vec![
                        format!("GRANT pg_monitor TO {user};"),
                        "Or create the least-privilege role with scripts/create-monitoring-role.sql and use it in AGENT_DATABASE_URL".into(),
                    ],
                ));
            }
        }
        Some(Err(e)) => rungs.push(Rung::new(
            "privileges",
            RungStatus::Critical,
            t.elapsed(),
            Some(e.message),
        )),
        None => rungs.push(Rung::new(
            "privileges",
            RungStatus::Critical,
            t.elapsed(),
            Some("timed out".into()),
        )),
    }
    true
}

/// Runs checks once, concurrently, each under its own timeout and the global deadline.
async fn run_checks(
    checks: Vec<Arc<dyn Check>>,
    deadline: TokioInstant,
) -> Vec<(Arc<dyn Check>, Outcome, Vec<crate::catalog::Sample>)> {
    let mut set = tokio::task::JoinSet::new();
    for c in checks {
        set.spawn(async move {
            use tracing::Instrument;
            let span = scheduler::check_span(c.as_ref());
            let run = scheduler::run_once(c.as_ref()).instrument(span.clone());
            let (outcome, samples) = match tokio::time::timeout_at(deadline, run).await {
                Ok(r) => r,
                Err(_) => (
                    Outcome {
                        at: SystemTime::now(),
                        duration: Duration::ZERO,
                        result: Err(CheckError::new(
                            ErrorKind::QueryTimeout,
                            format!("check {} cut off by --timeout", c.id()),
                        )),
                    },
                    vec![],
                ),
            };
            scheduler::record_outcome(&span, &outcome);
            (c, outcome, samples)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(r) = r {
            out.push(r);
        }
    }
    out.sort_by_key(|(c, _, _)| c.id());
    out
}

/// Awaits `fut` for at most `step`, and never past `deadline`.
async fn bounded<F: std::future::Future>(
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

/// Which rung a check belongs to: named for what it checks.
pub fn rung_name(check_id: &str) -> &'static str {
    use crate::check::*;
    match check_id {
        pg::connectivity::ID | pg::connections::ID | pg::connection_budget::ID => "connections",
        pg::privileges::ID => "privileges",
        pg::statements::ID => "pg_stat_statements",
        pg::schema::ID => "schema",
        pg::database_size::ID | pg::table_sizes::ID | pg::checkpoint_threads::ID => "sizes",
        pg::activity::ID => "activity",
        pg::database_stats::ID | pg::checkpoints::ID | pg::archiver::ID => "database_health",
        pg::replica::ID | pg::replication::ID => "replication",
        sqlite::ID => "sqlite",
        checkpoint_migration::ID => "migration",
        host::ID | process::ID => "host",
        id if id.starts_with("app") => "app",
        _ => "other",
    }
}

fn rung_for(check_id: &'static str, outcome: &Outcome) -> Rung {
    let (status, detail) = match &outcome.result {
        Ok(_) => (RungStatus::Ok, Some(check_id.to_owned())),
        Err(e) => (
            RungStatus::Critical,
            Some(format!("{check_id}: {}", e.message)),
        ),
    };
    Rung::new(rung_name(check_id), status, outcome.duration, detail)
}

/// Merges rungs of the same name (several checks per rung) in ladder order: worst status,
/// longest duration, details joined.
fn merge_rungs(rungs: Vec<Rung>) -> Vec<Rung> {
    let mut merged: Vec<Rung> = Vec::new();
    for r in rungs {
        match merged.iter_mut().find(|m| m.name == r.name) {
            Some(m) => {
                m.status = m.status.max(r.status);
                m.duration_ms = m.duration_ms.max(r.duration_ms);
                if let Some(d) = r.detail {
                    m.detail = Some(match m.detail.take() {
                        Some(prev) => format!("{prev}; {d}"),
                        None => d,
                    });
                }
            }
            None => merged.push(r),
        }
    }
    merged.sort_by_key(|r| {
        RUNG_ORDER
            .iter()
            .position(|n| *n == r.name)
            .unwrap_or(RUNG_ORDER.len())
    });
    merged
}

/// The rungs in ladder order (docs/diagnose.md).
pub const RUNG_ORDER: &[&str] = &[
    "config",
    "dns",
    "tcp",
    "tls",
    "auth",
    "database",
    "privileges",
    "connections",
    "pg_stat_statements",
    "schema",
    "sizes",
    "activity",
    "database_health",
    "replication",
    "app",
    "sqlite",
    "migration",
    "host",
    "other",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finding_code_and_check_has_a_named_rung() {
        for d in findings::CODES {
            let r = rung_of_code(d.code);
            assert!(
                r != "other" && RUNG_ORDER.contains(&r),
                "{} has no rung",
                d.code
            );
        }
        let env: std::collections::HashMap<&str, &str> = [
            ("DATABASE_URL", "postgresql://u:p@127.0.0.1:1/db"),
            (
                "DATABASE_READ_REPLICA_URL",
                "postgresql://u:p@127.0.0.1:2/db",
            ),
            ("SHORT_TERM_MEMORY_DB_PATH", "/nonexistent/ck.db"),
        ]
        .into();
        let config = Config::load(None, &env).unwrap();
        let pg = crate::run::pg_target(&config, None);
        for c in check::registry(&config, pg) {
            assert_ne!(rung_name(c.id()), "other", "{} has no rung", c.id());
        }
    }

    #[test]
    fn a_rung_that_found_a_problem_is_not_ok() {
        let rungs = vec![
            Rung::new(
                "app",
                RungStatus::Ok,
                Duration::ZERO,
                Some("app_health".into()),
            ),
            Rung::new("schema", RungStatus::Ok, Duration::ZERO, None),
            Rung::new("pg_stat_statements", RungStatus::Ok, Duration::ZERO, None),
        ];
        let f = |code: Code| Finding::new(code, "s", "e", vec![]);
        let out = judge_rungs(
            rungs,
            &[
                f(Code::AppUnreachable),
                f(Code::MissingTable),
                f(Code::MissingTable),
                f(Code::StatementsUnavailable),
            ],
        );
        let status = |n: &str| out.iter().find(|r| r.name == n).unwrap().status;
        assert_eq!(status("app"), RungStatus::Critical);
        assert_eq!(status("schema"), RungStatus::Critical);
        assert_eq!(status("pg_stat_statements"), RungStatus::Info);
        let schema = out.iter().find(|r| r.name == "schema").unwrap();
        assert_eq!(
            schema.detail.as_deref(),
            Some("found missing_table (critical)")
        );
    }
}
