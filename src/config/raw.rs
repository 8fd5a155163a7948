//! The first stage of configuration: what the user wrote, unvalidated. The TOML file is read
//! into [`RawConfig`] (unknown keys rejected), then each environment variable the agent or the app
//! knows overrides its field. Nothing here judges values; [`super::Config::from_raw`] does, and
//! reports every problem at once.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A source of environment variables: the process environment, or a map in tests.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;

    /// The names of every variable set, for reporting the ones the agent does not read (see
    /// `config::vars`). Values are never read through this.
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The real process environment. Empty values count as unset, as pydantic-settings does for
/// optional fields.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.trim().is_empty())
    }

    fn names(&self) -> Vec<String> {
        std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key)
            .cloned()
            .filter(|v| !v.trim().is_empty())
    }

    fn names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

impl Env for HashMap<&str, &str> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key)
            .map(|v| (*v).to_owned())
            .filter(|v| !v.trim().is_empty())
    }

    fn names(&self) -> Vec<String> {
        self.keys().map(|k| (*k).to_owned()).collect()
    }
}

/// The whole configuration file. Every section is optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub(crate) agent: RawAgent,
    #[serde(default)]
    pub(crate) database: RawDatabase,
    #[serde(default)]
    pub(crate) app: RawApp,
    #[serde(default)]
    pub(crate) checks: RawChecks,
    #[serde(default)]
    pub(crate) findings: super::silence::RawFindings,
}

/// `[agent]`: how the agent itself runs.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    /// Address of `/metrics`, `/healthz`, `/readyz` (env `AGENT_LISTEN`; default `0.0.0.0:9188`).
    pub(crate) listen: Option<String>,
    /// How often the cheap checks run, humantime (env `AGENT_INTERVAL`; default `15s`).
    pub(crate) interval: Option<String>,
    /// How often the expensive checks (sizes, statements) run (env `AGENT_SLOW_INTERVAL`;
    /// default four times `interval`).
    pub(crate) slow_interval: Option<String>,
    /// How long shutdown may drain before it is forced (env `AGENT_SHUTDOWN_GRACE`; default `5s`).
    pub(crate) shutdown_grace: Option<String>,
    /// `text` or `json` (env `AGENT_LOG_FORMAT`; default `text`).
    pub(crate) log_format: Option<String>,
    /// Evaluation cycles a finding must be seen before it is active (env
    /// `AGENT_FINDING_PENDING_CYCLES`; default 2).
    pub(crate) finding_pending_cycles: Option<i64>,
    /// Clean cycles before an active finding resolves (env `AGENT_FINDING_RESOLVE_CYCLES`; default 2).
    pub(crate) finding_resolve_cycles: Option<i64>,
    /// Alertmanager to push active findings to, e.g. `http://127.0.0.1:9093` (env
    /// `AGENT_ALERTMANAGER_URL`; default: no push).
    pub(crate) alertmanager_url: Option<String>,
    /// The `instance` label of pushed alerts (env `AGENT_INSTANCE`; default `<hostname>:<port>`).
    pub(crate) instance: Option<String>,
    /// Where `docs/runbooks/` is published; pushed alerts link `<base>/<code>.md`, like the rules'
    /// `rose_runbook_base` (env `AGENT_RUNBOOK_BASE_URL`; default
    /// `https://github.com/rose-agent/rose-agent/blob/main/docs/runbooks`).
    pub(crate) runbook_base_url: Option<String>,
    /// exporter-toolkit style web config (TLS, basic auth, bearer token) for the agent's own
    /// endpoint (env `AGENT_WEB_CONFIG_FILE`; default: plain HTTP, no auth).
    pub(crate) web_config_file: Option<String>,
    /// How long a client has to send a request's header on the agent's endpoint, counted from
    /// the connection's start (TLS handshake included) or from the previous response; it is
    /// also the keep-alive idle timeout (env `AGENT_WEB_HEADER_TIMEOUT`; default `5s`).
    pub(crate) web_header_timeout: Option<String>,
    /// Most connections the endpoint holds open at once; further capped by the open-files limit
    /// (env `AGENT_WEB_MAX_CONNECTIONS`; default 64).
    pub(crate) web_max_connections: Option<i64>,
    /// Run the database-wide checks only on the agent of a fleet that holds the PostgreSQL
    /// advisory lock (env `AGENT_LEADER_ELECTION`: on/off; default on). Off: every agent runs
    /// every check.
    pub(crate) leader_election: Option<bool>,
    /// The advisory lock key the fleet elects its leader with (env `AGENT_LEADER_LOCK_KEY`;
    /// default 5940093311915222900, `0x526F73652D616774`, "Rose-agt"). Fleets watching the same
    /// database for different apps need different keys.
    pub(crate) leader_lock_key: Option<i64>,
}

