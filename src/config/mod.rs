//! Validated configuration: the second stage of the raw -> validated parse. [`Config::load`]
//! reads the optional TOML file, overlays the environment (env wins), and validates every field,
//! returning either a [`Config`] that cannot be invalid or a [`ConfigError`] naming every bad key
//! at once. [`Config::effective_toml`] prints what the agent will use, secrets redacted.

mod checks;
pub(crate) mod duration;
pub mod otel;
pub(crate) mod probes;
mod raw;
pub(crate) mod search_path;
pub(crate) mod silence;
pub mod vars;
pub(crate) mod web;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use checks::Expectations;
pub(crate) use checks::{
    ChecksConfig, ExpectedIndex, ExpectedTable, LangGraphSchema, PLAN_STORAGE, PlanLimit,
    StorageLimit,
};
pub(crate) use probes::JsonExpectation;
pub use probes::ProbeConfig;
pub(crate) use raw::{Env, Problem};
pub use raw::{ProcessEnv, RawConfig};

use crate::dsn::{self, Dsn};

/// Shortest interval accepted: short intervals are for tests and soaks, not production.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Where the runbooks are published by default (the same default as the alert rules).
pub(crate) const DEFAULT_RUNBOOK_BASE: &str =
    "https://github.com/rose-agent/rose-agent/blob/main/docs/runbooks";
/// Intervals from which the timeouts must fit in one interval (see the fit rule in `from_raw`).
pub(crate) const FIT_RULE_FROM: Duration = Duration::from_secs(1);
/// Default connect timeout from [`FIT_RULE_FROM`] on, whatever the interval: a TCP + TLS +
/// SCRAM set-up plus the session statement takes about five round trips, 2 s to a database
/// 400 ms away, and a short interval must not make a distant database look down. (Only the
/// sub-second test and soak intervals derive a shorter one.)
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A derived duration rounded to the millisecond (a third of 2 s is 666 ms, not
/// `666ms 666us 666ns`), never zero.
pub(crate) fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(((d.as_micros() + 500) / 1000).max(1) as u64)
}

/// The variables a monitoring DSN is read from, in order of precedence (and the file's
/// `[database] url`, `url_file`, `[app] database_url`), for messages that say what to set.
pub(crate) const DSN_VARIABLES: [&str; 3] = [
    "AGENT_DATABASE_URL",
    "AGENT_DATABASE_URL_FILE",
    "DATABASE_URL",
];

/// Which checkpointer the app is configured to use (`FEATURE_DATABASE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseType {
    Sqlite,
    Postgresql,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything validated. Built only by [`Config::from_raw`].
#[derive(Debug, Clone)]
pub struct Config {
    pub agent: AgentConfig,
    pub(crate) database: DatabaseConfig,
    pub app: AppConfig,
    /// OTLP export; `None` when no `OTEL_EXPORTER_OTLP_*ENDPOINT` is set.
    pub otel: Option<otel::OtelConfig>,
    pub(crate) checks: ChecksConfig,
    /// `[findings]`: disabled checks and codes, accepted findings (see `config::silence`).
    pub(crate) findings: silence::FindingsConfig,
    /// `AGENT_*` variables set but not read (misspellings, mostly), at most
    /// [`vars::MAX_REPORTED`], and how many more there were.
    pub(crate) unknown_variables: (Vec<vars::UnknownVariable>, usize),
}

