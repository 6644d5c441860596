//! disco: dead-simple configuration management, built on a Survivor fix-module host.
//!
//! [`run`] is the whole program: parse the command line, set up logging, dispatch to one
//! subcommand, and turn its outcome into an exit status. Each subcommand lives in `cli/`, and the
//! engines it calls live in modules named after their pipeline stage.

pub mod apply;
pub mod cli;
pub mod dance;
pub mod diff;
pub mod error;
pub mod fleet;
pub mod output;
pub mod params;
pub mod prom;
pub mod sandbox;
pub mod serve;
pub mod supervise;
pub mod sys;
pub mod validate;

use std::process::ExitCode;

/// Runs `disco` with the process's arguments and returns its exit status.
pub fn run() -> ExitCode {
    use clap::Parser;
    // Nothing disco's caller left open passes on to what disco runs: only 0, 1 and 2 (the
    // protocol's own descriptors are opened later, and close on exec).
    if let Err(e) = sys::cloexec_inherited() {
        output::error(&format!("cannot close inherited descriptors: {e}"));
        return ExitCode::from(1);
    }
    let args = cli::Cli::parse_from(args_with_alias(std::env::args_os()));
    output::init(&args.global);
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            output::error(&format!("{err:#}"));
            ExitCode::from(err.exit_code())
        }
    }
}

/// The command line, with `disco-param ARGS` rewritten to `disco param ARGS`: templates and
/// scripts call `disco-param get ...` as in the original, through a link to this binary.
fn args_with_alias(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut args: Vec<_> = args.collect();
    let alias = args
        .first()
        .and_then(|argv0| std::path::Path::new(argv0).file_name())
        .is_some_and(|name| name == "disco-param");
    if alias {
        args.splice(0..1, ["disco".into(), "param".into()]);
    }
    args
}
