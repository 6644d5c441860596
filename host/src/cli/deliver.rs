//! `disco __deliver SRC... -- DST`: run inside a module's sandbox to deliver its files.
//! Internal: the dance builds this command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::error::{Error, Result};

/// Arguments of `disco __deliver`.
#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// Trees to copy, in order (later wins).
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// Where to copy them (`/`).
    #[arg(long, default_value = "/")]
    pub to: PathBuf,
}

pub(super) fn exec(args: DeliverArgs) -> Result<ExitCode> {
    for src in &args.sources {
        if src.is_dir() {
            crate::dance::deliver::deliver(src, &args.to)
                .map_err(|e| Error::Other(format!("deliver {}: {e}", src.display())))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