/// `0x526F73652D616774`, the bytes of "Rose-agt": the advisory lock key the fleet elects its
/// leader with, unless `AGENT_LEADER_LOCK_KEY` says otherwise.
pub const DEFAULT_LOCK_KEY: i64 = 0x526F_7365_2D61_6774;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub(crate) listen: SocketAddr,
    pub interval: Duration,
    pub slow_interval: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) log_format: LogFormat,
    pub(crate) finding_pending_cycles: u32,
    pub(crate) finding_resolve_cycles: u32,
    pub(crate) alertmanager_url: Option<String>,
    /// The agent's `instance` label for pushed alerts.
    pub(crate) instance: String,
    pub(crate) runbook_base_url: String,
    /// TLS and authentication of the agent's endpoint: the web config file as written (parsed;
    /// `crate::web` builds the live endpoint config from it).
    pub(crate) web: Option<web::WebConfigFile>,
    pub(crate) web_config_file: Option<PathBuf>,
    /// Timeouts and the connection cap of the agent's endpoint.
    pub(crate) web_limits: web::WebLimits,
    /// Database-wide checks run only on the fleet's leader (see `src/leader.rs`).
    pub(crate) leader_election: bool,
    /// The advisory lock key of the election.
    pub(crate) leader_lock_key: i64,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// The DSN the agent monitors with; `None` when none is given (with
    /// `FEATURE_DATABASE_TYPE=postgresql` that is the finding `no_database_configured`, not a
    /// configuration error: the agent keeps serving and says what is missing).
    pub(crate) dsn: Option<Dsn>,
    /// Which key the DSN came from, for messages.
    pub(crate) dsn_source: &'static str,
    pub(crate) replica: Option<Dsn>,
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Duration,
    pub(crate) lock_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub(crate) database_type: DatabaseType,
    pub pool_size: u32,
    pub(crate) max_overflow: u32,
    pub(crate) instances: u32,
    /// `max_size` of the checkpointer's psycopg pool per instance, when configured.
    pub(crate) checkpointer_pool_max_size: Option<u32>,
    /// The app's role (the user of `DATABASE_URL`), when known: connections are attributed to
    /// the app by it.
    pub(crate) role: Option<String>,
    pub(crate) sqlite_path: Option<PathBuf>,
    pub(crate) base_url: String,
    /// HTTP probes of the app (empty when `AGENT_APP_PROBES=off`).
    pub probes: Vec<ProbeConfig>,
    /// How far back checkpoint growth is judged.
    pub(crate) growth_window: Duration,
    /// After a PostgreSQL restart, the app must answer healthy within this
    /// (`app_not_recovered`).
    pub(crate) recovery_timeout: Duration,
}

/// Every problem found, each naming its key.
#[derive(Debug, Clone)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem{}):",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            writeln!(f, "  - {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl DatabaseConfig {
    /// Client-side bound on one query: a little longer than the server's `statement_timeout`,
    /// so the server cancels first and the client only catches a dead or frozen server.
    pub(crate) fn query_timeout(&self) -> Duration {
        self.statement_timeout + self.statement_timeout / 10 + Duration::from_millis(50)
    }
}

