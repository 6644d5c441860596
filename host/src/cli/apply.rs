//! `disco __apply --upper DIR --live DIR`: merge one scratch layer onto a folder, journaled, as a
//! live dance does after a module. Internal: for benchmarks and for recovering by hand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::error::{Error, Result};

/// Arguments of `disco __apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The scratch layer (an overlay upper folder).
    #[arg(long)]
    pub upper: PathBuf,
    /// The live folder beneath it.
    #[arg(long)]
    pub live: PathBuf,
    /// Keep no undo record (what a dance with `--keep-undo 0` does).
    #[arg(long)]
    pub no_undo: bool,
}

pub(super) fn exec(args: ApplyArgs, global: &super::GlobalArgs) -> Result<ExitCode> {
    let name = format!("apply-{}", std::process::id());
    let live = args.live.canonicalize().map_err(|source| Error::Read {
        path: args.live.clone(),
        source,
    })?;
    let _lock = crate::apply::lock::lock_root_path(&live, true)?;
    let applied = crate::apply::apply(
        &global.state_dir,
        &name,
        "(by hand)",
        &name,
        &live,
        &[(args.upper, PathBuf::new())],
        crate::apply::After {
            no_undo: args.no_undo,
            ..crate::apply::After::default()
        },
    )?;
    for w in &applied.warnings {
        crate::output::warning(w);
    }
    crate::output::info(&format!("merged {} path(s)", applied.paths));
    Ok(ExitCode::SUCCESS)
}
