//! `disco __sandbox SPEC -- COMMAND...`: the process that builds a sandbox and runs a command in
//! it. Internal: `Sandbox::command` builds this command line; users never type it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::error::{Error, Result};
use crate::sandbox::{enter, SandboxError, Spec};

/// Arguments of `disco __sandbox`.
#[derive(Debug, Args)]
pub struct SandboxInitArgs {
    /// The run's `spec.json`.
    pub spec: PathBuf,
    /// Working directory inside the sandbox.
    #[arg(long, default_value = "/")]
    pub cwd: PathBuf,
    /// The command to run inside.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

pub(super) fn exec(args: SandboxInitArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.spec).map_err(|source| Error::Read {
        path: args.spec.clone(),
        source,
    })?;
    let spec: Spec = serde_json::from_slice(&bytes).map_err(|e| SandboxError::Setup {
        path: args.spec.clone(),
        source: e.into(),
    })?;
    match enter::enter(&spec, &args.command, &args.cwd) {
        Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))),
        Err(e) => {
            crate::output::error(&format!("sandbox: {e}"));
            Ok(ExitCode::from(enter::EXIT_SANDBOX as u8))
        }
    }
}