impl Config {
    /// Reads the file (if any) and the environment, and validates.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let file = path.and_then(|p| match crate::files::read_to_string(p) {
            Ok(text) => Some((text, p.display().to_string())),
            Err(e) => {
                problems.push(Problem {
                    key: "--config".into(),
                    message: format!("cannot read {}: {e}", p.display()),
                });
                None
            }
        });
        let file = file.as_ref().map(|(t, n)| (t.as_str(), n.as_str()));
        Config::validate(file, problems, env)
    }

    /// Validates a file's text (`(text, name)`, if any) overlaid with the environment.
    pub fn from_text(file: Option<(&str, &str)>, env: &dyn Env) -> Result<Config, ConfigError> {
        Config::validate(file, Vec::new(), env)
    }

    fn validate(
        file: Option<(&str, &str)>,
        mut problems: Vec<Problem>,
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let mut raw = RawConfig::default();
        if let Some((text, name)) = file {
            match toml::from_str::<RawConfig>(text) {
                Ok(r) => raw = r,
                Err(e) => problems.push(Problem {
                    key: name.to_owned(),
                    message: dsn::redact(e.message()) + &line_hint(text, e.span()),
                }),
            }
        }
        raw.overlay_env(env, &mut problems);
        silence::overlay_env(&mut raw.findings, env, &mut problems);
        let otel = otel::OtelConfig::from_env(env, &mut problems);
        let mut config = Config::from_raw(raw, problems)?;
        config.otel = otel;
        config.unknown_variables = vars::unknown(env);
        Ok(config)
    }

    /// Validates a raw config, adding to the problems already found.
    pub(crate) fn from_raw(
        raw: RawConfig,
        mut problems: Vec<Problem>,
    ) -> Result<Config, ConfigError> {
        let mut p = |key: &str, message: String| {
            problems.push(Problem {
                key: key.into(),
                message,
            })
        };

        let listen = match raw
            .agent
            .listen
            .as_deref()
            .unwrap_or("0.0.0.0:9188")
            .parse::<SocketAddr>()
        {
            Ok(a) => a,
            Err(_) => {
                p(
                    "AGENT_LISTEN",
                    "must be an address:port such as 0.0.0.0:9188 or 127.0.0.1:9188".into(),
                );
                SocketAddr::from(([0, 0, 0, 0], 9188))
            }
        };
        let mut dur = |key: &str, v: Option<&str>, default: Duration| -> Duration {
            match duration::parse(v, "15s or 1m30s", false) {
                Ok(d) => d.unwrap_or(default),
                Err(m) => {
                    p(key, m);
                    default
                }
            }
        };
        let interval = dur(
            "AGENT_INTERVAL",
            raw.agent.interval.as_deref(),
            Duration::from_secs(15),
        );
        let slow_interval = dur(
            "AGENT_SLOW_INTERVAL",
            raw.agent.slow_interval.as_deref(),
            interval * 4,
        );
        let shutdown_grace = dur(
            "AGENT_SHUTDOWN_GRACE",
            raw.agent.shutdown_grace.as_deref(),
            Duration::from_secs(5),
        );
        // The statement timeout default shrinks with a short interval so that, unless set, a
        // query always fits in one. The connect timeout does not (see DEFAULT_CONNECT_TIMEOUT).
        let connect_timeout = dur(
            "AGENT_CONNECT_TIMEOUT",
            raw.database.connect_timeout.as_deref(),
            if interval >= FIT_RULE_FROM {
                DEFAULT_CONNECT_TIMEOUT
            } else {
                round_ms(interval / 4)
            },
        );
        let statement_timeout = dur(
            "AGENT_STATEMENT_TIMEOUT",
            raw.database.statement_timeout.as_deref(),
            round_ms(Duration::from_secs(5).min(interval / 3)),
        );
        let lock_timeout = dur(
            "AGENT_LOCK_TIMEOUT",
            raw.database.lock_timeout.as_deref(),
            Duration::from_secs(1),
        );
        let web_header_timeout = dur(
            "AGENT_WEB_HEADER_TIMEOUT",
            raw.agent.web_header_timeout.as_deref(),
            web::DEFAULT_HEADER_TIMEOUT,
        );

        let log_format = parse_log_format(raw.agent.log_format.as_deref(), &mut p);
        let database_type = parse_database_type(raw.app.database_type.as_deref(), &mut p);
        let mut count = |key: &str, v: Option<i64>, default: u32, min: i64| -> u32 {
            match v {
                None => default,
                Some(n) if n >= min && n <= 100_000 => n as u32,
                Some(n) => {
                    p(key, format!("{n} is out of range ({min} to 100000)"));
                    default
                }
            }
        };
        let pool_size = count("DATABASE_POOL_SIZE", raw.app.pool_size, 10, 1);
        let max_overflow = count("DATABASE_MAX_OVERFLOW", raw.app.max_overflow, 20, 0);
        let instances = count("AGENT_APP_INSTANCES", raw.app.instances, 1, 1);
        let checkpointer_pool_max_size = raw
            .app
            .checkpointer_pool_max_size
            .map(|v| count("AGENT_CHECKPOINTER_POOL_MAX_SIZE", Some(v), 0, 0));
        // The app's role, for attributing connections; a DATABASE_URL that does not parse is
        // reported below when it is the DSN in use, and otherwise only loses the attribution.
        let app_role = raw
            .app
            .database_url
            .as_deref()
            .and_then(|u| Dsn::parse(u).ok())
            .map(|d| d.user.clone())
            .filter(|u| !u.is_empty());
        let finding_pending_cycles = count(
            "AGENT_FINDING_PENDING_CYCLES",
            raw.agent.finding_pending_cycles,
            2,
            1,
        );
        let finding_resolve_cycles = count(
            "AGENT_FINDING_RESOLVE_CYCLES",
            raw.agent.finding_resolve_cycles,
            2,
            1,
        );
        let web_max_connections = count(
            "AGENT_WEB_MAX_CONNECTIONS",
            raw.agent.web_max_connections,
            web::DEFAULT_MAX_CONNECTIONS,
            1,
        );

        // Where the app's LangGraph savers create their tables, when its DSN says.
        let app_search_path = raw
            .app
            .database_url
            .as_deref()
            .map(search_path::app_search_path)
            .unwrap_or_default();
        let (dsn, dsn_source) = monitoring_dsn(
            raw.database.url,
            raw.database.url_file,
            raw.app.database_url,
            &mut p,
        );
        // The DSN's own connect_timeout (libpq's), unless AGENT_CONNECT_TIMEOUT says otherwise.
        let connect_timeout = match (
            raw.database.connect_timeout.is_some(),
            dsn.as_ref().and_then(|d| d.connect_timeout),
        ) {
            (false, Some(t)) => t,
            _ => connect_timeout,
        };
        let replica = raw
            .database
            .replica_url
            .and_then(|t| parse_dsn("DATABASE_READ_REPLICA_URL", &t, &mut p));
        let alertmanager_url = raw.agent.alertmanager_url.clone();
        if let Some(u) = &alertmanager_url {
            check_http_url("AGENT_ALERTMANAGER_URL", u, &mut p);
        }
        let instance = raw
            .agent
            .instance
            .clone()
            .unwrap_or_else(|| format!("{}:{}", hostname(), listen.port()));
        let web_config_file = raw.agent.web_config_file.clone().map(PathBuf::from);
        let web = match &web_config_file {
            None => None,
            Some(path) => web::load(path)
                .map_err(|e| p("AGENT_WEB_CONFIG_FILE", e))
                .ok(),
        };
        let runbook_base_url = raw
            .agent
            .runbook_base_url
            .clone()
            .unwrap_or_else(|| DEFAULT_RUNBOOK_BASE.to_owned());
        let base_url = raw
            .app
            .base_url
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        check_http_url("APP_BASE_URL", &base_url, &mut p);

        check_intervals(interval, slow_interval, connect_timeout, &mut p);
        if !(web::MIN_HEADER_TIMEOUT..=web::MAX_HEADER_TIMEOUT).contains(&web_header_timeout) {
            p(
                "AGENT_WEB_HEADER_TIMEOUT",
                format!(
                    "must be from {} to {}: every wait is bounded, and a scraper needs time to send a request",
                    humantime::format_duration(web::MIN_HEADER_TIMEOUT),
                    humantime::format_duration(web::MAX_HEADER_TIMEOUT)
                ),
            );
        }
        let db = DatabaseConfig {
            dsn,
            dsn_source,
            replica,
            connect_timeout,
            statement_timeout,
            lock_timeout,
        };
        check_statement_timeout(interval, &db, &mut p);

        let mut checks = checks::validate(&raw.checks, &mut problems);
        checks.langgraph_search_path = app_search_path;
        let probes = probes::validate(
            raw.app.probes.as_deref(),
            &probes::ProbeDefaults {
                enabled: raw.app.probes_enabled.unwrap_or(true),
                base_url: &base_url,
                interval: raw.app.probe_interval.as_deref(),
                timeout: raw.app.probe_timeout.as_deref(),
                health_paths: raw.app.health_paths.as_deref(),
                bearer_token_file: raw.app.bearer_token_file.as_deref(),
            },
            &mut problems,
        );
        let growth_window = duration::setting(
            &mut problems,
            "AGENT_CHECKPOINT_GROWTH_WINDOW",
            raw.app.growth_window.as_deref(),
            "10m",
            true,
            Duration::from_secs(600),
        );
        let recovery_timeout = duration::setting(
            &mut problems,
            "AGENT_APP_RECOVERY_TIMEOUT",
            raw.app.recovery_timeout.as_deref(),
            "60s",
            true,
            Duration::from_secs(60),
        );

        let findings = silence::validate(
            raw.findings,
            &crate::catalog::checks::disablable,
            &mut problems,
        );

        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(Config {
            agent: AgentConfig {
                listen,
                interval,
                slow_interval,
                shutdown_grace,
                log_format,
                finding_pending_cycles,
                finding_resolve_cycles,
                alertmanager_url,
                instance,
                runbook_base_url,
                web,
                web_config_file,
                web_limits: web::WebLimits {
                    header_timeout: web_header_timeout,
                    max_connections: web_max_connections,
                },
                leader_election: raw.agent.leader_election.unwrap_or(true),
                leader_lock_key: raw.agent.leader_lock_key.unwrap_or(DEFAULT_LOCK_KEY),
            },
            database: db,
            app: AppConfig {
                database_type,
                pool_size,
                max_overflow,
                instances,
                checkpointer_pool_max_size,
                role: app_role,
                sqlite_path: raw.app.sqlite_path.map(PathBuf::from),
                base_url,
                probes,
                growth_window,
                recovery_timeout,
            },
            otel: None,
            checks,
            findings,
            unknown_variables: (Vec::new(), 0),
        })
    }

    /// The effective configuration as TOML, in the file's own shape, with secrets redacted.
    pub fn effective_toml(&self) -> String {
        let h = |d: Duration| humantime::format_duration(round_ms(d)).to_string();
        let raw = RawConfig {
            agent: raw::RawAgent {
                listen: Some(self.agent.listen.to_string()),
                interval: Some(h(self.agent.interval)),
                slow_interval: Some(h(self.agent.slow_interval)),
                shutdown_grace: Some(h(self.agent.shutdown_grace)),
                log_format: Some(format!("{:?}", self.agent.log_format).to_lowercase()),
                finding_pending_cycles: Some(self.agent.finding_pending_cycles.into()),
                finding_resolve_cycles: Some(self.agent.finding_resolve_cycles.into()),
                alertmanager_url: self.agent.alertmanager_url.as_deref().map(dsn::redact),
                instance: Some(self.agent.instance.clone()),
                runbook_base_url: Some(self.agent.runbook_base_url.clone()),
                web_config_file: self
                    .agent
                    .web_config_file
                    .as_ref()
                    .map(|p| p.display().to_string()),
                web_header_timeout: Some(h(self.agent.web_limits.header_timeout)),
                web_max_connections: Some(self.agent.web_limits.max_connections.into()),
                leader_election: Some(self.agent.leader_election),
                leader_lock_key: Some(self.agent.leader_lock_key),
            },
            database: raw::RawDatabase {
                url: self.database.dsn.as_ref().map(Dsn::redacted_url),
                url_file: None,
                replica_url: self.database.replica.as_ref().map(Dsn::redacted_url),
                connect_timeout: Some(h(self.database.connect_timeout)),
                statement_timeout: Some(h(self.database.statement_timeout)),
                lock_timeout: Some(h(self.database.lock_timeout)),
            },
            app: raw::RawApp {
                database_url: None,
                database_type: Some(format!("{:?}", self.app.database_type).to_lowercase()),
                pool_size: Some(self.app.pool_size.into()),
                max_overflow: Some(self.app.max_overflow.into()),
                instances: Some(self.app.instances.into()),
                checkpointer_pool_max_size: self.app.checkpointer_pool_max_size.map(Into::into),
                sqlite_path: self
                    .app
                    .sqlite_path
                    .as_ref()
                    .map(|p| p.display().to_string()),
                base_url: Some(dsn::redact(&self.app.base_url)),
                probes_enabled: Some(!self.app.probes.is_empty()),
                probe_interval: None,
                probe_timeout: None,
                health_paths: None,
                bearer_token_file: None,
                growth_window: Some(h(self.app.growth_window)),
                recovery_timeout: Some(h(self.app.recovery_timeout)),
                probes: Some(probes::to_raw(&self.app.probes)),
            },
            checks: self.checks.to_raw(),
            findings: silence::to_raw(&self.findings),
        };
        let mut out = match self.database.dsn {
            Some(_) => format!(
                "# effective configuration; database.url from {}\n",
                self.database.dsn_source
            ),
            None => format!(
                "# effective configuration; no database.url: none of {} is set\n",
                DSN_VARIABLES.join(", ")
            ),
        };
        out.push_str(&toml::to_string(&raw).unwrap_or_else(|e| format!("# cannot render: {e}\n")));
        out
    }
}

