//! Command-line interface (clap derive). Only subcommands that work are exposed.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Keeps the PostgreSQL-backed Rose app healthy: watches PostgreSQL and the app, exports
/// Prometheus metrics, and says what to do when something is wrong.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about, after_help = FIRST_RUN)]
pub struct Cli {
    /// Configuration file (TOML); environment variables override it.
    #[arg(
        long,
        short = 'c',
        env = "AGENT_CONFIG",
        global = true,
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What `--help` adds: the variables a first run needs and the endpoints.
pub(crate) const FIRST_RUN: &str = "\
A first run needs:
  AGENT_DATABASE_URL      DSN of the monitoring role (or AGENT_DATABASE_URL_FILE; without
                          either, the app's DATABASE_URL), e.g.
                          postgresql://rose_monitor:PASSWORD@HOST:5432/railway?sslmode=require
  FEATURE_DATABASE_TYPE   postgresql or sqlite, as the app (default sqlite)
  APP_BASE_URL            the app's HTTP API to probe (default http://127.0.0.1:8080)
  AGENT_LISTEN            where the endpoint listens (default 0.0.0.0:9188)
  AGENT_WEB_CONFIG_FILE   TLS and credentials of the endpoint (optional)

Endpoints of `agent run`:
  /            status page for people (HTML)      /status    the same summary (JSON)
  /findings    what is wrong and what to do (JSON)
  /metrics     Prometheus                          /healthz   liveness   /readyz  readiness

Every variable: README.md (Configuration); `agent run --print-config` shows the effective one.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the checks on their schedule and serve the status page (/), /findings, /metrics,
    /// /healthz and /readyz.
    ///
    /// Configuration comes from the environment (the app's own DATABASE_URL,
    /// FEATURE_DATABASE_TYPE, DATABASE_POOL_SIZE, DATABASE_MAX_OVERFLOW, ... and the agent's
    /// AGENT_*) and an optional TOML file. See README.md.
    #[command(after_help = FIRST_RUN)]
    Run(RunArgs),
    /// Run every check once, walking config -> DNS -> TCP -> TLS -> auth -> database ->
    /// privileges -> settings -> extensions -> schema -> activity -> app -> SQLite, and print what
    /// is wrong and what to do.
    ///
    /// Exit codes follow the Nagios plugin convention: 0 ok, 1 warning, 2 critical, 3 unknown
    /// (including unusable configuration).
    Diagnose(DiagnoseArgs),
    /// Print the running agent's status summary (what its status page shows).
    ///
    /// Asks the agent at AGENT_LISTEN, over HTTPS and with the bearer token of
    /// AGENT_WEB_CONFIG_FILE when it has them: overall status and why, findings with their
    /// steps, figures at a glance, every check.
    ///
    /// Exit codes follow the Nagios plugin convention, like `diagnose`: 0 ok, 1 warning,
    /// 2 critical, 3 unknown (including an agent that cannot be asked).
    Status(StatusArgs),
    /// GET the running agent's /healthz: exit 0 on 200, else 1 (the container HEALTHCHECK).
    ///
    /// For images without curl (deploy/Dockerfile). Follows the configuration: the address of
    /// AGENT_LISTEN (an unspecified address is asked on loopback) and HTTPS when
    /// AGENT_WEB_CONFIG_FILE has tls_server_config.
    Healthcheck(HealthcheckArgs),
}

/// Where and how `status` and `healthcheck` reach a running agent's endpoint.
#[derive(Debug, clap::Args)]
pub struct EndpointArgs {
    /// Address of the agent's endpoint (host:port); default: from AGENT_LISTEN.
    #[arg(long)]
    pub(crate) addr: Option<String>,
    /// Client certificate (PEM) for an endpoint whose web config asks for one
    /// (`client_auth_type: RequireAndVerifyClientCert`, mutual TLS); with --key.
    #[arg(
        long,
        value_name = "PATH",
        env = "AGENT_STATUS_CERT_FILE",
        requires = "key"
    )]
    pub(crate) cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(
        long,
        value_name = "PATH",
        env = "AGENT_STATUS_KEY_FILE",
        requires = "cert"
    )]
    pub(crate) key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    #[command(flatten)]
    pub(crate) endpoint: EndpointArgs,
    /// Upper bound on connect + request + answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Output format: text for people, json (the agent's /status) for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// No ANSI colours (they are off anyway when stdout is not a terminal).
    #[arg(long)]
    pub(crate) no_color: bool,
    #[command(flatten)]
    pub(crate) endpoint: EndpointArgs,
    /// A basic-auth user of the web config; its password comes from AGENT_STATUS_PASSWORD or
    /// --password-file (never the command line). Without it, the web config's bearer token is
    /// used when it has one.
    #[arg(long, env = "AGENT_STATUS_USER")]
    pub(crate) user: Option<String>,
    /// File holding the basic-auth password of --user.
    #[arg(long, value_name = "PATH")]
    pub(crate) password_file: Option<PathBuf>,
    /// Upper bound on connect + request + answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: std::time::Duration,
}

/// Output format of `diagnose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct DiagnoseArgs {
    /// Output format; the JSON shape is documented in docs/diagnose.md.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// No ANSI colours (they are off anyway when stdout is not a terminal).
    #[arg(long)]
    pub no_color: bool,
    /// Upper bound on the whole run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}
