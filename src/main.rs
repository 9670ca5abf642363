//! The `cardinal` binary: parse the command line, run it, map the outcome to an exit status.
//! Usage errors exit 2 (clap's convention), unreadable input, failed output or an
//! unusable checkpoint 1.

#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cardinal::cli::parse();
    // Rust's stdout silently drops writes to a closed descriptor, and the next file
    // opened would take its number: refuse before anything is opened or lost.
    if cli.command.writes_to_stdout() && STDOUT_CLOSED_AT_START.load(Ordering::Relaxed) {
        cardinal::say!("cardinal: error: cannot write results: stdout is closed");
        return ExitCode::from(1);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // Its fallback for a failed write is eprintln!, which panics on a full stderr.
        .log_internal_errors(false)
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(cli.command.default_log_filter())),
        )
        .init();
    match cardinal::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            cardinal::say!("cardinal: error: {}", cardinal::cli::describe(&e));
            let usage = e.downcast_ref::<cardinal::cli::UsageError>().is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Whether the process started with stdout closed (`cardinal count f >&-`).
static STDOUT_CLOSED_AT_START: AtomicBool = AtomicBool::new(false);

/// Runs before Rust's runtime, which reopens closed standard descriptors on
/// /dev/null and so hides a closed stdout from every later check.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static CHECK_STDOUT: extern "C" fn() = {
    extern "C" fn check() {
        // SAFETY: F_GETFD on a descriptor number only reads the descriptor table.
        let closed = unsafe { libc::fcntl(1, libc::F_GETFD) } == -1;
        STDOUT_CLOSED_AT_START.store(closed, Ordering::Relaxed);
    }
    check
};
