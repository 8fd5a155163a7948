//! The agent's face for people: one [`Summary`] of the snapshot (overall status and why, the
//! findings with their steps, the figures that matter for Rose at a glance, every check's last
//! outcome), rendered as the HTML status page at `/` ([`html`]), as JSON at `/status`, and for
//! a terminal by `agent status` ([`Summary::to_text`], fetched through [`client`]).
//!
//! Building the summary is pure: it reads a [`Reading`] (the snapshot and the findings beside
//! it) and takes `now`, never the database, so the page costs what a scrape costs and is
//! unit-tested with struct literals. Nothing secret reaches it: the target is sanitized, query
//! text in findings is normalized (a finding's `raw_query_text` is left out), check errors are
//! scrubbed again with [`crate::dsn::redact`].

pub mod client;
pub(crate) mod html;

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::check::Observation;
use crate::findings::Severity;
use crate::reading::Reading;
use crate::snapshot::Snapshot;

pub(crate) use crate::reading::About;

/// How a figure or a check reads: colour on the page and in a terminal, always with its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Level {
    Ok,
    Unknown,
    Warning,
    Critical,
}

impl Level {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Unknown => "unknown",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    fn of(status: &str) -> Level {
        match status {
            "ok" => Level::Ok,
            "warning" => Level::Warning,
            "critical" => Level::Critical,
            _ => Level::Unknown,
        }
    }
}

/// The overall status, the same word `/findings` reports: the worst of the active and pending
/// findings, `unknown` before the first evaluation and while any check outcome is stale.
pub(crate) fn overall(
    snap: &Reading,
    now: SystemTime,
) -> (crate::findings::state::Status, Vec<std::sync::Arc<str>>) {
    let stale = snap.stale_checks(now);
    let mut status = snap.findings.status();
    if !stale.is_empty() {
        status.status = "unknown";
        status.pending = false;
    }
    (status, stale)
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// `ok`, `warning`, `critical` or `unknown` (as `/findings`).
    pub(crate) status: String,
    /// True when the status comes from pending findings only.
    pub(crate) status_pending: bool,
    /// One line: why the status is what it is.
    pub(crate) headline: String,
    pub(crate) agent: AgentLine,
    /// When findings were last evaluated (RFC 3339) and how long ago.
    pub(crate) evaluated_at: Option<String>,
    pub(crate) evaluated_age_seconds: Option<f64>,
    pub(crate) generated_at: String,
    /// How often the page reloads itself.
    pub(crate) refresh_seconds: u64,
    pub(crate) ready: bool,
    pub(crate) stale_checks: Vec<String>,
    /// Active findings first, then pending, each by severity.
    pub(crate) findings: Vec<FindingItem>,
    /// Findings silenced on purpose (`[findings]`): shown apart, never counted.
    #[serde(default)]
    pub(crate) silenced: Vec<SilencedItem>,
    pub(crate) figures: Vec<Group>,
    pub(crate) checks: Vec<CheckRow>,
}

/// Who is speaking and about what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AgentLine {
    pub(crate) version: String,
    pub(crate) instance: String,
    pub(crate) target: Option<String>,
    pub(crate) database_type: String,
    pub(crate) app_url: String,
    pub(crate) started_at: String,
    pub(crate) uptime_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FindingItem {
    /// `active` or `pending` (still confirming, not alerted yet).
    pub(crate) state: String,
    pub(crate) severity: String,
    pub(crate) code: String,
    pub(crate) subject: Option<String>,
    pub(crate) summary: String,
    pub(crate) evidence: String,
    pub(crate) steps: Vec<String>,
    pub(crate) runbook_url: String,
    /// Active since (RFC 3339).
    pub(crate) since: Option<String>,
    pub(crate) since_seconds: Option<f64>,
}

/// A finding silenced on purpose, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SilencedItem {
    pub(crate) code: String,
    pub(crate) subject: Option<String>,
    pub(crate) summary: String,
    pub(crate) reason: String,
    /// The silence's last day, when it has one.
    pub(crate) until: Option<String>,
    pub(crate) runbook_url: String,
}

