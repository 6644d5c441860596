//! `disco diff [RUN]`: what a sandbox run's scratch layers would change, in the seed's format;
//! after a noop dance (newer than the latest `disco shell`), what that dance would change.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::dance::report::{self, DanceReport};
use crate::diff::{self, DiffOptions, Layer};
use crate::error::{Error, Result};
use crate::sandbox::{run, RunInfo};

/// How to print a diff.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// `info: File: …` lines, then content changes in normal diff format.
    #[default]
    Text,
    /// One JSON document of the report schema (`doc/report.schema.json`, kind `diff`).
    Json,
}

/// Arguments of `disco diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The run to report: a `disco shell` run or a dance's id (default: the latest of the
    /// latest shell run and the latest noop dance).
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

/// The latest noop dance, when it is newer than the latest shell run (or asked for by id).
fn dance_asked(args: &DiffArgs, state: &std::path::Path) -> Option<DanceReport> {
    let shell = run::load(state, args.run.as_deref());
    match (&args.run, &shell) {
        (Some(id), Err(_)) => report::load(state, Some(id)).ok(),
        (None, _) => report::load(state, None).ok().filter(|d| {
            d.noop
                && shell
                    .as_ref()
                    .map_or(true, |info| d.started_unix >= info.created)
        }),
        (Some(_), Ok(_)) => None,
    }
}

pub(super) fn exec(args: DiffArgs, global: &super::GlobalArgs) -> Result<ExitCode> {
    let (id, changes): (String, Vec<crate::diff::Change>) =
        match dance_asked(&args, &global.state_dir) {
            Some(dance) => (
                dance.id.clone(),
                dance.modules.into_iter().flat_map(|m| m.paths).collect(),
            ),
            None => {
                let info = run::load(&global.state_dir, args.run.as_deref())?;
                let opts = DiffOptions {
                    names_root: info.root.clone(),
                    ..DiffOptions::default()
                };
                let changes =
                    diff::compute(&layers_of(&info), &opts).map_err(|source| Error::Diff {
                        run: info.id.clone(),
                        source,
                    })?;
                (info.id, changes)
            }
        };
    let out = match args.format {
        DiffFormat::Text => diff::render_text(&changes),
        DiffFormat::Json => crate::dance::schema::diff_json(&id, &changes),
    };
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(Error::Write)?;
    Ok(ExitCode::SUCCESS)
}
