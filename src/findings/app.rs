//! Rules over the app side: health probes (unreachable, unhealthy, degraded with the services
//! that are down, slow against the guide's 100 ms / 2 s), the migration's effect (checkpoints
//! still growing in SQLite under `FEATURE_DATABASE_TYPE=postgresql`, only there or in both
//! stores: a partial migration or rollback), the SQLite rollback path,
//! and the read replica. When the app and the database both fail, the app findings say which
//! side is the likely cause.

use super::{Code, Context, Finding, Severity};
use crate::check::app_probe::{ID_PREFIX, ProbeFailure, ProbeResult};
use crate::check::checkpoint_migration::{self, MigrationFacts};
use crate::check::{Observation, pg, sqlite};
use crate::config::DatabaseType;
use crate::error::ErrorKind;
use crate::snapshot::Snapshot;

pub(super) fn evaluate(snap: &Snapshot, cx: &Context, out: &mut Vec<Finding>) {
    let db_error = snap.error(pg::connectivity::ID).map(|e| e.kind);
    for (id, st) in &snap.checks {
        if id.starts_with(ID_PREFIX)
            && let Ok(Observation::AppProbe(p)) = &st.last.result
        {
            probe(p, db_error, cx, out);
        }
    }
    if let Some(Observation::CheckpointMigration(m)) = snap.observation(checkpoint_migration::ID) {
        migration(m, cx, out);
    }
    match snap.checks.get(sqlite::ID).map(|s| &s.last.result) {
        Some(Ok(Observation::Sqlite(s))) if !s.counts.readable() => out.push(sqlite_unreadable(
            &s.path,
            &s.counts
                .error
                .as_ref()
                .map(|e| format!("{e:?}"))
                .unwrap_or_else(|| "the file does not exist".into()),
            s.counts.present,
            cx,
        )),
        Some(Err(e)) => out.push(sqlite_unreadable(
            cx.sqlite_path.as_deref().unwrap_or("?"),
            &e.message,
            true,
            cx,
        )),
        _ => {}
    }
    replica(snap, cx, out);
}

/// Pure: the findings of one probe run. `db_error` is the database's connection error kind, if
/// it is failing too.
/// Service names an app health body uses for its database or checkpointer.
const DATABASE_SERVICES: &[&str] = &[
    "database",
    "db",
    "postgres",
    "postgresql",
    "checkpointer",
    "checkpoint",
    "langgraph",
];

/// Whether the agent's failed connection is evidence about the app's database too: always when
/// the agent connects with the app's own `DATABASE_URL`; with a separate monitoring DSN only for
/// failures that hit every client of the server (down, unreachable, full, starting or stopping),
/// never for the monitoring role's own credentials, TLS settings or host name.
pub(crate) fn db_failure_links_to_app(kind: ErrorKind, dsn_source: &str) -> bool {
    if dsn_source == "DATABASE_URL" {
        return true;
    }
    matches!(
        kind,
        ErrorKind::Refused
            | ErrorKind::ConnectTimeout
            | ErrorKind::Unreachable
            | ErrorKind::StartingUp
            | ErrorKind::ShuttingDown
            | ErrorKind::TooManyConnections
    )
}

/// Pure: the likely cause of a failing or degraded app probe, named only with evidence that
/// links the two sides (issue 13 item 4). When the app names the services it cannot reach, those
/// are the cause; the database is named when the app reports it down, or when the app fails
/// while the database refuses every client.
pub(crate) fn likely_cause(p: &ProbeResult, db_error: Option<ErrorKind>, cx: &Context) -> String {
    let down: Vec<&str> = p.body.as_ref().map(|b| b.down()).unwrap_or_default();
    let (db_down, others): (Vec<&str>, Vec<&str>) = down
        .iter()
        .partition(|s| DATABASE_SERVICES.contains(&s.to_ascii_lowercase().as_str()));
    if !others.is_empty() && db_down.is_empty() {
        return format!(
            " Likely cause: {} (the app reports {} down).",
            others.join(", "),
            if others.len() == 1 { "it" } else { "them" }
        );
    }
    if !db_down.is_empty() {
        return match db_error {
            Some(kind) => format!(
                " Likely cause: the database: the app reports {} down and the agent's connection fails too ({kind}); fix that first.",
                db_down.join(", ")
            ),
            None if !cx.target.is_empty() => format!(
                " The app reports {} down while the agent reaches the database: check the app's DATABASE_URL, its credentials and its pool.",
                db_down.join(", ")
            ),
            None => format!(
                " Likely cause: {} (the app reports it down).",
                db_down.join(", ")
            ),
        };
    }
    let answered_5xx = p.status_code.is_some_and(|c| c >= 500);
    match db_error {
        Some(kind) if answered_5xx && db_failure_links_to_app(kind, cx.dsn_source) => format!(
            " Likely cause: the database ({kind}): it fails every client, the app included; fix that first."
        ),
        Some(kind) => format!(
            " The agent's own connection fails too ({kind}), but nothing links it to the app (the monitoring DSN's {}); look at the app first.",
            if db_failure_links_to_app(kind, cx.dsn_source) {
                "failure is server-wide, yet the app did not answer 5xx"
            } else {
                "credentials or settings are the agent's own"
            }
        ),
        None if !cx.target.is_empty() => {
            " The database answers, so the app itself is the likely cause.".into()
        }
        None => String::new(),
    }
}

