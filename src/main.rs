//! The `cardinal` binary: parse the command line, run it, map the outcome to an exit status.
//! Usage errors exit 2 (clap's convention), unreadable input, failed output or an
//! unusable checkpoint 1.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cardinal::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(cli.command.default_log_filter())),
        )
        .init();
    match cardinal::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cardinal: error: {e:#}");
            let usage = e.downcast_ref::<cardinal::cli::UsageError>().is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
