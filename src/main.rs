//! The `cardinal` binary: parse the command line, run it, map the outcome to an exit status.
//! Usage errors exit 2 (clap's convention), unreadable input or failed output 1.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cardinal::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("cardinal=warn")),
        )
        .init();
    match cardinal::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cardinal: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
