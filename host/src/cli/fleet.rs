//! `disco fleet status|diff --reports DIR`: on the server, the reports nodes pushed back
//! (`DIR/NODE/*.json`, the report schema), one line per node or one line per changed path.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use crate::error::{Error, Result};
use crate::fleet;

/// How a fleet command prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum FleetFormat {
    /// One line per node (status) or per path (diff).
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// Arguments of `disco fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// What to show.
    #[command(subcommand)]
    pub what: FleetCommand,
}

/// The fleet's views.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// One line per node: last dance, age, noop or live, result, changes, failed modules; a
    /// node whose last report is older than two intervals is stale. Exits 0 when every node is
    /// fresh and ok, 1 otherwise.
    Status(StatusArgs),
    /// The newest noop report of every node, aggregated: each changed path with how many nodes
    /// change it identically and which do otherwise; failed modules grouped the same way.
    Diff(DiffArgs),
}

/// Arguments of `disco fleet status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The reports folder: DIR/NODE/ID.json.
    #[arg(long, value_name = "DIR")]
    pub reports: PathBuf,
    /// How often nodes dance, in minutes (the timer's interval).
    #[arg(long, value_name = "MINUTES", default_value_t = 30)]
    pub interval: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: FleetFormat,
}

/// Arguments of `disco fleet diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The reports folder: DIR/NODE/ID.json.
    #[arg(long, value_name = "DIR")]
    pub reports: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: FleetFormat,
}

fn print(text: &str) -> Result<()> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(Error::Write)
}

fn json<T: serde::Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

pub(super) fn exec(args: FleetArgs) -> Result<ExitCode> {
    let mut skipped = Vec::new();
    let code = match args.what {
        FleetCommand::Status(a) => {
            let nodes = fleet::read_nodes(&a.reports)?;
            let now = crate::dance::report::unix_ms();
            let status = fleet::fleet_status(&nodes, now, a.interval * 60, &mut skipped);
            match a.format {
                FleetFormat::Json => print(&json(&serde_json::json!({
                    "schema_version": 1,
                    "kind": "fleet_status",
                    "nodes": status,
                })))?,
                FleetFormat::Text => {
                    let mut out = String::new();
                    for s in &status {
                        out.push_str(&match &s.last {
                            None => format!("{}: stale: no readable report\n", s.node),
                            Some(id) => format!(
                                "{}: {} {}s ago, {}, {}, {} change(s){}{}\n",
                                s.node,
                                id,
                                s.age_s.unwrap_or(0),
                                if s.noop == Some(true) { "noop" } else { "live" },
                                if s.ok { "ok" } else { "failed" },
                                s.changes,
                                if s.failed_modules.is_empty() {
                                    String::new()
                                } else {
                                    format!(", failed: {}", s.failed_modules.join(", "))
                                },
                                if s.stale { ", STALE" } else { "" }
                            ),
                        });
                    }
                    print(&out)?;
                }
            }
            if status.iter().all(|s| s.ok && !s.stale) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(crate::error::EXIT_FAILURE)
            }
        }
        FleetCommand::Diff(a) => {
            let nodes = fleet::read_nodes(&a.reports)?;
            let diff = fleet::fleet_diff(&nodes, &mut skipped);
            match a.format {
                FleetFormat::Json => print(&json(&serde_json::json!({
                    "schema_version": 1,
                    "kind": "fleet_diff",
                    "diff": diff,
                })))?,
                FleetFormat::Text => print(&diff.render_text())?,
            }
            ExitCode::SUCCESS
        }
    };
    for s in skipped {
        crate::output::warning(&format!("not a dance report: {s}"));
    }
    Ok(code)
}
