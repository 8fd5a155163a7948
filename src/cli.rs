//! Command-line interface (clap derive). Only subcommands that work are exposed.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Keeps the PostgreSQL-backed Rose app healthy: watches PostgreSQL and the app, exports
/// Prometheus metrics, and says what to do when something is wrong.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about)]
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the checks on their schedule and serve /metrics, /healthz and /readyz.
    ///
    /// Configuration comes from the environment (the app's own DATABASE_URL,
    /// FEATURE_DATABASE_TYPE, DATABASE_POOL_SIZE, DATABASE_MAX_OVERFLOW, ... and the agent's
    /// AGENT_*) and an optional TOML file. See README.md.
    Run(RunArgs),
    /// Run every check once, walking config -> DNS -> TCP -> TLS -> auth -> database ->
    /// privileges -> settings -> extensions -> schema -> activity -> app -> SQLite, and print what
    /// is wrong and what to do.
    ///
    /// Exit codes follow the Nagios plugin convention: 0 ok, 1 warning, 2 critical, 3 unknown
    /// (including unusable configuration).
    Diagnose(DiagnoseArgs),
    /// GET the agent's /healthz over plain HTTP and exit 0 on 200, else 1: the container
    /// HEALTHCHECK of images without curl (deploy/Dockerfile).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// Address of the agent's endpoint (host:port).
    #[arg(long, default_value = "127.0.0.1:9188")]
    pub addr: String,
    /// Upper bound on connect + request + answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
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
