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
    /// Write the dance's outcome for node_exporter to DIR/disco_dance.prom.
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<PathBuf>,
    /// Hand the dance report (JSON) to this native sink plugin (see doc/serve.md); repeatable.
    #[arg(long, value_name = "PATH")]
    pub sink_plugin: Vec<PathBuf>,
}

/// The textfile's name in `--textfile DIR`.
pub const TEXTFILE: &str = "disco_dance.prom";

/// The last dance in the Prometheus text format, for node_exporter's textfile collector
/// (the encoder `disco serve` uses too: `crate::prom`).
pub fn textfile(report: &dance::report::DanceReport) -> String {
    use crate::prom::{Labels, Value};
    use prometheus_client::metrics::{family::Family, gauge::Gauge};
    let (ok, failed, skipped) = report.counts();
    let (mut created, mut modified, mut deleted) = (0, 0, 0);
    for m in &report.modules {
        created += m.changes.0;
        modified += m.changes.1;
        deleted += m.changes.2;
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let labels = |extra: Option<(&'static str, &str)>| -> Labels {
        let mut l = vec![
            ("node", Value(report.node.clone())),
            ("noop", Value(report.noop.to_string())),
        ];
        l.extend(extra.map(|(k, v)| (k, Value::from(v))));
        l
    };
    let mut metric = |name: &str, help: &str, samples: &[(Option<(&'static str, &str)>, u64)]| {
        let family = Family::<Labels, Gauge>::default();
        for (extra, value) in samples {
            family
                .get_or_create(&labels(*extra))
                .set(i64::try_from(*value).unwrap_or(i64::MAX));
        }
        registry.register(name, help, family);
    };
    metric(
        "disco_dance_last_success",
        "Whether the last dance succeeded.",
        &[(None, u64::from(report.ok))],
    );
    metric(
        "disco_dance_last_timestamp_seconds",
        "When the last dance started.",
        &[(None, report.started_unix)],
    );
    metric(
        "disco_dance_last_modules",
        "Modules of the last dance by outcome.",
        &[
            (Some(("status", "ok")), ok as u64),
            (Some(("status", "failed")), failed as u64),
            (Some(("status", "skipped")), skipped as u64),
        ],
    );
    metric(
        "disco_dance_last_changes",
        "Paths the last dance changed (or, in noop, would change).",
        &[
            (Some(("kind", "created")), created as u64),
            (Some(("kind", "modified")), modified as u64),
            (Some(("kind", "deleted")), deleted as u64),
        ],
    );
    let duration = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    duration
        .get_or_create(&labels(None))
        .set(report.duration.as_secs_f64());
    registry.register(
        "disco_dance_last_duration_seconds",
        "How long the last dance took.",
        duration,
    );
    crate::prom::encode(&registry)
}

/// Hands the report to the textfile and plugin sinks; their failures are warnings only.
fn sinks(args: &DanceArgs, report: &dance::report::DanceReport) {
    if let Some(dir) = &args.textfile {
        let tmp = dir.join(format!(".{TEXTFILE}.{}", std::process::id()));
        let path = dir.join(TEXTFILE);
        if let Err(e) =
            std::fs::write(&tmp, textfile(report)).and_then(|_| std::fs::rename(&tmp, &path))
        {
            crate::output::warning(&format!("cannot write {}: {e}", path.display()));
        }
    }
    if args.sink_plugin.is_empty() {
        return;
    }
    let mut all = crate::serve::Sinks::default();
    for path in &args.sink_plugin {
        match crate::serve::Plugin::load(path) {
            Ok(plugin) => all.push(Box::new(plugin)),
            Err(e) => crate::output::warning(&e),
        }
    }
    all.dance_report(&dance::report::render_json(report));
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
    let node = args.node.clone().unwrap_or_else(fqdn);
    let own = crate::sys::hostname().unwrap_or_default();
    // Scripts and templates ask `hostname` for the node, as in the original: when disco
    // dances for another name, the sandboxes carry it.
    let hostname = (node != own && node != fqdn()).then(|| node.clone());
    let timeout = std::time::Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| Error::Other(format!("--timeout {}: not a duration", args.timeout)))?;
    let opts = DanceOptions {
        source: args.source.clone(),
        node,
        hostname,
        root: args.root.clone(),
        state_dir: global.state_dir.clone(),
        noop,
        jobs: args.jobs.max(1),
        timeout,
        progress: args.format == DanceFormat::Text,
        wait: !args.no_wait,
    };
    let report = dance::dance(&opts).map_err(|e| Error::Other(e.to_string()))?;
    sinks(&args, &report);
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