/// This machine's host name, for the default `instance` label.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// ` (line N)` of a byte offset (counted in bytes: no char-boundary slicing on hostile input).
fn line_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let before = &text.as_bytes()[..r.start.min(text.len())];
            format!(
                " (line {})",
                1 + before.iter().filter(|&&b| b == b'\n').count()
            )
        }
        None => String::new(),
    }
}

// === Sections of `Config::from_raw` (each records its problems through `p`) ===

/// `AGENT_LOG_FORMAT`: text (default) or json.
fn parse_log_format(v: Option<&str>, p: &mut impl FnMut(&str, String)) -> LogFormat {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p(
                "AGENT_LOG_FORMAT",
                format!("'{other}' is not one of: text, json"),
            );
            LogFormat::Text
        }
    }
}

/// `FEATURE_DATABASE_TYPE`, as the app reads it: sqlite (default) or postgresql.
fn parse_database_type(v: Option<&str>, p: &mut impl FnMut(&str, String)) -> DatabaseType {
    match v.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("sqlite") => DatabaseType::Sqlite,
        Some("postgresql") => DatabaseType::Postgresql,
        Some(other) => {
            p(
                "FEATURE_DATABASE_TYPE",
                format!("'{other}' is not one of: sqlite, postgresql (as the app accepts)"),
            );
            DatabaseType::Sqlite
        }
    }
}

