//! `agent diagnose`: the same configuration and checks as `agent run`, run once, walking the
//! ladder config -> DNS -> TCP -> TLS -> auth -> database -> privileges -> the PostgreSQL checks
//! (settings, extensions, schema, activity) -> app probes -> SQLite. A failed rung skips the
//! rungs that depend on it; independent rungs (the app, SQLite) run anyway, concurrently.
//!
//! Everything is bounded by one deadline (`--timeout`, default 10 s). The report is built from
//! the same pure finding rules as `agent run`, without the pending cycles.

mod checks;
mod connect;
pub(crate) mod report;

use std::time::{Duration, SystemTime};

use tokio::time::Instant as TokioInstant;

pub use report::{Report, Rung, RungStatus};

use crate::check;
use crate::config::{Config, ConfigError};
use crate::findings::codes::Rung as Step;
use crate::findings::{self, Code, Finding};
use crate::snapshot::Store;

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
    let (pg_checks, other_checks) = checks::partition(check::registry(config, pg.clone()));
    // The rungs the PostgreSQL checks would fill, skipped when the connection fails.
    let mut pg_rungs: Vec<Step> = pg_checks.iter().filter_map(|c| c.rung()).collect();
    pg_rungs.push(Step::Privileges);
    pg_rungs.sort();
    pg_rungs.dedup();

    // Independent rungs start now and run beside the database ladder.
    let sample = check::checkpoint_migration::diagnose_sample(
        config.app.growth_window,
        timeout,
        config.app.sqlite_path.is_some() && pg.is_some(),
    );
    let independent = checks::independent(other_checks, sample, timeout, deadline);
    let ladder = async {
        let (Some(pg), Some(dsn)) = (&pg, &db_config.database.dsn) else {
            return (vec![no_database(config)], Vec::new());
        };
        let mut ladder = connect::Ladder {
            pg,
            deadline,
            step: db_config.database.connect_timeout,
            query_timeout: db_config.database.query_timeout(),
            store: &store,
            rungs: Vec::new(),
            extra: Vec::new(),
        };
        let tls = dsn.sslmode != crate::dsn::SslMode::Disable;
        let connected = ladder.walk(&dsn.host, dsn.port, tls).await;
        let mut rungs = std::mem::take(&mut ladder.rungs);
        if connected {
            for (c, outcome, samples) in checks::run_checks(pg_checks, deadline).await {
                rungs.push(checks::rung_for(c.as_ref(), &outcome));
                store.publish(c.id(), outcome, samples);
            }
        } else {
            // The rungs behind the connection did not run.
            for step in pg_rungs {
                rungs.push(Rung::new(
                    step.as_str(),
                    RungStatus::Skipped,
                    Duration::ZERO,
                    Some("the connection failed".into()),
                ));
            }
        }
        (rungs, ladder.extra)
    };
    let (independent, (ladder_rungs, extra)) = tokio::join!(independent, ladder);
    rungs.extend(ladder_rungs);
    for (c, outcome, samples) in independent {
        if c.id() != check::process::ID {
            rungs.push(checks::rung_for(c.as_ref(), &outcome));
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
        let name = findings::code_def(f.code).map_or("other", |d| d.rung.as_str());
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
    rungs.sort_by_key(|r| ladder_position(r.name));
    rungs
}

/// The report's rung when no DSN is configured.
fn no_database(config: &Config) -> Rung {
    Rung::new(
        Step::Database.as_str(),
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
    )
}

/// Where a rung sorts: ladder order ([`Step::ALL`]), anything unknown last.
fn ladder_position(name: &str) -> usize {
    Step::ALL
        .iter()
        .position(|s| s.as_str() == name)
        .unwrap_or(Step::ALL.len())
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
    merged.sort_by_key(|r| ladder_position(r.name));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_lands_on_its_declared_rung() {
        let env: std::collections::HashMap<&str, &str> = [
            ("DATABASE_URL", "postgresql://u:p@127.0.0.1:1/db"),
            (
                "DATABASE_READ_REPLICA_URL",
                "postgresql://u:p@127.0.0.1:2/db",
            ),
            ("SHORT_TERM_MEMORY_DB_PATH", "/nonexistent/ck.db"),
            ("APP_BASE_URL", "http://127.0.0.1:3/"),
        ]
        .into();
        let config = Config::load(None, &env).unwrap();
        let pg = crate::run::pg_target(&config, None);
        let outcome = crate::snapshot::Outcome {
            at: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            result: Err(crate::error::CheckError::new(
                crate::error::ErrorKind::Other,
                "x",
            )),
        };
        let (pg_checks, others) = checks::partition(check::registry(&config, pg));
        for c in pg_checks.iter().chain(&others) {
            let rung = checks::rung_for(c.as_ref(), &outcome);
            let declared = c.kind().unwrap().contract().rung;
            assert_eq!(rung.name, declared.as_str(), "{}", c.id());
        }
        // Every check that talks to PostgreSQL waits for the connection ladder.
        for id in ["pg_connectivity", "pg_replica", "checkpoint_threads"] {
            assert!(pg_checks.iter().any(|c| c.id() == id), "{id}");
        }
        for id in [
            "checkpoint_migration",
            "sqlite_checkpointer",
            "host_resources",
        ] {
            assert!(others.iter().any(|c| c.id() == id), "{id}");
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
