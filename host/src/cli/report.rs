//! `disco report [ID]`: what each step of a dance cost and how it ended, in the seed's format,
//! the report schema's JSON, or (`--html FILE`) a timeline page.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::dance::report;
use crate::error::{Error, Result};

/// How to print a dance report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// `report: MODULE: STEP` blocks with GNU time's figures, then a summary.
    #[default]
    Text,
    /// The whole report as one JSON document of the report schema (`doc/report.schema.json`).
    Json,
}

/// Arguments of `disco report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The dance to report, by id (default: the latest; ids are the names of the files in
    /// STATE/reports).
    pub id: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ReportFormat,
    /// Also write the dance as a timeline (one self-contained HTML page) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
}

pub(super) fn exec(args: ReportArgs, global: &super::GlobalArgs) -> Result<ExitCode> {
    let dance = report::load(&global.state_dir, args.id.as_deref())?;
    if let Some(path) = &args.html {
        std::fs::write(path, crate::dance::html::render(&dance)).map_err(|source| {
            Error::WriteFile {
                path: path.clone(),
                source,
            }
        })?;
    }
    let rollbackable = crate::apply::undo::rollbackable(&global.state_dir, None);
    let text = match args.format {
        ReportFormat::Text => {
            let mut text = report::render_text(&dance);
            // The seed's format, plus one line once undo records are kept.
            if !rollbackable.is_empty() {
                text.push_str(&rollback_line(&dance, &rollbackable));
            }
            text
        }
        ReportFormat::Json => crate::dance::schema::dance_json_with(&dance, Some(&rollbackable)),
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(Error::Write)?;
    // The report was printed: that succeeded even when the dance it describes failed.
    Ok(ExitCode::SUCCESS)
}

/// The report's last line: whether this dance can be rolled back, and which can.
fn rollback_line(dance: &report::DanceReport, rollbackable: &[String]) -> String {
    let which = rollbackable.join(", ");
    let this = if dance.noop {
        "a noop dance changes nothing to roll back"
    } else if rollbackable.first() == Some(&dance.id) {
        "can be rolled back now (`disco rollback`)"
    } else if rollbackable.contains(&dance.id) {
        "can be rolled back after the newer dances"
    } else {
        "cannot be rolled back (no undo record is kept)"
    };
    format!("report: rollback: this dance {this}; dances that can be rolled back, newest first: {which}\n")
}
