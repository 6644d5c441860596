//! `disco __defer COMMAND ARGS...`: what a live sandbox's shim runs instead of a command that
//! acts on a running service. The command is recorded, to run for real after the module's
//! layer is merged (so a service restarts with its new configuration on disk). Internal.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use clap::Args;

use crate::error::{Error, Result};
use crate::sandbox::enter::DEFERRED;

/// Arguments of `disco __defer`.
#[derive(Debug, Args)]
pub struct DeferArgs {
    /// The command line to defer.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

pub(super) fn exec(args: DeferArgs) -> Result<ExitCode> {
    // Bytes, not text: arguments need not be UTF-8. One JSON array of byte strings a line.
    let words: Vec<String> = args
        .command
        .iter()
        .map(|w| String::from_utf8_lossy(w.as_bytes()).into_owned())
        .collect();
    let line = serde_json::to_string(&words)?;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(DEFERRED)
        .map_err(|source| Error::Defer {
            path: DEFERRED,
            source,
        })?;
    writeln!(f, "{line}").map_err(Error::Write)?;
    eprintln!("{}{}", crate::sandbox::shims::DEFERRED, words.join(" "));
    Ok(ExitCode::SUCCESS)
}