/// A DSN from `key`; a bad one is a problem under that key (the message never quotes it).
fn parse_dsn(key: &str, text: &str, p: &mut impl FnMut(&str, String)) -> Option<Dsn> {
    match Dsn::parse(text) {
        Ok(d) => Some(d),
        Err(e) => {
            p(key, format!("{e}"));
            None
        }
    }
}

/// The monitoring DSN and the key it came from: `AGENT_DATABASE_URL`, else the file
/// `AGENT_DATABASE_URL_FILE` names, else the app's `DATABASE_URL`. None at all is not a
/// problem: with FEATURE_DATABASE_TYPE=postgresql it is the finding no_database_configured (a
/// crash loop would hide the app probes and the SQLite check too, and say less).
fn monitoring_dsn(
    url: Option<String>,
    url_file: Option<String>,
    app_url: Option<String>,
    p: &mut impl FnMut(&str, String),
) -> (Option<Dsn>, &'static str) {
    let mut dsn_text: Option<(String, &'static str)> = None;
    if let Some(u) = url {
        dsn_text = Some((u, "AGENT_DATABASE_URL"));
    } else if let Some(f) = url_file {
        match crate::files::read_to_string(Path::new(&f)) {
            Ok(t) => dsn_text = Some((t.trim().to_owned(), "AGENT_DATABASE_URL_FILE")),
            Err(e) => p("AGENT_DATABASE_URL_FILE", format!("cannot read {f}: {e}")),
        }
    } else if let Some(u) = app_url {
        dsn_text = Some((u, "DATABASE_URL"));
    }
    match dsn_text {
        Some((t, key)) => (parse_dsn(key, &t, p), key),
        None => (None, "AGENT_DATABASE_URL"),
    }
}

/// An http(s) URL setting (shown redacted, or not at all when it may hold credentials).
fn check_http_url(key: &str, u: &str, p: &mut impl FnMut(&str, String)) {
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        p(
            key,
            format!(
                "{} must start with http:// or https://",
                dsn::url_for_message(u)
            ),
        );
    }
}

