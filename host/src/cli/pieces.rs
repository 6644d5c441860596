//! `disco __pieces PLAN`: a module's files and scripts, run inside its sandbox. Internal: the
//! dance builds this command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::error::{Error, Result};

/// Arguments of `disco __pieces`.
#[derive(Debug, Args)]
pub struct PiecesArgs {
    /// The plan (JSON).
    pub plan: PathBuf,
}

pub(super) fn exec(args: PiecesArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.plan).map_err(|source| Error::Read {
        path: args.plan.clone(),
        source,
    })?;
    let plan: crate::dance::pieces::Plan = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("{}: {e}", args.plan.display())))?;
    crate::dance::pieces::run_inside(&plan).map_err(Error::Other)?;
    Ok(ExitCode::SUCCESS)
}