/// `[database]`: how the agent reaches PostgreSQL.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    /// Monitoring DSN (env `AGENT_DATABASE_URL`); falls back to the app's `DATABASE_URL`.
    pub(crate) url: Option<String>,
    /// File holding the monitoring DSN (env `AGENT_DATABASE_URL_FILE`).
    pub(crate) url_file: Option<String>,
    /// Read replica DSN (env `DATABASE_READ_REPLICA_URL`, the app's name).
    pub(crate) replica_url: Option<String>,
    /// Bound on DNS + TCP + TLS + authentication (env `AGENT_CONNECT_TIMEOUT`; default `3s`).
    pub(crate) connect_timeout: Option<String>,
    /// Session `statement_timeout`; the client gives up shortly after (env
    /// `AGENT_STATEMENT_TIMEOUT`; default `5s`).
    pub(crate) statement_timeout: Option<String>,
    /// Session `lock_timeout` (env `AGENT_LOCK_TIMEOUT`; default `1s`).
    pub(crate) lock_timeout: Option<String>,
}

/// `[app]`: the app's own settings, read under the names the app reads them.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApp {
    /// The app's DSN (env `DATABASE_URL`).
    pub(crate) database_url: Option<String>,
    /// `sqlite` or `postgresql` (env `FEATURE_DATABASE_TYPE`; default `sqlite`, as the app).
    pub(crate) database_type: Option<String>,
    /// Pool size per app instance (env `DATABASE_POOL_SIZE`; default 10).
    pub(crate) pool_size: Option<i64>,
    /// Pool overflow per app instance (env `DATABASE_MAX_OVERFLOW`; default 20).
    pub(crate) max_overflow: Option<i64>,
    /// How many app instances share the database (env `AGENT_APP_INSTANCES`; default 1).
    pub(crate) instances: Option<i64>,
    /// `max_size` of the psycopg pool behind LangGraph's (Async)PostgresSaver, per app instance
    /// (env `AGENT_CHECKPOINTER_POOL_MAX_SIZE`; default: not counted in the budget).
    pub(crate) checkpointer_pool_max_size: Option<i64>,
    /// The SQLite checkpointer file (env `SHORT_TERM_MEMORY_DB_PATH`).
    pub(crate) sqlite_path: Option<String>,
    /// Base URL of the app's HTTP API (env `APP_BASE_URL`; default `http://127.0.0.1:8080`).
    pub(crate) base_url: Option<String>,
    /// Probe the app at all (env `AGENT_APP_PROBES`: on/off; default on).
    pub(crate) probes_enabled: Option<bool>,
    /// Interval of the default health probe (env `AGENT_APP_PROBE_INTERVAL`; default `15s`).
    pub(crate) probe_interval: Option<String>,
    /// Timeout of every probe without its own (env `AGENT_APP_PROBE_TIMEOUT`; default `2s`).
    pub(crate) probe_timeout: Option<String>,
    /// Health path and fallbacks, comma-separated (env `AGENT_APP_HEALTH_PATHS`; default
    /// `/api/health,/api/v1/health`).
    pub(crate) health_paths: Option<String>,
    /// Bearer token file for the default health probe (env `AGENT_APP_BEARER_TOKEN_FILE`).
    pub(crate) bearer_token_file: Option<String>,
    /// How far back checkpoint growth is judged (env `AGENT_CHECKPOINT_GROWTH_WINDOW`;
    /// default `10m`).
    pub(crate) growth_window: Option<String>,
    /// After a PostgreSQL restart the app must answer healthy within this (env
    /// `AGENT_APP_RECOVERY_TIMEOUT`; default `60s`), else `app_not_recovered`.
    pub(crate) recovery_timeout: Option<String>,
    /// `[[app.probes]]`: replaces the default health probe. See `config::probes`.
    pub(crate) probes: Option<Vec<super::probes::RawProbe>>,
}