/// The scheduling bounds: the interval's floor, the slow interval not shorter, a connect
/// timeout (every wait is bounded).
fn check_intervals(
    interval: Duration,
    slow_interval: Duration,
    connect_timeout: Duration,
    p: &mut impl FnMut(&str, String),
) {
    if interval < MIN_INTERVAL {
        p(
            "AGENT_INTERVAL",
            format!(
                "must be at least {}",
                humantime::format_duration(MIN_INTERVAL)
            ),
        );
    }
    if slow_interval < interval {
        p(
            "AGENT_SLOW_INTERVAL",
            "must not be shorter than AGENT_INTERVAL".into(),
        );
    }
    if connect_timeout.is_zero() {
        p(
            "AGENT_CONNECT_TIMEOUT",
            "must be greater than zero: every wait is bounded".into(),
        );
    }
}

/// The statement timeout's floor and the fit rule: a query on an open connection (the
/// statement timeout plus the client's margin) fits in one interval, so a database that stops
/// answering is reported within one. The connect timeout may be longer than a short interval
/// (a distant database needs several round trips to connect): a database that does not answer
/// a new connection is then reported after AGENT_CONNECT_TIMEOUT, and the next tick waits.
/// Sub-second intervals are for tests and soaks: there the smallest statement_timeout alone
/// (10ms, plus the client's margin) exceeds the interval, so the rule would make MIN_INTERVAL
/// unusable; a run that outlasts such an interval only delays the next tick (ticks are
/// delayed, never burst).
fn check_statement_timeout(
    interval: Duration,
    db: &DatabaseConfig,
    p: &mut impl FnMut(&str, String),
) {
    if db.statement_timeout < Duration::from_millis(10) {
        p(
            "AGENT_STATEMENT_TIMEOUT",
            "must be at least 10ms: 0 would disable the server-side bound".into(),
        );
    }
    if interval >= FIT_RULE_FROM && db.query_timeout() > interval {
        p(
            "AGENT_INTERVAL",
            format!(
                "{} is shorter than AGENT_STATEMENT_TIMEOUT (+10% margin) = {}: a database that stops answering would not be reported within one interval; raise the interval or lower the timeout",
                humantime::format_duration(interval),
                humantime::format_duration(round_ms(db.query_timeout()))
            ),
        );
    }
}

#[cfg(test)]
mod tests;
