//! `disco dance`: run every module of this node, in a sandbox; with `--noop` nothing reaches
//! the live system and every change is reported.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::dance::{self, DanceOptions};
use crate::error::{Error, Result};

/// How to print a dance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DanceFormat {
    /// Progress, script output and diffs as they happen.
    #[default]
    Text,
    /// Only the report, as one JSON document.
    Json,
}

/// Arguments of `disco dance`.
#[derive(Debug, Args)]
pub struct DanceArgs {
    /// Report every change, change nothing (also `NOOP=true`).
    #[arg(long)]
    pub noop: bool,
    /// Where parameters and modules come from: a local folder (`parameters/`, `modules/NAME/`)
    /// or an rsync URI; default: the parameter disco/server/uri of STATE/parameters.
    #[arg(long, value_name = "DIR|URI")]
    pub source: Option<String>,
    /// The node whose modules run (default: this machine's fully qualified name).
    #[arg(long)]
    pub node: Option<String>,
    /// The root to configure.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Modules fetched at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Seconds one template or script may take.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: DanceFormat,
    /// With --noop: exit 2 when a module would change something (drift), 0 when none.
    #[arg(long)]
    pub exit_code: bool,
    /// Exit at once, instead of waiting, when another dance is running.
    #[arg(long)]
    pub no_wait: bool,
}

/// Exit status of `disco dance --noop --exit-code` when something would change.
pub const EXIT_DRIFT: u8 = 2;

/// This machine's fully qualified name, as `hostname --fqdn` says, else its host name.
fn fqdn() -> String {
    let short = crate::sys::hostname().unwrap_or_else(|_| "localhost".into());
    if short.contains('.') {
        return short;
    }
    std::process::Command::new("hostname")
        .arg("--fqdn")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or(short)
}

pub(super) fn exec(args: DanceArgs, global: &super::GlobalArgs) -> Result<ExitCode> {
    let noop = args.noop || std::env::var("NOOP").is_ok_and(|v| v == "true");
    let node = args.node.unwrap_or_else(fqdn);
    let own = crate::sys::hostname().unwrap_or_default();
    // Scripts and templates ask `hostname` for the node, as in the original: when disco
    // dances for another name, the sandboxes carry it.
    let hostname = (node != own && node != fqdn()).then(|| node.clone());
    let timeout = std::time::Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| Error::Other(format!("--timeout {}: not a duration", args.timeout)))?;
    let opts = DanceOptions {
        source: args.source,
        node,
        hostname,
        root: args.root,
        state_dir: global.state_dir.clone(),
        noop,
        jobs: args.jobs.max(1),
        timeout,
        progress: args.format == DanceFormat::Text,
        wait: !args.no_wait,
    };
    let report = dance::dance(&opts).map_err(|e| Error::Other(e.to_string()))?;
    match args.format {
        DanceFormat::Json => println!("{}", dance::report::render_json(&report)),
        DanceFormat::Text => {
            let (ok, failed, skipped) = report.counts();
            let line = format!(
                "dance {}: {} module(s): {ok} ok, {failed} failed, {skipped} skipped in {:.2} s; 'disco report' has the details",
                if report.ok { "ok" } else { "failed" },
                report.modules.len(),
                report.duration.as_secs_f64()
            );
            if report.ok {
                crate::output::info(&line);
            } else {
                crate::output::error(&line);
            }
        }
    }
    let drift = report
        .modules
        .iter()
        .any(|m| m.changes.0 + m.changes.1 + m.changes.2 > 0);
    Ok(if !report.ok {
        ExitCode::from(crate::error::EXIT_FAILURE)
    } else if args.exit_code && noop && drift {
        ExitCode::from(EXIT_DRIFT)
    } else {
        ExitCode::SUCCESS
    })
}