/// `[checks]`: thresholds and limits of the PostgreSQL checks.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChecks {
    /// An active query older than this counts as slow (env `AGENT_SLOW_QUERY_THRESHOLD`;
    /// default `2s`, the guide's "response times >2s").
    pub(crate) slow_query_threshold: Option<String>,
    /// Idle in a transaction longer than this is a finding (env
    /// `AGENT_IDLE_IN_TRANSACTION_THRESHOLD`; default `60s`).
    pub(crate) idle_in_transaction_threshold: Option<String>,
    /// How many application names and roles get their own label value; the rest are summed as
    /// `other` (env `AGENT_LABELS_TOP_N`; default 5).
    pub(crate) labels_top_n: Option<i64>,
    /// How many pg_stat_statements entries (by total and by mean time) get a `queryid` series
    /// (env `AGENT_STATEMENTS_TOP_N`; default 10).
    pub(crate) statements_top_n: Option<i64>,
    /// The database plan, for the connection budget: `starter` (22 connections) or `pro` (97)
    /// from the guide's Railway table (env `AGENT_PLAN`; default: the server's max_connections).
    pub(crate) plan: Option<String>,
    /// The plan's connection limit, overriding `plan` (env `AGENT_MAX_CONNECTIONS`).
    pub(crate) max_connections: Option<i64>,
    /// The database's storage limit, overriding the plan's (env `AGENT_STORAGE_LIMIT`): a size
    /// such as `1GB` (SI) or `10GiB` (IEC).
    pub(crate) storage_limit: Option<String>,
    /// Which LangGraph schema to expect: `auto` (detect full or shallow), `full`, `shallow` or
    /// `off` (env `AGENT_LANGGRAPH_SCHEMA`; default `auto`).
    pub(crate) langgraph_schema: Option<String>,
    /// The PostgreSQL schema holding LangGraph's tables (env `AGENT_LANGGRAPH_SCHEMA_NAME`;
    /// default: detected, preferring the app DATABASE_URL's `options=-c search_path=...`).
    pub(crate) langgraph_schema_name: Option<String>,
    /// A TOML file listing another app's expected tables, columns and indexes (env
    /// `AGENT_SCHEMA_EXPECTATIONS`).
    pub(crate) expectations_file: Option<String>,
    /// Show other sessions' raw SQL, literals included, in `/findings` and `agent diagnose`
    /// (env `AGENT_RAW_QUERY_TEXT`: on/off; default off: normalized text and query_id only).
    /// Never in logs or pushed alerts.
    pub(crate) raw_query_text: Option<bool>,
}

/// A problem found while reading or validating: the key as the user wrote it, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Every environment variable the configuration reads: here by [`RawConfig::overlay_env`], and
/// the OpenTelemetry ones by `config::otel`. Unknown `AGENT_*` variables are judged against this
/// list (`config::vars`); a test records what the reader asks for and fails when the two differ,
/// so a variable added to the reader must be added here.
pub(crate) const VARIABLES: &[&str] = &[
    // [agent]
    "AGENT_LISTEN",
    "AGENT_INTERVAL",
    "AGENT_SLOW_INTERVAL",
    "AGENT_SHUTDOWN_GRACE",
    "AGENT_LOG_FORMAT",
    "AGENT_FINDING_PENDING_CYCLES",
    "AGENT_FINDING_RESOLVE_CYCLES",
    "AGENT_ALERTMANAGER_URL",
    "AGENT_INSTANCE",
    "AGENT_RUNBOOK_BASE_URL",
    "AGENT_WEB_CONFIG_FILE",
    "AGENT_WEB_HEADER_TIMEOUT",
    "AGENT_WEB_MAX_CONNECTIONS",
    "AGENT_LEADER_ELECTION",
    "AGENT_LEADER_LOCK_KEY",
    // [database]
    "AGENT_DATABASE_URL",
    "AGENT_DATABASE_URL_FILE",
    "DATABASE_READ_REPLICA_URL",
    "AGENT_CONNECT_TIMEOUT",
    "AGENT_STATEMENT_TIMEOUT",
    "AGENT_LOCK_TIMEOUT",
    // [app], under the app's own names where it has them
    "DATABASE_URL",
    "FEATURE_DATABASE_TYPE",
    "DATABASE_POOL_SIZE",
    "DATABASE_MAX_OVERFLOW",
    "AGENT_APP_INSTANCES",
    "AGENT_CHECKPOINTER_POOL_MAX_SIZE",
    "SHORT_TERM_MEMORY_DB_PATH",
    "APP_BASE_URL",
    "AGENT_APP_PROBES",
    "AGENT_APP_PROBE_INTERVAL",
    "AGENT_APP_PROBE_TIMEOUT",
    "AGENT_APP_HEALTH_PATHS",
    "AGENT_APP_BEARER_TOKEN_FILE",
    "AGENT_CHECKPOINT_GROWTH_WINDOW",
    "AGENT_APP_RECOVERY_TIMEOUT",
    // [checks]
    "AGENT_SLOW_QUERY_THRESHOLD",
    "AGENT_IDLE_IN_TRANSACTION_THRESHOLD",
    "AGENT_LABELS_TOP_N",
    "AGENT_STATEMENTS_TOP_N",
    "AGENT_PLAN",
    "AGENT_MAX_CONNECTIONS",
    "AGENT_STORAGE_LIMIT",
    "AGENT_LANGGRAPH_SCHEMA",
    "AGENT_LANGGRAPH_SCHEMA_NAME",
    "AGENT_SCHEMA_EXPECTATIONS",
    "AGENT_RAW_QUERY_TEXT",
    // [findings] (config::silence)
    "AGENT_DISABLED_CHECKS",
    "AGENT_DISABLED_CODES",
    "AGENT_SILENCE",
    // OpenTelemetry export (config::otel)
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
];