pub(crate) fn probe(
    p: &ProbeResult,
    db_error: Option<ErrorKind>,
    cx: &Context,
    out: &mut Vec<Finding>,
) {
    let ep = &p.endpoint;
    let url = format!("{} {}", p.method, p.path);
    let cause = likely_cause(p, db_error, cx);
    match p.failure {
        Some(
            ProbeFailure::Refused
            | ProbeFailure::ConnectTimeout
            | ProbeFailure::Timeout
            | ProbeFailure::Dns
            | ProbeFailure::Tls
            | ProbeFailure::Closed,
        ) => {
            out.push(
                Finding::new(
                    Code::AppUnreachable,
                    format!("The app's {ep} endpoint does not answer"),
                    format!("{url}: {:?} after {:.2} s (timeout {:.1} s).{cause}", p.failure.unwrap_or(ProbeFailure::Other), p.duration_seconds, p.timeout_seconds),
                    vec![
                        "Check the app is running and listening (Railway dashboard / `railway logs --tail`)".into(),
                        format!("Check APP_BASE_URL and the port: curl -sv \"$APP_BASE_URL{}\"", p.path),
                        "Check the app's logs for a crash at start-up (a missing variable, a failed migration)".into(),
                    ],
                )
                .with_subject(ep.clone()),
            );
            return;
        }
        Some(
            ProbeFailure::Status
            | ProbeFailure::BodyInvalid
            | ProbeFailure::BodyTooLarge
            | ProbeFailure::Other,
        ) => {
            out.push(
                Finding::new(
                    Code::AppUnhealthy,
                    format!("The app's {ep} endpoint answers with an error"),
                    format!(
                        "{url}: status {} (expected {}){}.{cause}",
                        p.status_code.map_or("none".into(), |c| c.to_string()),
                        p.expected_status,
                        p.error.as_deref().map(|e| format!(", {e}")).unwrap_or_default()
                    ),
                    vec![
                        "Check the app's logs around the failing requests (`railway logs --tail`)".into(),
                        "If the database is failing too, follow its finding first".into(),
                        "Roll back the last deploy if it started with it (Rollback Procedure: FEATURE_DATABASE_TYPE=sqlite)".into(),
                    ],
                )
                .with_subject(ep.clone()),
            );
            return;
        }
        Some(ProbeFailure::Token) => {
            out.push(
                Finding::new(
                    Code::AppUnhealthy,
                    format!("The {ep} probe cannot read its bearer token file"),
                    format!("{url}: the token file is unreadable"),
                    vec!["Check bearer_token_file / AGENT_APP_BEARER_TOKEN_FILE exists and is readable by the agent".into()],
                )
                .with_severity(Severity::Warning)
                .with_subject(ep.clone()),
            );
            return;
        }
        None => {}
    }
    if !p.healthy {
        let down: Vec<&str> = p
            .body
            .as_ref()
            .map(|b| {
                b.services
                    .iter()
                    .filter(|s| !s.up)
                    .map(|s| s.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let status = p
            .body
            .as_ref()
            .and_then(|b| b.status.clone())
            .unwrap_or_else(|| "unknown".into());
        let mut steps: Vec<String> = down
            .iter()
            .map(|s| match *s {
                "groq" => "groq disconnected: check GROQ_API_KEY and Groq's status page".to_owned(),
                "qdrant" => "qdrant disconnected: check QDRANT_URL / QDRANT_API_KEY and the Qdrant service".to_owned(),
                "elevenlabs" => "elevenlabs disconnected: check ELEVENLABS_API_KEY and quota".to_owned(),
                "sqlite" => "sqlite disconnected: check SHORT_TERM_MEMORY_DB_PATH and the volume it lives on".to_owned(),
                other => format!("{other} disconnected: check its credentials and service"),
            })
            .collect();
        steps.push("The app reports degraded with HTTP 200: load balancers do not notice; this probe reads the body".into());
        out.push(
            Finding::new(
                Code::AppDegraded,
                format!(
                    "The app reports {status}{}",
                    if down.is_empty() {
                        String::new()
                    } else {
                        format!(": {} disconnected", down.join(", "))
                    }
                ),
                format!(
                    "{url}: status \"{status}\", services down: [{}].{cause}",
                    down.join(", ")
                ),
                steps,
            )
            .with_subject(ep.clone()),
        );
    }
    if p.slow {
        out.push(
            Finding::new(
                Code::AppSlow,
                format!("The app's {ep} endpoint takes {:.0} ms", p.duration_seconds * 1000.0),
                format!("{url}: {:.0} ms > {:.0} ms threshold (the guide: < 100 ms health, < 2 s voice)", p.duration_seconds * 1000.0, p.threshold_seconds * 1000.0),
                vec![
                    "Check database region (should match app region): rose_pg_roundtrip_seconds".into(),
                    "Check slow queries: rose_pg_slow_queries and `agent diagnose`".into(),
                    "The health endpoint calls Qdrant inline: check Qdrant latency".into(),
                    "Upgrade the plan (more resources) if the app is CPU-bound".into(),
                ],
            )
            .with_subject(ep.clone()),
        );
    }
}

/// Pure: the migration's effect.
pub(crate) fn migration(m: &MigrationFacts, cx: &Context, out: &mut Vec<Finding>) {
    let multi = cx.instances > 1;
    if m.migration_not_effective {
        let mut steps = Vec::new();
        if !m.pg_tables_missing.is_empty() {
            steps.push(format!(
                "PostgreSQL tables missing ({}): run the checkpointer's setup() once",
                m.pg_tables_missing.join(", ")
            ));
        }
        steps.extend([
            "Make every interface use the checkpointer factory (guide Step 3): src/ai_companion/interfaces/chainlit/app.py, interfaces/web/routes/voice.py and interfaces/whatsapp/whatsapp_response.py still construct SqliteSaver/AsyncSqliteSaver directly".to_owned(),
            "Restart the app and check its log says: Using PostgreSQL checkpointer".into(),
            "Until then, do not scale to several instances: each keeps its own SQLite sessions".into(),
        ]);
        let grow = |s: &Option<checkpoint_migration::SideFacts>| {
            s.as_ref()
                .and_then(|f| f.growth.as_ref())
                .map_or("unknown".to_owned(), |g| {
                    format!("{:+} bytes", g.bytes_delta)
                })
        };
        out.push(
            Finding::new(
                Code::MigrationNotEffective,
                "Checkpoints still go to SQLite although FEATURE_DATABASE_TYPE=postgresql",
                format!(
                    "over {:.0} s: SQLite {}, PostgreSQL {}{}",
                    m.window_seconds,
                    grow(&m.sqlite),
                    grow(&m.postgresql),
                    if m.pg_tables_missing.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; PostgreSQL tables missing: {}",
                            m.pg_tables_missing.join(", ")
                        )
                    }
                ),
                steps,
            )
            .with_severity(if multi {
                Severity::Critical
            } else {
                Severity::Warning
            }),
        );
    }
    if m.partial {
        out.push(partial(m, cx));
    }
    if let Some(t) = &m.threads
        && m.configured == DatabaseType::Postgresql
    {
        out.extend(threads_incomplete(t));
    }
    if m.rollback_not_effective && m.configured == DatabaseType::Sqlite {
        out.push(Finding::new(
            Code::MigrationNotEffective,
            "Checkpoints still go to PostgreSQL although FEATURE_DATABASE_TYPE=sqlite (rollback)",
            format!("over {:.0} s PostgreSQL's checkpoint tables grew and SQLite did not", m.window_seconds),
            vec![
                "Restart the app so it reads FEATURE_DATABASE_TYPE=sqlite (Rollback Procedure, step 2)".into(),
                "Check the logs say: Using SQLite checkpointer db_path=/app/data/memory.db".into(),
                "If the factory has issues, revert the migration commit (Full Rollback)".into(),
            ],
        ));
    }
}

/// "+12 rows, +49152 bytes in 60 s" for one side.
fn side_growth(s: &Option<checkpoint_migration::SideFacts>) -> String {
    s.as_ref()
        .and_then(|f| f.growth.as_ref())
        .map_or("unknown".to_owned(), |g| {
            format!(
                "{}{:+} bytes in {:.0} s",
                g.writes_delta
                    .map(|w| format!("{w:+} rows, "))
                    .unwrap_or_default(),
                g.bytes_delta,
                g.span_seconds
            )
        })
}

/// Pure: both stores grow (issue 13 item 7). With `postgresql` configured an interface still
/// builds `SqliteSaver` (the guide's Step 3 was applied to some interfaces only); with `sqlite`
/// configured (rolled back) one still builds `PostgresSaver`. Critical with several app
/// instances: each has its own SQLite file, so that interface's conversations split between them.
fn partial(m: &MigrationFacts, cx: &Context) -> Finding {
    let multi = cx.instances > 1;
    let path = cx
        .sqlite_path
        .as_deref()
        .unwrap_or("SHORT_TERM_MEMORY_DB_PATH");
    let writers = m
        .sqlite
        .as_ref()
        .and_then(|s| s.writers.as_ref())
        .and_then(|w| w.describe());
    let instances = if multi {
        format!(
            "; AGENT_APP_INSTANCES={}: each instance writes its own SQLite file, so the SQLite writes of one are lost to the others",
            cx.instances
        )
    } else {
        String::new()
    };
    let read_copy = format!(
        "never open the live file as another user (sqlite3 would create -wal/-shm the app cannot write): copy it first, `cp {path} {path}-wal /tmp/ 2>/dev/null; sqlite3 /tmp/{} \"SELECT thread_id, CAST(metadata AS TEXT) FROM checkpoints ORDER BY rowid DESC LIMIT 20\"` (phone-number thread ids come from WhatsApp, session UUIDs from Chainlit or the web/voice routes)",
        std::path::Path::new(path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "memory.db".into())
    );
    let scale = if multi {
        format!(
            "Until it is fixed, run one app instance (now {}): a user whose next message lands on another instance loses that interface's conversation",
            cx.instances
        )
    } else {
        "Do not scale to several app instances until it is fixed: each would keep its own SQLite conversations".to_owned()
    };
    let (summary, evidence, steps) = if m.configured == DatabaseType::Postgresql {
        (
            "Partial migration: checkpoints grow in PostgreSQL and still in SQLite (an interface still builds SqliteSaver)".to_owned(),
            format!(
                "FEATURE_DATABASE_TYPE=postgresql; PostgreSQL {}; SQLite {path} {}{}{instances}",
                side_growth(&m.postgresql),
                side_growth(&m.sqlite),
                writers
                    .as_ref()
                    .map(|w| format!("; {w}"))
                    .unwrap_or_default(),
            ),
            vec![
                match &writers {
                    Some(w) => format!("Find the interface that still writes SQLite: {w}. To look yourself, {read_copy}"),
                    None => format!("Find the interface that still writes SQLite from its newest checkpoints: {read_copy}"),
                },
                "Apply the guide's Step 3 to that interface: build the checkpointer with the factory (get_checkpointer() / get_async_checkpointer()), not SqliteSaver / AsyncSqliteSaver: `grep -rn \"SqliteSaver\" src/ai_companion/interfaces` (chainlit/app.py, web/routes/voice.py, whatsapp/whatsapp_response.py)".into(),
                scale,
                format!(
                    "Redeploy; this resolves once SQLite stops growing for {:.0} s (rose_checkpoint_store_growing{{backend=\"sqlite\"}} 0) while PostgreSQL grows",
                    m.window_seconds
                ),
                format!("Conversations written to SQLite since the switch are not in PostgreSQL: after the fix, migrate them from {path} (the guide's data migration) and keep the file as the rollback copy"),
            ],
        )
    } else {
        (
            "Partial rollback: checkpoints grow in SQLite and still in PostgreSQL (an interface still builds PostgresSaver)".to_owned(),
            format!(
                "FEATURE_DATABASE_TYPE=sqlite; SQLite {path} {}; PostgreSQL {}{}{instances}",
                side_growth(&m.sqlite),
                side_growth(&m.postgresql),
                writers
                    .as_ref()
                    .map(|w| format!("; SQLite {w}"))
                    .unwrap_or_default(),
            ),
            vec![
                "Find the interface that still writes PostgreSQL from its newest checkpoints: `psql \"$DATABASE_URL\" -c \"SELECT thread_id, metadata, checkpoint_id FROM checkpoints ORDER BY checkpoint_id DESC LIMIT 20\"` (checkpoint ids are time-ordered; phone-number thread ids come from WhatsApp, session UUIDs from Chainlit or the web/voice routes)".into(),
                "Restart every app instance so all read FEATURE_DATABASE_TYPE=sqlite (Rollback Procedure, step 2); an interface that builds PostgresSaver / AsyncPostgresSaver itself ignores the variable: make it use the factory (the guide's Step 3) or revert the migration commit (Full Rollback)".into(),
                scale,
                format!(
                    "This resolves once PostgreSQL's checkpoint tables stop growing for {:.0} s (rose_checkpoint_store_growing{{backend=\"postgresql\"}} 0)",
                    m.window_seconds
                ),
            ],
        )
    };
    Finding::new(Code::MigrationPartial, summary, evidence, steps).with_severity(if multi {
        Severity::Critical
    } else {
        Severity::Warning
    })
}

/// Pure: `migration_incomplete` from the thread comparison (with PostgreSQL configured):
/// threads only in SQLite (warning), or newer there than in PostgreSQL (critical: SQLite was
/// written after the switch, and the app no longer sees those turns).
pub(crate) fn threads_incomplete(t: &checkpoint_migration::ThreadComparison) -> Option<Finding> {
    if t.missing == 0 && t.stale == 0 {
        return None;
    }
    let at_least = if t.truncated { "at least " } else { "" };
    let examples = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!(" (e.g. {})", v.join(", "))
        }
    };
    let mut evidence = format!(
        "threads: SQLite {at_least}{}, PostgreSQL {at_least}{}; only in SQLite: {at_least}{}{}; newer in SQLite than in PostgreSQL: {at_least}{}{}",
        t.sqlite_threads,
        t.postgresql_threads,
        t.missing,
        examples(&t.missing_examples),
        t.stale,
        examples(&t.stale_examples),
    );
    if t.truncated {
        evidence.push_str(&format!(
            "; more than {} threads in a store: compared the first {} by thread id",
            checkpoint_migration::THREADS_CAP,
            checkpoint_migration::THREADS_CAP
        ));
    }
    let mut steps = Vec::new();
    if t.stale > 0 {
        steps.push("SQLite was written after the switch: find the interface still building SqliteSaver (see migration_partial / migration_not_effective) and make it use the factory before copying anything".to_owned());
    }
    steps.extend([
        "Copy the threads with LangGraph's own savers: docs/runbooks/migration_incomplete.md (scripts/migrate_threads.py reads with SqliteSaver list/get_tuple, writes with PostgresSaver put + put_writes; it skips threads already up to date)".to_owned(),
        "Verify: `agent diagnose` reports rose_migration_threads_missing 0 and rose_migration_threads_stale 0".into(),
        "Keep SHORT_TERM_MEMORY_DB_PATH (the rollback copy) until then: it holds the only copy of these conversations".into(),
    ]);
    Some(
        Finding::new(
            Code::MigrationIncomplete,
            if t.stale > 0 {
                format!("{} conversation thread(s) were written to SQLite after the switch to PostgreSQL", t.stale)
            } else {
                format!("{} conversation thread(s) in SQLite were not migrated to PostgreSQL", t.missing)
            },
            evidence,
            steps,
        )
        .with_severity(if t.stale > 0 {
            Severity::Critical
        } else {
            Severity::Warning
        }),
    )
}

