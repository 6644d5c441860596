//! `disco __dance-sandbox SETUP`: the sandbox one dance runs all its modules in (see
//! `dance::sandbox`). Internal: the dance starts it and talks to it on stdin and stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::dance::sandbox;
use crate::error::Result;
use crate::sandbox::enter::EXIT_SANDBOX;
use crate::sandbox::SandboxError;

/// Arguments of `disco __dance-sandbox`.
#[derive(Debug, Args)]
pub struct DanceSandboxArgs {
    /// The dance's sandbox set-up (JSON).
    pub setup: PathBuf,
}

pub(super) fn exec(args: DanceSandboxArgs) -> Result<ExitCode> {
    let setup = sandbox::read_setup(&args.setup)?;
    // Nothing but 0, 1 and 2 (the dance's pipes) enters: the worker would otherwise hold
    // whatever the dance inherited for the dance's whole life, within reach of its children.
    // Closed before the cgroups are pinned, whose descriptors must stay.
    crate::sys::close_from_3().map_err(SandboxError::Descriptors)?;
    // Before the sandbox's namespaces: its `/sys` is read-only, so its modules' fixes reach
    // their cgroups through descriptors opened here (close-on-exec: no script inherits them).
    let supervisor = crate::supervise::Supervisor::pinned();
    match sandbox::sandbox_main(&setup, supervisor) {
        Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))),
        Err(e) => {
            crate::output::error(&format!("dance sandbox: {e}"));
            Ok(ExitCode::from(EXIT_SANDBOX as u8))
        }
    }
}