/// A card of figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Group {
    pub(crate) title: String,
    pub(crate) items: Vec<Figure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Figure {
    pub(crate) label: String,
    pub(crate) value: String,
    pub(crate) level: Level,
    /// What the value is judged against, or more detail.
    pub(crate) note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CheckRow {
    pub(crate) id: String,
    pub(crate) level: Level,
    /// `ok`, `failed (<kind>)`, `stale`, `deferred`.
    pub(crate) outcome: String,
    pub(crate) error: Option<String>,
    pub(crate) duration_ms: f64,
    pub(crate) age_seconds: f64,
    pub(crate) runs: u64,
    pub(crate) consecutive_failures: u32,
}

/// RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    if t < UNIX_EPOCH {
        return "1970-01-01T00:00:00Z".into();
    }
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `850 ms`, `3.2 s`, `4m 10s`, `2h 5m`, `3d 4h`.
pub(crate) fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".into();
    }
    if seconds < 1.0 {
        return format!("{:.0} ms", seconds * 1000.0);
    }
    if seconds < 10.0 {
        return format!("{seconds:.1} s");
    }
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`, `3.25 GiB`.
pub(crate) fn human_bytes(bytes: f64) -> String {
    if !bytes.is_finite() {
        return "-".into();
    }
    let sign = if bytes < 0.0 { "-" } else { "" };
    let b = bytes.abs();
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024.0 {
        return format!("{sign}{b:.0} B");
    }
    let mut v = b / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{sign}{v:.1} {}", UNITS[unit])
}

fn ago(now: SystemTime, t: SystemTime) -> f64 {
    now.duration_since(t)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Error text for people: scrubbed and bounded.
fn error_text(e: &crate::error::CheckError) -> String {
    let text = crate::dsn::redact(&e.to_string());
    truncate(&text, 300)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

impl Summary {
    /// Pure: the summary of a snapshot at `now`.
    pub(crate) fn build(snap: &Reading, now: SystemTime) -> Summary {
        let about = &*snap.about;
        let (status, stale) = overall(snap, now);
        let view = &snap.findings;
        let mut findings: Vec<FindingItem> = view
            .active
            .iter()
            .map(|a| (&a.finding, Some(a.since)))
            .chain(view.pending.iter().map(|f| (f, None)))
            .map(|(f, since)| FindingItem {
                state: if since.is_some() { "active" } else { "pending" }.into(),
                severity: f.severity.as_str().into(),
                code: f.code.into(),
                subject: f.subject.clone(),
                summary: f.summary.clone(),
                evidence: f.evidence.clone(),
                steps: f.steps.clone(),
                runbook_url: about.runbook_url(f.code),
                since: since.map(rfc3339),
                since_seconds: since.map(|s| ago(now, s)),
            })
            .collect();
        let rank = |f: &FindingItem| {
            let sev = match f.severity.as_str() {
                "critical" => 0,
                "warning" => 1,
                _ => 2,
            };
            (u8::from(f.state != "active"), sev)
        };
        findings.sort_by_key(rank);
        let headline = headline(snap, &status, &stale, view);
        let refresh = about.interval.as_secs().clamp(5, 60);
        Summary {
            status: status.status.into(),
            status_pending: status.pending,
            headline,
            agent: AgentLine {
                version: if about.version.is_empty() {
                    env!("CARGO_PKG_VERSION").into()
                } else {
                    about.version.clone()
                },
                instance: about.instance.clone(),
                target: about.target.clone(),
                database_type: about.database_type.clone(),
                app_url: about.app_url.clone(),
                started_at: rfc3339(snap.started),
                uptime_seconds: ago(now, snap.started),
            },
            evaluated_at: view.evaluated_at.map(rfc3339),
            evaluated_age_seconds: view.evaluated_at.map(|t| ago(now, t)),
            generated_at: rfc3339(now),
            refresh_seconds: refresh,
            ready: snap.ready(),
            stale_checks: stale.iter().map(|s| s.to_string()).collect(),
            findings,
            silenced: view
                .silenced
                .iter()
                .map(|s| SilencedItem {
                    code: s.finding.code.into(),
                    subject: s.finding.subject.clone(),
                    summary: s.finding.summary.clone(),
                    reason: s.reason.clone(),
                    until: s.until.clone(),
                    runbook_url: about.runbook_url(s.finding.code),
                })
                .collect(),
            figures: figures(snap, about),
            checks: checks(snap, now),
        }
    }

    /// Nagios-style exit code of the status, as `agent diagnose`: 0 ok, 1 warning, 2 critical,
    /// 3 unknown.
    pub(crate) fn exit_code(&self) -> u8 {
        match self.status.as_str() {
            "ok" => 0,
            "warning" => 1,
            "critical" => 2,
            _ => 3,
        }
    }

    /// The summary for a terminal; ANSI colours only with `color` (a terminal).
    pub(crate) fn to_text(&self, color: bool) -> String {
        let paint = |s: &str, level: Level| -> String {
            if !color {
                return s.to_owned();
            }
            let code = match level {
                Level::Ok => "1;32",
                Level::Warning => "1;33",
                Level::Critical => "1;31",
                Level::Unknown => "1;35",
            };
            format!("\x1b[{code}m{s}\x1b[0m")
        };
        let mut out = String::new();
        let level = Level::of(&self.status);
        let word = self.status.to_uppercase();
        let pending = if self.status_pending {
            " (pending)"
        } else {
            ""
        };
        let _ = writeln!(out, "{}{pending}  {}", paint(&word, level), self.headline);
        let a = &self.agent;
        let _ = writeln!(
            out,
            "target {}  ·  FEATURE_DATABASE_TYPE={}  ·  app {}",
            a.target.as_deref().unwrap_or("(no PostgreSQL)"),
            a.database_type,
            a.app_url
        );
        let _ = writeln!(
            out,
            "agent {} on {}  ·  up {}  ·  last evaluation {}",
            a.version,
            a.instance,
            human_duration(a.uptime_seconds),
            match (&self.evaluated_at, self.evaluated_age_seconds) {
                (Some(t), Some(s)) => format!("{t} ({} ago)", human_duration(s)),
                _ => "not yet".into(),
            }
        );
        let active = self.findings.iter().filter(|f| f.state == "active").count();
        let _ = writeln!(
            out,
            "\nFindings: {active} active, {} pending",
            self.findings.len() - active
        );
        for f in &self.findings {
            let lvl = Level::of(&f.severity);
            let since = match f.since_seconds {
                Some(s) => format!("active for {}", human_duration(s)),
                None => "pending (confirming)".into(),
            };
            let _ = writeln!(
                out,
                "\n  {} {}  {}  [{since}]",
                paint(&format!("{:<8}", f.severity.to_uppercase()), lvl),
                f.code,
                f.summary
            );
            let _ = writeln!(out, "    evidence: {}", f.evidence);
            for (i, s) in f.steps.iter().enumerate() {
                let _ = writeln!(out, "    {}. {s}", i + 1);
            }
            let _ = writeln!(out, "    runbook: {}", f.runbook_url);
        }
        if !self.silenced.is_empty() {
            let _ = writeln!(
                out,
                "\nSilenced on purpose (not counted): {}",
                self.silenced.len()
            );
            for s in &self.silenced {
                let until = s
                    .until
                    .as_deref()
                    .map(|u| format!(" until {u}"))
                    .unwrap_or_default();
                let subject = s
                    .subject
                    .as_deref()
                    .map(|x| format!(" ({x})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  SILENCED {}{subject}  {}  [{}{until}]",
                    s.code, s.summary, s.reason
                );
            }
        }
        for g in &self.figures {
            let _ = writeln!(out, "\n{}", g.title);
            for it in &g.items {
                let note = if it.note.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", it.note)
                };
                let _ = writeln!(
                    out,
                    "  {} {:<22} {}{note}",
                    paint(
                        &format!("{:<8}", it.level.as_str().to_uppercase()),
                        it.level
                    ),
                    it.label,
                    it.value
                );
            }
        }
        let _ = writeln!(out, "\nChecks");
        for c in &self.checks {
            let err = c
                .error
                .as_deref()
                .map(|e| format!("  {e}"))
                .unwrap_or_default();
            let (took, age) = if c.runs == 0 {
                ("-".to_owned(), "-".to_owned())
            } else {
                (
                    human_duration(c.duration_ms / 1000.0),
                    format!("{} ago", human_duration(c.age_seconds)),
                )
            };
            let _ = writeln!(
                out,
                "  {} {:<24} {took:>9}  {age:>14}{err}",
                paint(&format!("{:<8}", c.outcome_word()), c.level),
                c.id,
            );
        }
        out
    }
}

impl CheckRow {
    fn outcome_word(&self) -> String {
        self.outcome
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_uppercase()
    }
}

fn headline(
    snap: &Snapshot,
    status: &crate::findings::state::Status,
    stale: &[std::sync::Arc<str>],
    view: &crate::findings::state::View,
) -> String {
    if !stale.is_empty() {
        return format!(
            "Check outcomes are out of date ({}): the agent may be stalled; findings are held until the checks report again.",
            stale.join(", ")
        );
    }
    if view.evaluated_at.is_none() {
        let missing: Vec<&str> = snap
            .expected
            .iter()
            .filter(|id| !snap.checks.contains_key(*id) && !snap.deferred.contains(*id))
            .map(|id| &**id)
            .collect();
        return if missing.is_empty() {
            "Waiting for the first evaluation of findings.".into()
        } else {
            format!(
                "Waiting for the first run of: {} (then findings are evaluated).",
                missing.join(", ")
            )
        };
    }
    let worst = view
        .active
        .iter()
        .map(|a| &a.finding)
        .chain(view.pending.iter())
        .filter(|f| f.severity > Severity::Info)
        .max_by_key(|f| f.severity);
    let active = view.active.len();
    let pending = view.pending.len();
    match worst {
        None if active + pending == 0 => {
            "No findings: every check's last outcome is within its thresholds.".into()
        }
        None => format!(
            "No problems; {} informational finding{} below.",
            active + pending,
            if active + pending == 1 { "" } else { "s" }
        ),
        Some(f) => {
            let others = active + pending - 1;
            let more = match others {
                0 => String::new(),
                1 => " (and 1 more finding)".into(),
                n => format!(" (and {n} more findings)"),
            };
            let pend = if status.pending { "Confirming: " } else { "" };
            format!("{pend}{}{more}", f.summary)
        }
    }
}

/// The last observation of a check and its last error. A database-wide check this agent does
/// not run now (the fleet's leader does, or the connection and with it the lead were lost) gives
/// its last known observation with an error saying so, so the figure reads "unknown".
fn last_outcome<'a>(
    snap: &'a Snapshot,
    id: &str,
) -> Option<(Option<&'a Observation>, Option<String>)> {
    match snap.checks.get(id) {
        Some(st) => {
            let err = st.last.result.as_ref().err().map(error_text);
            Some((snap.last_good(id), err))
        }
        None => snap.retired.get(id).map(|o| {
            // Withdrawn because another agent leads, or because this one lost its connection
            // (and the lead with it): say which, never blame the fleet for a dead database.
            let why = match snap.error(crate::check::pg::connectivity::ID) {
                Some(_) => "not measured now: PostgreSQL cannot be reached",
                None => "not measured now: another agent of the fleet runs this check",
            };
            (Some(o.as_ref()), Some(why.into()))
        }),
    }
}

/// A figure's note, with why its value is only the last known one.
fn noted(note: String, err: &Option<String>) -> String {
    match err {
        None => note,
        Some(e) => format!("{note}. Last known value ({e})"),
    }
}

fn figure(label: &str, value: impl Into<String>, level: Level, note: impl Into<String>) -> Figure {
    Figure {
        label: label.into(),
        value: value.into(),
        level,
        note: note.into(),
    }
}

/// The figures that matter for Rose, from the checks' last observations.
fn figures(snap: &Snapshot, about: &About) -> Vec<Group> {
    let mut groups = Vec::new();
    // PostgreSQL reachability and connections.
    let mut pg = Vec::new();
    if let Some((obs, err)) = last_outcome(snap, "pg_connectivity") {
        match (&err, obs) {
            (Some(e), _) => pg.push(figure("Reachable", "no", Level::Critical, e.clone())),
            (None, Some(Observation::PgConnectivity(c))) => {
                let role = if c.in_recovery { ", a standby" } else { "" };
                pg.push(figure(
                    "Reachable",
                    format!("yes, round trip {}", human_duration(c.roundtrip_seconds)),
                    Level::Ok,
                    format!("PostgreSQL {}{role}", c.server_version),
                ));
            }
            _ => {}
        }
    }
    if let Some((Some(Observation::PgConnections(c)), err)) = last_outcome(snap, "pg_connections") {
        let (used, slots) = (c.total(), c.slots());
        let ratio = c.utilization().unwrap_or(1.0);
        let level = if err.is_some() {
            Level::Unknown
        } else if ratio >= 1.0 {
            Level::Critical
        } else if ratio >= about.connections_warn_ratio {
            Level::Warning
        } else {
            Level::Ok
        };
        pg.push(figure(
            "Connections vs slots",
            format!("{used} of {slots} ({:.0}%)", ratio * 100.0),
            level,
            noted(
                format!(
                    "max_connections {}, {} reserved; warns at {:.0}%",
                    c.max_connections,
                    c.superuser_reserved + c.reserved.unwrap_or(0),
                    about.connections_warn_ratio * 100.0
                ),
                &err,
            ),
        ));
        if c.waiting_on_locks > 0 {
            pg.push(figure(
                "Waiting on locks",
                c.waiting_on_locks.to_string(),
                Level::Warning,
                "sessions waiting for a lock",
            ));
        }
    }
    if let Some((Some(Observation::PgConnectionBudget(b)), err)) =
        last_outcome(snap, "pg_connection_budget")
    {
        let level = match (err.is_some(), b.headroom) {
            (true, _) => Level::Unknown,
            (_, h) if h < 0 => Level::Critical,
            _ => Level::Ok,
        };
        pg.push(figure(
            "Pool budget",
            format!("{} of {} slots", b.demand, b.slots),
            level,
            noted(
                format!(
                    "{} instance(s) × (pool {} + overflow {}) + agents {}; headroom {} ({})",
                    b.instances_used,
                    b.pool_size,
                    b.max_overflow,
                    b.agent_connections,
                    b.headroom,
                    b.slots_source
                ),
                &err,
            ),
        ));
    }
    if !pg.is_empty() {
        groups.push(Group {
            title: "PostgreSQL".into(),
            items: pg,
        });
    }
    // Sessions.
    if let Some((Some(Observation::PgActivity(a)), err)) = last_outcome(snap, "pg_activity") {
        let stale = err.is_some();
        let lvl = |n: u32, bad: Level| {
            if stale {
                Level::Unknown
            } else if n > 0 {
                bad
            } else {
                Level::Ok
            }
        };
        groups.push(Group {
            title: "Sessions".into(),
            items: vec![
                figure(
                    "Slow queries",
                    a.slow_queries.to_string(),
                    lvl(a.slow_queries, Level::Warning),
                    noted(
                        format!(
                            "running longer than {}; longest {}",
                            human_duration(a.threshold_seconds),
                            human_duration(a.active_query_max_seconds)
                        ),
                        &err,
                    ),
                ),
                figure(
                    "Idle in transaction",
                    a.idle_in_transaction_sessions.to_string(),
                    lvl(a.idle_in_transaction_sessions, Level::Warning),
                    noted(
                        format!(
                            "longest {}",
                            human_duration(a.idle_in_transaction_max_seconds)
                        ),
                        &err,
                    ),
                ),
                figure(
                    "Blocked by locks",
                    a.blocked_sessions.to_string(),
                    lvl(a.blocked_sessions, Level::Warning),
                    noted(format!("{} session(s) blocking", a.blocking_sessions), &err),
                ),
            ],
        });
    }
    // Database size and the LangGraph schema.
    let mut db = Vec::new();
    if let Some((Some(Observation::PgDatabaseSize(s)), err)) =
        last_outcome(snap, "pg_database_size")
    {
        db.push(figure(
            "Database size",
            human_bytes(s.bytes as f64),
            if err.is_some() {
                Level::Unknown
            } else {
                Level::Ok
            },
            noted(
                match s.growth_bytes_per_second {
                    Some(g) => format!("{}; growth {}/h", s.datname, human_bytes(g * 3600.0)),
                    None => format!("{}; growth known after two samples", s.datname),
                },
                &err,
            ),
        ));
    }
    if let Some((Some(Observation::PgSchema(r)), err)) = last_outcome(snap, "pg_schema") {
        let problems: Vec<String> = r
            .objects
            .iter()
            .filter(|o| o.problem.is_some())
            .map(|o| o.name.clone())
            .chain(
                r.invalid_indexes
                    .iter()
                    .map(|i| format!("{} (invalid)", i.name)),
            )
            .collect();
        let (value, level) = if problems.is_empty() {
            (
                format!("as expected ({} objects)", r.objects.len()),
                Level::Ok,
            )
        } else {
            (
                format!(
                    "{} problem(s): {}",
                    problems.len(),
                    truncate(&problems.join(", "), 160)
                ),
                Level::Warning,
            )
        };
        let note = match &r.langgraph {
            Some(lg) => format!(
                "LangGraph {} in schema {}{}",
                format!("{:?}", lg.detected).to_lowercase(),
                lg.schema,
                match &lg.migrations {
                    Some(m) => format!(
                        "; migrations v{} of {}",
                        m.max_version.map_or("-".into(), |v| v.to_string()),
                        lg.expected_version
                    ),
                    None => String::new(),
                }
            ),
            None => "LangGraph tables not expected".into(),
        };
        db.push(figure(
            "Schema",
            value,
            if err.is_some() { Level::Unknown } else { level },
            noted(note, &err),
        ));
    }
    if let Some((Some(Observation::CheckpointMigration(m)), err)) =
        last_outcome(snap, crate::check::checkpoint_migration::ID)
    {
        let side = |s: &Option<crate::check::checkpoint_migration::SideFacts>, name: &str| {
            s.as_ref().map(|f| {
                let grows = f.growth.as_ref().is_some_and(|g| g.growing);
                format!(
                    "{name} {}{}",
                    match (f.readable, f.store_bytes) {
                        (_, Some(b)) => human_bytes(b as f64),
                        (false, None) => "unreadable".into(),
                        (true, None) => "size unknown".into(),
                    },
                    if grows { " growing" } else { "" }
                )
            })
        };
        let stores: Vec<String> = [side(&m.sqlite, "SQLite"), side(&m.postgresql, "PostgreSQL")]
            .into_iter()
            .flatten()
            .collect();
        let bad = m.migration_not_effective || m.rollback_not_effective;
        let configured = format!("{:?}", m.configured).to_lowercase();
        db.push(figure(
            "Checkpoint store",
            if bad {
                format!("{configured} configured, the other store grows")
            } else {
                format!("{configured} (FEATURE_DATABASE_TYPE)")
            },
            if err.is_some() {
                Level::Unknown
            } else if bad {
                Level::Warning
            } else {
                Level::Ok
            },
            stores.join("; "),
        ));
    }
    if !db.is_empty() {
        groups.push(Group {
            title: "Database and schema".into(),
            items: db,
        });
    }
    // App endpoints against their SLO.
    let mut app = Vec::new();
    for (id, st) in &snap.checks {
        let obs = match &st.last.result {
            Ok(Observation::AppProbe(p)) => p,
            Ok(_) => continue,
            Err(e) => {
                if id.starts_with("app_") {
                    app.push(figure(id, "not probed", Level::Unknown, error_text(e)));
                }
                continue;
            }
        };
        let reported = obs.body.as_ref().and_then(|b| b.status.as_deref());
        let level = match (obs.success, obs.healthy, reported) {
            (false, _, _) => Level::Critical,
            (true, false, Some("degraded")) => Level::Warning,
            (true, false, _) => Level::Critical,
            (true, true, _) if obs.slow => Level::Warning,
            _ => Level::Ok,
        };
        let status = match obs.status_code {
            Some(c) if !obs.healthy && obs.success => {
                format!("{} (HTTP {c})", reported.unwrap_or("unhealthy"))
            }
            Some(c) => format!("HTTP {c}"),
            None => obs
                .failure
                .map(|f| format!("{f:?}").to_lowercase())
                .unwrap_or_else(|| "no answer".into()),
        };
        let mut note = format!(
            "{} {}; SLO {}",
            obs.method,
            obs.path,
            human_duration(obs.threshold_seconds)
        );
        if let Some(e) = &obs.error {
            note.push_str(&format!("; {}", truncate(&crate::dsn::redact(e), 200)));
        }
        if let Some(body) = &obs.body {
            let down: Vec<&str> = body
                .services
                .iter()
                .filter(|s| !s.up)
                .map(|s| s.name.as_str())
                .collect();
            if !down.is_empty() {
                note.push_str(&format!("; down: {}", down.join(", ")));
            }
        }
        app.push(figure(
            &obs.endpoint,
            format!("{status} in {}", human_duration(obs.duration_seconds)),
            level,
            note,
        ));
    }
    if !app.is_empty() {
        groups.push(Group {
            title: "App endpoints".into(),
            items: app,
        });
    }
    // SQLite.
    if let Some((obs, err)) = last_outcome(snap, crate::check::sqlite::ID) {
        let mut items = Vec::new();
        if let Some(e) = err {
            items.push(figure("Store", "unreadable", Level::Critical, e));
        }
        if let Some(Observation::Sqlite(s)) = obs {
            let c = &s.counts;
            let (value, level) = match (&c.error, c.present) {
                (Some(e), _) => (format!("{:?}", e.kind).to_lowercase(), Level::Critical),
                (None, false) => ("absent".into(), Level::Unknown),
                (None, true) => (human_bytes(c.file_bytes as f64), Level::Ok),
            };
            items.push(figure(
                "File",
                value,
                level,
                format!(
                    "{}; WAL {}; journal {}",
                    s.path,
                    human_bytes(c.wal_bytes as f64),
                    c.journal_mode.as_deref().unwrap_or("?")
                ),
            ));
            let (qc, ql) = match &s.quick_check {
                crate::check::sqlite::QuickCheck::Ok { .. } => ("ok".to_owned(), Level::Ok),
                crate::check::sqlite::QuickCheck::Problems { lines, .. } => {
                    (format!("{} problem(s)", lines.len()), Level::Critical)
                }
                crate::check::sqlite::QuickCheck::TimedOut { .. } => {
                    ("timed out".to_owned(), Level::Warning)
                }
                crate::check::sqlite::QuickCheck::Skipped { reason } => {
                    (format!("skipped ({reason})"), Level::Unknown)
                }
            };
            items.push(figure("Integrity (quick_check)", qc, ql, ""));
            if !s.tables_missing.is_empty() {
                items.push(figure(
                    "Tables missing",
                    s.tables_missing.join(", "),
                    Level::Warning,
                    "",
                ));
            }
        }
        if !items.is_empty() {
            groups.push(Group {
                title: "SQLite".into(),
                items,
            });
        }
    }
    // Host.
    if let Some((Some(Observation::Host(h)), _)) = last_outcome(snap, crate::check::host::ID) {
        let mem_ratio = if h.memory_total_bytes > 0 {
            h.memory_available_bytes as f64 / h.memory_total_bytes as f64
        } else {
            1.0
        };
        let mut items = vec![
            figure(
                "CPU",
                format!("{:.0}%", h.cpu_usage_ratio * 100.0),
                if h.cpu_usage_ratio > 0.9 {
                    Level::Warning
                } else {
                    Level::Ok
                },
                match h.load {
                    Some(l) => format!("{} CPUs; load {:.2} {:.2} {:.2}", h.cpus, l[0], l[1], l[2]),
                    None => format!("{} CPUs", h.cpus),
                },
            ),
            figure(
                "Memory available",
                human_bytes(h.memory_available_bytes as f64),
                if mem_ratio < 0.1 {
                    Level::Warning
                } else {
                    Level::Ok
                },
                format!("of {}", human_bytes(h.memory_total_bytes as f64)),
            ),
        ];
        if let Some(v) = &h.volume {
            let ratio = if v.total_bytes > 0 {
                v.available_bytes as f64 / v.total_bytes as f64
            } else {
                1.0
            };
            items.push(figure(
                "Disk available",
                human_bytes(v.available_bytes as f64),
                if ratio < 0.1 {
                    Level::Warning
                } else {
                    Level::Ok
                },
                format!(
                    "of {} at {}",
                    human_bytes(v.total_bytes as f64),
                    v.mount_point
                ),
            ));
        }
        groups.push(Group {
            title: "Host".into(),
            items,
        });
    }
    groups
}

fn checks(snap: &Snapshot, now: SystemTime) -> Vec<CheckRow> {
    let mut rows: Vec<CheckRow> = snap
        .checks
        .iter()
        .map(|(id, st)| {
            let stale = st.is_stale(now);
            let (level, outcome, error) = match (&st.last.result, stale) {
                (_, true) => (Level::Unknown, "stale".to_owned(), None),
                (Ok(_), false) => (Level::Ok, "ok".to_owned(), None),
                (Err(e), false) => (
                    Level::Critical,
                    format!("failed ({})", e.kind),
                    Some(error_text(e)),
                ),
            };
            CheckRow {
                id: id.to_string(),
                level,
                outcome,
                error,
                duration_ms: st.last.duration.as_secs_f64() * 1000.0,
                age_seconds: ago(now, st.last.at),
                runs: st.runs,
                consecutive_failures: st.consecutive_failures,
            }
        })
        .collect();
    for id in &snap.deferred {
        if !snap.checks.contains_key(id) {
            rows.push(CheckRow {
                id: id.to_string(),
                level: Level::Unknown,
                outcome: "paused (leader only)".into(),
                error: None,
                duration_ms: 0.0,
                age_seconds: 0.0,
                runs: 0,
                consecutive_failures: 0,
            });
        }
    }
    // Failures first, then by id.
    rows.sort_by(|a, b| b.level.cmp(&a.level).then(a.id.cmp(&b.id)));
    rows
}

/// One piece of a finding's step: prose, or a command to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    Text(&'a str),
    Command(&'a str),
}

/// SQL statements a step may spell out for the reader to run.
const SQL_STARTS: &[&str] = &[
    "SELECT ",
    "ALTER ",
    "CREATE ",
    "DROP ",
    "GRANT ",
    "REVOKE ",
    "REINDEX ",
    "VACUUM ",
    "ANALYZE ",
    "SET ",
    "RESET ",
    "CALL ",
    "COMMENT ",
    "SHOW ",
    "TRUNCATE ",
];

/// Pure: splits a step into prose and commands. A command is text in backticks, or a SQL
/// statement (an upper-case keyword) running to its `;` (with a trailing `-- comment`), or to
/// the end of the step when it follows a colon or opens the step. Keywords inside prose
/// ("an interrupted CREATE INDEX CONCURRENTLY") stay prose.
pub(crate) fn split_commands(step: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut rest = step;
    let mut text_start = 0usize; // offset in `rest` where pending prose began
    let mut i = 0usize;
    while i < rest.len() {
        let tail = &rest[i..];
        if let Some(stripped) = tail.strip_prefix('`')
            && let Some(end) = stripped.find('`')
            && end > 0
        {
            push_text(&mut out, &rest[text_start..i]);
            out.push(Segment::Command(&stripped[..end]));
            rest = &stripped[end + 1..];
            i = 0;
            text_start = 0;
            continue;
        }
        let boundary = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        if boundary && SQL_STARTS.iter().any(|k| tail.starts_with(k)) {
            let opens = rest[..i].trim_end().is_empty() || rest[..i].trim_end().ends_with(':');
            let end = match tail.find(';') {
                Some(semi) => {
                    let mut end = semi + 1;
                    let after = &tail[end..];
                    let trimmed = after.trim_start_matches(' ');
                    if trimmed.starts_with("--") {
                        end = tail.len() - after.len()
                            + (after.len() - trimmed.len())
                            + trimmed.find('\n').unwrap_or(trimmed.len());
                    }
                    Some(end)
                }
                None if opens => Some(tail.len()),
                None => None,
            };
            if let Some(end) = end {
                push_text(&mut out, &rest[text_start..i]);
                out.push(Segment::Command(tail[..end].trim_end()));
                rest = &tail[end..];
                i = 0;
                text_start = 0;
                continue;
            }
        }
        i += tail.chars().next().map_or(1, char::len_utf8);
    }
    push_text(&mut out, &rest[text_start..]);
    out
}

fn push_text<'a>(out: &mut Vec<Segment<'a>>, s: &'a str) {
    if !s.trim().is_empty() {
        out.push(Segment::Text(s));
    }
}

#[cfg(test)]
mod tests;
