//! The `agent` binary: parses the command line, loads configuration, and dispatches. Exit codes:
//! 0 success, 64 unusable configuration (EX_USAGE), 1 runtime failure.

use std::process::ExitCode;

use clap::Parser;
use rose_agent::cli::{Cli, Command};
use rose_agent::config::{Config, ProcessEnv};

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprint!("agent: {e}");
            return ExitCode::from(64);
        }
    };
    match cli.command {
        Command::Run(args) => {
            if args.print_config {
                print!("{}", config.effective_toml());
                return ExitCode::SUCCESS;
            }
            rose_agent::telemetry::init(config.agent.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("agent: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let cancel = tokio_util::sync::CancellationToken::new();
            match runtime.block_on(rose_agent::run::run(config, cancel)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