fn sqlite_unreadable(path: &str, why: &str, present: bool, cx: &Context) -> Finding {
    let rollback = cx.database_type == DatabaseType::Postgresql;
    Finding::new(
        Code::SqliteUnreadable,
        if present { format!("The SQLite checkpointer {path} cannot be read") } else { format!("The SQLite checkpointer {path} does not exist") },
        format!("{path}: {why}"),
        vec![
            format!("Check SHORT_TERM_MEMORY_DB_PATH ({path}) and the volume it lives on (permissions, disk full)"),
            if rollback {
                "It is the rollback path (guide: keep your SQLite configuration as backup): restore it from the backup (Step 9: memory_backup.db)".into()
            } else {
                "The app runs on SQLite: sessions are lost; restore the file from a backup".into()
            },
            "Check integrity with `sqlite3 FILE 'PRAGMA quick_check'` on a copy".into(),
        ],
    )
    .with_severity(if rollback { Severity::Warning } else { Severity::Critical })
}

fn replica(snap: &Snapshot, cx: &Context, out: &mut Vec<Finding>) {
    let steps = || {
        vec![
            "Check the replica's host (CPU, I/O) and network to the primary".into(),
            "Look for long queries on the replica that hold replay back (max_standby_streaming_delay)".into(),
            "Send reads that must be fresh to the primary until it catches up".into(),
        ]
    };
    match snap.checks.get(pg::replica::ID).map(|s| &s.last.result) {
        Some(Ok(Observation::PgReplica(r))) if r.lag_seconds.unwrap_or(0.0) > cx.replica_lag_seconds => out.push(Finding::new(
            Code::ReplicaLag,
            format!("The read replica {} is {:.0} s behind", r.target, r.lag_seconds.unwrap_or(0.0)),
            format!(
                "replay lag {:.0} s > {:.0} s threshold, {:.0} bytes received but not replayed{}",
                r.lag_seconds.unwrap_or(0.0),
                cx.replica_lag_seconds,
                r.lag_bytes.unwrap_or(0.0),
                if r.replay_paused { "; replay is PAUSED (pg_wal_replay_resume())" } else { "" }
            ),
            steps(),
        )),
        Some(Ok(Observation::PgReplica(r))) if !r.in_recovery => out.push(Finding::new(
            Code::ReplicaLag,
            format!("DATABASE_READ_REPLICA_URL ({}) is not a replica", r.target),
            "the server is not in recovery: reads and writes would go to a primary".to_owned(),
            vec!["Check DATABASE_READ_REPLICA_URL points at the standby, not the primary (after a failover the roles swap)".into()],
        )),
        Some(Err(e)) => out.push(Finding::new(
            Code::ReplicaLag,
            "The read replica cannot be reached",
            e.message.clone(),
            vec!["Check DATABASE_READ_REPLICA_URL and that the replica is running".into(), "Route reads to the primary meanwhile".into()],
        )),
        _ => {}
    }
    if let Some(Observation::PgReplication(r)) = snap.observation(pg::replication::ID) {
        for l in &r.lost {
            out.push(
                Finding::new(
                    Code::StandbyLost,
                    format!(
                        "Standby {} no longer streams from the primary",
                        l.name
                    ),
                    format!(
                        "{} standby(s) named {} from {} seen in pg_stat_replication earlier are gone (for {:.0} s); {} standby(s) stream now",
                        l.missing,
                        l.name,
                        l.client_addr.as_deref().unwrap_or("a local socket"),
                        l.gone_seconds,
                        r.standbys.len()
                    ),
                    vec![
                        "Check the standby is running and can reach the primary (its server log: `could not connect to the primary server`, `requested WAL segment has already been removed`)".into(),
                        "Check replication slots on the primary: `SELECT slot_name, active, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) FROM pg_replication_slots;` (an inactive slot keeps WAL and fills the disk)".into(),
                        "Until it is back, a failover has no target (and reads sent to DATABASE_READ_REPLICA_URL fail)".into(),
                        format!("If it was removed on purpose, drop its slot; the agent forgets it {} h after it was last seen or when restarted", pg::replication::STANDBY_MEMORY.as_secs() / 3600),
                    ],
                )
                .with_subject(l.name.clone()),
            );
        }
        for s in &r.standbys {
            if s.replay_lag_seconds.unwrap_or(0.0) > cx.replica_lag_seconds {
                out.push(
                    Finding::new(
                        Code::ReplicaLag,
                        format!(
                            "Standby {} lags {:.0} s behind the primary",
                            s.label,
                            s.replay_lag_seconds.unwrap_or(0.0)
                        ),
                        format!(
                            "pg_stat_replication replay_lag {:.0} s, {:.0} bytes",
                            s.replay_lag_seconds.unwrap_or(0.0),
                            s.lag_bytes.unwrap_or(0.0)
                        ),
                        steps(),
                    )
                    .with_subject(s.label.clone()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::app_probe::{DurationHistogram, HealthBody, ServiceState};

    fn result(
        failure: Option<ProbeFailure>,
        status: Option<u16>,
        healthy: bool,
        slow: bool,
        down: &[&str],
    ) -> ProbeResult {
        let services = ["groq", "qdrant", "elevenlabs", "sqlite"]
            .iter()
            .map(|n| ServiceState {
                name: (*n).into(),
                state: "x".into(),
                up: !down.contains(n),
            })
            .collect();
        ProbeResult {
            endpoint: "health".into(),
            method: "GET".into(),
            path: "/api/health".into(),
            status_code: status,
            expected_status: 200,
            duration_seconds: if slow { 0.25 } else { 0.01 },
            threshold_seconds: 0.1,
            timeout_seconds: 2.0,
            slow,
            success: failure.is_none(),
            failure,
            error: None,
            body: status.map(|_| HealthBody {
                status: Some(
                    if down.is_empty() {
                        "healthy"
                    } else {
                        "degraded"
                    }
                    .into(),
                ),
                version: None,
                services,
                services_dropped: 0,
            }),
            expectations: vec![],
            healthy,
            report_services: true,
            histogram: DurationHistogram::new(&[0.1]),
            failures_total: Default::default(),
        }
    }

    fn judge(p: ProbeResult, db: Option<ErrorKind>) -> Vec<Finding> {
        let mut out = vec![];
        probe(&p, db, &Context::default(), &mut out);
        out
    }

    #[test]
    fn probe_table() {
        assert!(judge(result(None, Some(200), true, false, &[]), None).is_empty());
        for (failure, status, code) in [
            (Some(ProbeFailure::Refused), None, "app_unreachable"),
            (Some(ProbeFailure::Timeout), None, "app_unreachable"),
            (Some(ProbeFailure::Status), Some(500), "app_unhealthy"),
        ] {
            let f = judge(result(failure, status, false, false, &[]), None);
            assert_eq!(f.len(), 1, "{failure:?}");
            assert_eq!(f[0].code, code);
            assert_eq!(f[0].severity, Severity::Critical);
        }
        let f = judge(result(None, Some(200), false, false, &["qdrant"]), None);
        assert_eq!(f[0].code, "app_degraded");
        assert!(
            f[0].summary.contains("qdrant disconnected"),
            "{}",
            f[0].summary
        );
        assert!(f[0].steps[0].contains("QDRANT_URL"));
        let f = judge(result(None, Some(200), true, true, &[]), None);
        assert_eq!(f[0].code, "app_slow");
        assert!(
            f[0].evidence.contains("250 ms > 100 ms"),
            "{}",
            f[0].evidence
        );
    }

    #[test]
    fn both_sides_failing_names_the_likely_cause() {
        let f = judge(
            result(Some(ProbeFailure::Status), Some(500), false, false, &[]),
            Some(ErrorKind::Refused),
        );
        assert!(
            f[0].evidence
                .contains("Likely cause: the database (refused)"),
            "{}",
            f[0].evidence
        );
        let f = judge(
            result(Some(ProbeFailure::Status), Some(500), false, false, &[]),
            None,
        );
        assert!(
            f[0].evidence.contains("the app itself is the likely cause"),
            "{}",
            f[0].evidence
        );
    }

    /// Issue 13 item 4: the monitoring role's own failure says nothing about the app; a
    /// service the app names is the cause; the database only with evidence linking the two.
    #[test]
    fn the_cause_needs_evidence_that_links_the_two_sides() {
        let cx = |src: &'static str| Context {
            target: "db:5432/rose".into(),
            dsn_source: src,
            ..Context::default()
        };
        let degraded = result(None, Some(200), false, false, &["qdrant"]);
        for kind in [
            ErrorKind::AuthFailed,
            ErrorKind::Tls,
            ErrorKind::Dns,
            ErrorKind::Refused,
        ] {
            let c = likely_cause(&degraded, Some(kind), &cx("AGENT_DATABASE_URL"));
            assert_eq!(
                c, " Likely cause: qdrant (the app reports it down).",
                "{kind:?}"
            );
        }
        // A 5xx with only the monitoring role's password wrong: not the database.
        let failing = result(Some(ProbeFailure::Status), Some(500), false, false, &[]);
        let c = likely_cause(
            &failing,
            Some(ErrorKind::AuthFailed),
            &cx("AGENT_DATABASE_URL"),
        );
        assert!(!c.contains("Likely cause: the database"), "{c}");
        assert!(c.contains("the agent's own"), "{c}");
        // ... but the app's own DATABASE_URL failing authentication hits the app too.
        let c = likely_cause(&failing, Some(ErrorKind::AuthFailed), &cx("DATABASE_URL"));
        assert!(
            c.contains("Likely cause: the database (auth_failed)"),
            "{c}"
        );
        // The server refuses everyone and the app answers 5xx: the database.
        let c = likely_cause(
            &failing,
            Some(ErrorKind::Refused),
            &cx("AGENT_DATABASE_URL"),
        );
        assert!(c.contains("Likely cause: the database (refused)"), "{c}");
        // The app reports its database down.
        let mut db_down = result(None, Some(200), false, false, &[]);
        if let Some(b) = db_down.body.as_mut() {
            b.services.push(ServiceState {
                name: "postgresql".into(),
                state: "disconnected".into(),
                up: false,
            });
        }
        let c = likely_cause(
            &db_down,
            Some(ErrorKind::Refused),
            &cx("AGENT_DATABASE_URL"),
        );
        assert!(
            c.contains("Likely cause: the database: the app reports postgresql down"),
            "{c}"
        );
        let c = likely_cause(&db_down, None, &cx("AGENT_DATABASE_URL"));
        assert!(c.contains("while the agent reaches the database"), "{c}");
        // The app's port refuses: the app, whatever the database does.
        let refused = result(Some(ProbeFailure::Refused), None, false, false, &[]);
        let c = likely_cause(
            &refused,
            Some(ErrorKind::Refused),
            &cx("AGENT_DATABASE_URL"),
        );
        assert!(!c.contains("Likely cause: the database"), "{c}");
    }

    #[test]
    fn migration_not_effective_is_critical_with_several_instances() {
        let facts = MigrationFacts {
            configured: DatabaseType::Postgresql,
            window_seconds: 600.0,
            sqlite: None,
            postgresql: None,
            migration_not_effective: true,
            rollback_not_effective: false,
            pg_tables_missing: vec!["checkpoints".into()],
            partial: false,
            threads: None,
        };
        let mut out = vec![];
        migration(&facts, &Context::default(), &mut out);
        assert_eq!(
            (out[0].code, out[0].severity),
            ("migration_not_effective", Severity::Warning)
        );
        assert!(out[0].steps[0].contains("setup()"));
        let mut out = vec![];
        migration(
            &facts,
            &Context {
                instances: 3,
                ..Context::default()
            },
            &mut out,
        );
        assert_eq!(out[0].severity, Severity::Critical);
    }

    fn grew(
        backend: checkpoint_migration::Backend,
        rows: i64,
        bytes: i64,
    ) -> checkpoint_migration::SideFacts {
        checkpoint_migration::SideFacts {
            backend,
            readable: true,
            error: None,
            store_bytes: Some(100_000),
            rows_estimate: Some(10),
            writes: Some(10),
            tables_present: vec![],
            tables_missing: vec![],
            growth: Some(checkpoint_migration::Growth {
                span_seconds: 60.0,
                bytes_delta: bytes,
                writes_delta: Some(rows),
                counter_reset: false,
                growing: rows > 0 || bytes > 0,
            }),
            writers: None,
        }
    }

    fn partial_facts(configured: DatabaseType) -> MigrationFacts {
        use checkpoint_migration::Backend;
        let mut sqlite = grew(Backend::Sqlite, 12, 49152);
        sqlite.writers = Some(Box::new(checkpoint_migration::writer_hints(&[
            crate::sqlite::RecentCheckpoint {
                thread_id: "+4917612345678".into(),
                metadata: Some(r#"{"source":"loop"}"#.into()),
            },
        ])));
        MigrationFacts {
            configured,
            window_seconds: 60.0,
            sqlite: Some(sqlite),
            postgresql: Some(grew(Backend::Postgresql, 40, 81920)),
            migration_not_effective: false,
            rollback_not_effective: false,
            pg_tables_missing: vec![],
            partial: true,
            threads: None,
        }
    }

    /// Issue 13 item 7: a partial migration is reported with which store grows by how much,
    /// where the guide says interfaces build their checkpointer, and how to find the one that
    /// still writes SQLite; critical with several app instances.
    #[test]
    fn partial_migration_names_both_stores_and_the_writer() {
        let cx = Context {
            sqlite_path: Some("/app/data/memory.db".into()),
            ..Context::default()
        };
        let mut out = vec![];
        migration(&partial_facts(DatabaseType::Postgresql), &cx, &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        let f = &out[0];
        assert_eq!(
            (f.code, f.severity),
            ("migration_partial", Severity::Warning)
        );
        assert!(f.summary.starts_with("Partial migration"), "{}", f.summary);
        assert!(
            f.evidence
                .contains("PostgreSQL +40 rows, +81920 bytes in 60 s")
                && f.evidence
                    .contains("SQLite /app/data/memory.db +12 rows, +49152 bytes in 60 s"),
            "{}",
            f.evidence
        );
        assert!(f.evidence.contains("phone-number thread ids") && f.evidence.contains("+49…78"));
        assert!(!f.evidence.contains("4917612345678"), "{}", f.evidence);
        assert!(f.steps[0].starts_with("Find the interface that still writes SQLite"));
        assert!(f.steps[0].contains("cp /app/data/memory.db /app/data/memory.db-wal /tmp/"));
        assert!(f.steps[1].contains("Step 3") && f.steps[1].contains("SqliteSaver"));
        let mut out = vec![];
        migration(
            &partial_facts(DatabaseType::Postgresql),
            &Context {
                instances: 3,
                ..cx.clone()
            },
            &mut out,
        );
        assert_eq!(out[0].severity, Severity::Critical);
        assert!(
            out[0].evidence.contains("AGENT_APP_INSTANCES=3"),
            "{}",
            out[0].evidence
        );
        assert!(out[0].steps[2].contains("run one app instance (now 3)"));
    }

    #[test]
    fn partial_rollback_is_the_mirror() {
        let mut out = vec![];
        migration(
            &partial_facts(DatabaseType::Sqlite),
            &Context::default(),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].code, "migration_partial");
        assert!(
            out[0].summary.starts_with("Partial rollback"),
            "{}",
            out[0].summary
        );
        assert!(out[0].evidence.starts_with("FEATURE_DATABASE_TYPE=sqlite"));
        assert!(out[0].steps[0].contains("ORDER BY checkpoint_id DESC"));
        assert!(out[0].steps[1].contains("PostgresSaver") && out[0].steps[1].contains("Step 3"));
        // Only the configured store grows: nothing to report.
        let mut facts = partial_facts(DatabaseType::Postgresql);
        facts.partial = false;
        let mut out = vec![];
        migration(&facts, &Context::default(), &mut out);
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn migration_incomplete_counts_missing_and_stale_threads() {
        use checkpoint_migration::ThreadComparison;
        let clean = ThreadComparison {
            sqlite_threads: 4,
            postgresql_threads: 4,
            ..ThreadComparison::default()
        };
        assert!(threads_incomplete(&clean).is_none());
        let missing = ThreadComparison {
            sqlite_threads: 5,
            postgresql_threads: 3,
            missing: 2,
            missing_examples: vec!["+49…78".into(), "+49…12".into()],
            ..ThreadComparison::default()
        };
        let f = threads_incomplete(&missing).unwrap();
        assert_eq!(
            (f.code, f.severity),
            ("migration_incomplete", Severity::Warning)
        );
        assert!(
            f.evidence
                .contains("only in SQLite: 2 (e.g. +49…78, +49…12)"),
            "{}",
            f.evidence
        );
        assert!(
            f.steps
                .iter()
                .any(|s| s.contains("migration_incomplete.md"))
        );
        let stale = ThreadComparison {
            stale: 1,
            truncated: true,
            ..missing
        };
        let f = threads_incomplete(&stale).unwrap();
        assert_eq!(f.severity, Severity::Critical);
        assert!(f.evidence.contains("at least"), "{}", f.evidence);
        // Only with PostgreSQL configured: before the switch every thread is "missing".
        let mut facts = partial_facts(DatabaseType::Sqlite);
        facts.partial = false;
        facts.threads = Some(stale.clone());
        let mut out = vec![];
        migration(&facts, &Context::default(), &mut out);
        assert!(out.iter().all(|f| f.code != "migration_incomplete"));
        facts.configured = DatabaseType::Postgresql;
        let mut out = vec![];
        migration(&facts, &Context::default(), &mut out);
        assert!(out.iter().any(|f| f.code == "migration_incomplete"));
    }
}
