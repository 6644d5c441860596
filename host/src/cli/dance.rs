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
    /// or an rsync URI; default: the parameter disco/server/uri of STATE/parameters, or, while
    /// disco/client/candidate is set, that candidate, in noop.
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
    /// Exit 2 when a module changed something (live) or would change something (--noop: drift),
    /// 0 when none.
    #[arg(long)]
    pub exit_code: bool,
    /// Exit at once, instead of waiting, when another dance is running.
    #[arg(long)]
    pub no_wait: bool,
    /// With --root other than /: run the deferred service commands (chrooted, but they act on
    /// this host's services); by default they are reported and not run.
    #[arg(long)]
    pub run_deferred: bool,
    /// Live: keep the undo records of this many dances onto the root, for `disco rollback`
    /// (0 keeps none).
    #[arg(long, value_name = "N", default_value_t = crate::apply::undo::DEFAULT_KEEP)]
    pub keep_undo: usize,
    /// Live: at most this many bytes of replaced content in the kept undo records (suffixes
    /// K, M, G); older dances' records go first.
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_undo_size)]
    pub keep_undo_size: u64,
    /// Write the dance's outcome for node_exporter to DIR/disco_dance.prom.
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<PathBuf>,
    /// Push the dance's JSON report (the report schema) to DEST/NODE/ID.json with rsync, for
    /// `disco fleet` on the server: a folder, or an rsync destination (`host::reports`, a
    /// write-only module); default: the client parameter disco/client/reports.
    #[arg(long, value_name = "DEST")]
    pub report_to: Option<String>,
    /// Hand the dance report (JSON) to this native sink plugin (see doc/serve.md); repeatable.
    #[arg(long, value_name = "PATH")]
    pub sink_plugin: Vec<PathBuf>,
    /// In noop, what scripts reach of the network: `loopback` (the default) gives the sandbox
    /// a network of its own with only loopback, so no service is called during a dry run;
    /// `outbound` adds outbound connections through slirp4netns (the host's loopback stays
    /// unreachable), with which a script CAN change a remote service. Default: the parameter
    /// disco/client/network of STATE/parameters, else `loopback`.
    #[arg(long, value_enum)]
    pub network: Option<crate::sandbox::Network>,
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
        "Whether the last dance succeeded",
        &[(None, u64::from(report.ok))],
    );
    metric(
        "disco_dance_last_timestamp_seconds",
        "When the last dance started",
        &[(None, report.started_unix)],
    );
    metric(
        "disco_dance_last_modules",
        "Modules of the last dance by outcome",
        &[
            (Some(("status", "ok")), ok as u64),
            (Some(("status", "failed")), failed as u64),
            (Some(("status", "skipped")), skipped as u64),
        ],
    );
    metric(
        "disco_dance_last_changes",
        "Paths the last dance changed (or, in noop, would change)",
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
        "How long the last dance took",
        duration,
    );
    crate::prom::encode(&registry)
}

/// A value of the client's own parameter tree (`STATE/parameters`).
fn client_parameter(state_dir: &std::path::Path, key: &str) -> Option<String> {
    dance::client_value(&state_dir.join("parameters"), key)
}

/// Why a report could not be pushed to the server (a warning: the dance itself is done).
#[derive(Debug, thiserror::Error)]
enum PushError {
    /// The report could not be written to its temporary file.
    #[error("{path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `disco/client/cmds/rsync` is no command line.
    #[error("the rsync command {command:?}: {why}")]
    Command { command: String, why: String },
    /// rsync could not be started.
    #[error("{program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// rsync ran and failed; its own words.
    #[error("{target}: {stderr}")]
    Rsync { target: String, stderr: String },
}

/// The client parameter that keeps the text diffs in the report a node pushes (`yes`); by
/// default they are left out, since a fresh node's would hold every file it creates.
pub const REPORT_DIFFS_PARAMETER: &str = "disco/client/reports_diffs";

