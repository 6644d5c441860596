//! `disco diff [RUN]`: what a sandbox run's scratch layers would change, in the seed's format.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::diff::{self, DiffOptions, Layer};
use crate::error::{Error, Result};
use crate::sandbox::{run, RunInfo};

/// How to print a diff.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// `info: File: …` lines, then content changes in normal diff format.
    #[default]
    Text,
    /// One JSON object a line, one per path.
    Json,
}

/// Arguments of `disco diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The run to report (default: the latest).
    pub run: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: DiffFormat,
}

/// The layers of a run, for the diff: each scratch layer against the live directory beneath.
pub fn layers_of(info: &RunInfo) -> Vec<Layer> {
    info.layers
        .iter()
        .map(|l| Layer {
            upper: l.upper.clone(),
            lower: l.lower.clone(),
            mount_point: l.mount_point.clone(),
        })
        .collect()
}

pub(super) fn exec(args: DiffArgs, global: &super::GlobalArgs) -> Result<ExitCode> {
    let info = run::load(&global.state_dir, args.run.as_deref())
        .map_err(|e| Error::Other(e.to_string()))?;
    let opts = DiffOptions {
        names_root: info.root.clone(),
        ..DiffOptions::default()
    };
    let changes = diff::compute(&layers_of(&info), &opts)
        .map_err(|e| Error::Other(format!("run {}: {e}", info.id)))?;
    let text = match args.format {
        DiffFormat::Text => diff::render_text(&changes),
        DiffFormat::Json => diff::render_json(&changes).map_err(|e| Error::Other(e.to_string()))?,
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(Error::Write)?;
    Ok(ExitCode::SUCCESS)
}