impl RawConfig {
    /// Overrides file values with environment variables. Integer variables that do not parse
    /// are reported and left unset, so validation can go on and report the rest.
    pub(crate) fn overlay_env(&mut self, env: &dyn Env, problems: &mut Vec<Problem>) {
        let s = |k: &str| env.get(k);
        set(&mut self.agent.listen, s("AGENT_LISTEN"));
        set(&mut self.agent.interval, s("AGENT_INTERVAL"));
        set(&mut self.agent.slow_interval, s("AGENT_SLOW_INTERVAL"));
        set(&mut self.agent.shutdown_grace, s("AGENT_SHUTDOWN_GRACE"));
        set(&mut self.agent.log_format, s("AGENT_LOG_FORMAT"));
        set(
            &mut self.agent.alertmanager_url,
            s("AGENT_ALERTMANAGER_URL"),
        );
        set(&mut self.agent.instance, s("AGENT_INSTANCE"));
        set(&mut self.agent.web_config_file, s("AGENT_WEB_CONFIG_FILE"));
        set(
            &mut self.agent.web_header_timeout,
            s("AGENT_WEB_HEADER_TIMEOUT"),
        );
        set(
            &mut self.agent.runbook_base_url,
            s("AGENT_RUNBOOK_BASE_URL"),
        );
        // The agent's own DSN: env wins over file, and the plain form over the file form.
        if let Some(u) = s("AGENT_DATABASE_URL") {
            self.database.url = Some(u);
            if s("AGENT_DATABASE_URL_FILE").is_some() {
                problems.push(Problem {
                    key: "AGENT_DATABASE_URL_FILE".into(),
                    message: "is set together with AGENT_DATABASE_URL: set only one".into(),
                });
            }
        } else if let Some(f) = s("AGENT_DATABASE_URL_FILE") {
            self.database.url = None;
            self.database.url_file = Some(f);
        }
        set(
            &mut self.database.replica_url,
            s("DATABASE_READ_REPLICA_URL"),
        );
        set(
            &mut self.database.connect_timeout,
            s("AGENT_CONNECT_TIMEOUT"),
        );
        set(
            &mut self.database.statement_timeout,
            s("AGENT_STATEMENT_TIMEOUT"),
        );
        set(&mut self.database.lock_timeout, s("AGENT_LOCK_TIMEOUT"));
        set(&mut self.app.database_url, s("DATABASE_URL"));
        set(&mut self.app.database_type, s("FEATURE_DATABASE_TYPE"));
        set(&mut self.app.sqlite_path, s("SHORT_TERM_MEMORY_DB_PATH"));
        set(&mut self.app.base_url, s("APP_BASE_URL"));
        set(
            &mut self.checks.slow_query_threshold,
            s("AGENT_SLOW_QUERY_THRESHOLD"),
        );
        set(&mut self.checks.plan, s("AGENT_PLAN"));
        set(&mut self.checks.storage_limit, s("AGENT_STORAGE_LIMIT"));
        set(
            &mut self.checks.idle_in_transaction_threshold,
            s("AGENT_IDLE_IN_TRANSACTION_THRESHOLD"),
        );
        set(
            &mut self.checks.langgraph_schema,
            s("AGENT_LANGGRAPH_SCHEMA"),
        );
        set(
            &mut self.checks.langgraph_schema_name,
            s("AGENT_LANGGRAPH_SCHEMA_NAME"),
        );
        set(
            &mut self.checks.expectations_file,
            s("AGENT_SCHEMA_EXPECTATIONS"),
        );
        set(&mut self.app.probe_interval, s("AGENT_APP_PROBE_INTERVAL"));
        set(&mut self.app.probe_timeout, s("AGENT_APP_PROBE_TIMEOUT"));
        set(&mut self.app.health_paths, s("AGENT_APP_HEALTH_PATHS"));
        set(
            &mut self.app.bearer_token_file,
            s("AGENT_APP_BEARER_TOKEN_FILE"),
        );
        set(
            &mut self.app.growth_window,
            s("AGENT_CHECKPOINT_GROWTH_WINDOW"),
        );
        set(
            &mut self.app.recovery_timeout,
            s("AGENT_APP_RECOVERY_TIMEOUT"),
        );
        if let Some(v) = s("AGENT_RAW_QUERY_TEXT") {
            match v.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" | "yes" => self.checks.raw_query_text = Some(true),
                "off" | "false" | "0" | "no" => self.checks.raw_query_text = Some(false),
                _ => problems.push(Problem {
                    key: "AGENT_RAW_QUERY_TEXT".into(),
                    message: format!("'{}' is not one of: on, off", v.trim()),
                }),
            }
        }
        if let Some(v) = s("AGENT_LEADER_ELECTION") {
            match v.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" | "yes" => self.agent.leader_election = Some(true),
                "off" | "false" | "0" | "no" => self.agent.leader_election = Some(false),
                _ => problems.push(Problem {
                    key: "AGENT_LEADER_ELECTION".into(),
                    message: format!("'{}' is not one of: on, off", v.trim()),
                }),
            }
        }
        if let Some(v) = s("AGENT_APP_PROBES") {
            match v.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" | "yes" => self.app.probes_enabled = Some(true),
                "off" | "false" | "0" | "no" => self.app.probes_enabled = Some(false),
                _ => problems.push(Problem {
                    key: "AGENT_APP_PROBES".into(),
                    message: format!("'{}' is not one of: on, off", v.trim()),
                }),
            }
        }
        for (key, field) in [
            ("DATABASE_POOL_SIZE", &mut self.app.pool_size),
            ("DATABASE_MAX_OVERFLOW", &mut self.app.max_overflow),
            ("AGENT_APP_INSTANCES", &mut self.app.instances),
            (
                "AGENT_CHECKPOINTER_POOL_MAX_SIZE",
                &mut self.app.checkpointer_pool_max_size,
            ),
            ("AGENT_LEADER_LOCK_KEY", &mut self.agent.leader_lock_key),
            ("AGENT_LABELS_TOP_N", &mut self.checks.labels_top_n),
            ("AGENT_STATEMENTS_TOP_N", &mut self.checks.statements_top_n),
            ("AGENT_MAX_CONNECTIONS", &mut self.checks.max_connections),
            (
                "AGENT_WEB_MAX_CONNECTIONS",
                &mut self.agent.web_max_connections,
            ),
            (
                "AGENT_FINDING_PENDING_CYCLES",
                &mut self.agent.finding_pending_cycles,
            ),
            (
                "AGENT_FINDING_RESOLVE_CYCLES",
                &mut self.agent.finding_resolve_cycles,
            ),
        ] {
            if let Some(v) = s(key) {
                match v.trim().parse::<i64>() {
                    Ok(n) => *field = Some(n),
                    Err(_) => problems.push(Problem {
                        key: key.into(),
                        message: format!("'{}' is not a whole number", v.trim()),
                    }),
                }
            }
        }
    }
}

fn set(field: &mut Option<String>, value: Option<String>) {
    if value.is_some() {
        *field = value;
    }
}