/// Pushes the report to `dest`/NODE/ID.json with the client's rsync command (its ssh key and
/// options), so the server's `disco fleet` reads it. A node writes only its own folder when
/// the server allows only that (rrsync -wo, or a write-only rsyncd module per node).
fn push_report(
    dest: &str,
    state_dir: &std::path::Path,
    report: &dance::report::DanceReport,
) -> std::result::Result<(), PushError> {
    let tmp = state_dir.join(format!(".report-{}.json", report.id));
    let text =
        if client_parameter(state_dir, REPORT_DIFFS_PARAMETER).is_some_and(|v| v.trim() == "yes") {
            dance::schema::dance_json(report)
        } else {
            dance::schema::dance_json_without_texts(report)
        };
    std::fs::write(&tmp, text).map_err(|source| PushError::Write {
        path: tmp.clone(),
        source,
    })?;
    let command = client_parameter(state_dir, "disco/client/cmds/rsync")
        .unwrap_or_else(|| "rsync -a".to_owned());
    let mut argv = match shell_words::split(&command) {
        Ok(argv) if argv.is_empty() => Err("it is empty".to_owned()),
        Ok(argv) => Ok(argv),
        Err(e) => Err(e.to_string()),
    }
    .map_err(|why| PushError::Command {
        command: command.clone(),
        why,
    })?;
    argv.retain(|a| !a.starts_with("--del"));
    let target = format!(
        "{}/{}/{}.json",
        dest.trim_end_matches('/'),
        report.node,
        report.id
    );
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .arg("--mkpath")
        .arg(&tmp)
        .arg(&target)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| PushError::Spawn {
            program: argv[0].clone(),
            source,
        });
    let _ = std::fs::remove_file(&tmp);
    let out = out?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PushError::Rsync {
            target,
            stderr: dance::fetch::rsync_message(
                &String::from_utf8_lossy(&out.stderr),
                out.status.into(),
            ),
        })
    }
}

/// Hands the report to the textfile and plugin sinks and pushes it to the server; their
/// failures are warnings only.
fn sinks(args: &DanceArgs, state_dir: &std::path::Path, report: &dance::report::DanceReport) {
    if let Some(dest) = args
        .report_to
        .clone()
        .or_else(|| client_parameter(state_dir, "disco/client/reports"))
    {
        if let Err(e) = push_report(&dest, state_dir, report) {
            crate::output::warning(&format!("cannot push the report: {e}"));
        }
    }
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
            Err(e) => crate::output::warning(&e.to_string()),
        }
    }
    all.dance_report(&dance::schema::dance_json(report));
}

/// The client parameter that names a candidate source: while it is set, a dance without
/// `--source` (the node's scheduled one) is a noop against it, a preview before a rollout.
pub const CANDIDATE_PARAMETER: &str = "disco/client/candidate";

/// Exit status of `disco dance --exit-code` when something changed (or, in noop, would).
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
    let candidate = args
        .source
        .is_none()
        .then(|| client_parameter(&global.state_dir, CANDIDATE_PARAMETER))
        .flatten()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    if let Some(c) = &candidate {
        crate::output::info(&format!(
            "{CANDIDATE_PARAMETER} is {c}: a noop dance against the candidate"
        ));
    }
    let noop = candidate.is_some() || args.noop || std::env::var("NOOP").is_ok_and(|v| v == "true");
    let node = args.node.clone().unwrap_or_else(fqdn);
    let own = crate::sys::hostname().unwrap_or_default();
    // Scripts and templates ask `hostname` for the node, as in the original: when disco
    // dances for another name, the sandboxes carry it.
    let hostname = (node != own && node != fqdn()).then(|| node.clone());
    let timeout = std::time::Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| Error::BadTimeout(args.timeout))?;
    let opts = DanceOptions {
        source: args.source.clone().or(candidate),
        node,
        hostname,
        root: args.root.clone(),
        state_dir: global.state_dir.clone(),
        noop,
        jobs: args.jobs.max(1),
        timeout,
        progress: args.format == DanceFormat::Text,
        wait: !args.no_wait,
        run_deferred: args.run_deferred,
        network: args.network,
        keep_undo: args.keep_undo,
        keep_undo_bytes: args.keep_undo_size,
    };
    let report = dance::dance(&opts)?;
    sinks(&args, &global.state_dir, &report);
    match args.format {
        // As `disco report --format json` prints it, with which dances can be rolled back.
        DanceFormat::Json => print!(
            "{}",
            dance::schema::dance_json_with(
                &report,
                Some(&crate::apply::undo::rollbackable(&global.state_dir, None))
            )
        ),
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
    } else if args.exit_code && drift {
        ExitCode::from(EXIT_DRIFT)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--keep-undo-size`: a byte count with a K, M, G or T suffix, or 0 (keep no record).
fn parse_undo_size(s: &str) -> Result<u64, crate::supervise::CgroupError> {
    if s.trim() == "0" {
        return Ok(0);
    }
    crate::supervise::parse_bytes("--keep-undo-size", s)
}
