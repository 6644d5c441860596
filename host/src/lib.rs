//! disco: dead-simple configuration management, built on a Survivor fix-module host.
//!
//! [`run`] is the whole program: parse the command line, set up logging, dispatch to one
//! subcommand, and turn its outcome into an exit status. Each subcommand lives in `cli/`, and the
//! engines it calls live in modules named after their pipeline stage.

pub mod cli;
pub mod diff;
pub mod error;
pub mod output;
pub mod sandbox;
pub mod supervise;
pub mod sys;

use std::process::ExitCode;

/// Runs `disco` with the process's arguments and returns its exit status.
pub fn run() -> ExitCode {
    use clap::Parser;
    let args = cli::Cli::parse();
    output::init(&args.global);
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            output::error(&format!("{err:#}"));
            ExitCode::from(err.exit_code())
        }
    }
}
