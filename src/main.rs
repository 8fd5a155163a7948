//! The `agent` binary: parses the command line, loads configuration, and dispatches. Exit codes:
//! `run`: 0 after a clean shutdown, 64 unusable configuration (EX_USAGE), 1 runtime failure;
//! `diagnose` and `status`: 0 ok, 1 warning, 2 critical, 3 unknown (Nagios plugin convention);
//! `healthcheck`: 0 healthy, 1 not.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use rose_agent::cli::{Cli, Command, DiagnoseArgs, Format};
use rose_agent::config::{Config, ProcessEnv};

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // The web config file is checked with the rest: a file the endpoint cannot build from is a
    // configuration error too. Built once: `run` serves with it.
    let loaded = Config::load(cli.config.as_deref(), &ProcessEnv)
        .and_then(|c| rose_agent::web::WebConfig::for_config(&c).map(|w| (c, w)));
    if loaded.is_err() {
        // A misspelled variable is often why the configuration is unusable: name it here too
        // (a valid configuration logs them at start, and diagnose reports them as findings).
        for u in rose_agent::config::vars::unknown(&ProcessEnv).0 {
            eprintln!("agent: note: {}", u.message());
        }
    }
    match cli.command {
        Command::Run(args) => {
            let (config, web) = match loaded {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprint!("agent: {e}");
                    return ExitCode::from(64);
                }
            };
            if args.print_config {
                print!("{}", config.effective_toml());
                return ExitCode::SUCCESS;
            }
            let cancel = tokio_util::sync::CancellationToken::new();
            match runtime().map(|rt| {
                rt.block_on(rose_agent::run::run_with_reload(
                    config,
                    web,
                    cli.config.clone(),
                    cancel,
                ))
            }) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) | Err(e) => {
                    eprintln!("agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Diagnose(args) => diagnose(loaded.map(|(c, _)| c), &args),
        Command::Status(args) => ExitCode::from(rose_agent::status::client::status_command(
            loaded.as_ref().map(|(c, _)| c),
            &args,
            std::io::stdout().is_terminal(),
        )),
        Command::Healthcheck(args) => ExitCode::from(
            rose_agent::status::client::healthcheck_command(loaded.as_ref().map(|(c, _)| c), &args),
        ),
    }
}

fn diagnose(
    config: Result<Config, rose_agent::config::ConfigError>,
    args: &DiagnoseArgs,
) -> ExitCode {
    let report = match config {
        Err(e) => rose_agent::diagnose::config_report(&e),
        Ok(c) => {
            match runtime() {
                Ok(rt) => rt.block_on(async {
                    // Logs only when asked for (stdout is the report); spans when OTLP is set.
                    let telemetry = (std::env::var_os("RUST_LOG").is_some() || c.otel.is_some())
                        .then(|| rose_agent::telemetry::init(&c));
                    let report = rose_agent::diagnose::diagnose(&c, args.timeout).await;
                    if let Some(t) = telemetry {
                        t.shutdown(std::time::Duration::from_secs(2)).await;
                    }
                    report
                }),
                Err(e) => {
                    eprintln!("agent: {e:#}");
                    return ExitCode::from(3);
                }
            }
        }
    };
    match args.format {
        Format::Json => println!("{}", report.to_json()),
        Format::Text => print!(
            "{}",
            report.to_text(!args.no_color && std::io::stdout().is_terminal())
        ),
    }
    ExitCode::from(report.exit_code())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
