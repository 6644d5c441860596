//! `disco fix`: run one fix module under the Survivor rules and exit with the ReturnCode decided,
//! so that a monitoring system can use it as a drop-in event handler.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use protocol::{Document, FixData};

use crate::error::{Error, Result};
use crate::output;
use crate::supervise::{self, FixOutcome, FixSpec, LockLevel, SuperviseError};

/// How `disco fix` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One summary line on stdout, one `warning:` line a violation on stderr.
    Text,
    /// The normalised SurvivorFixResult on stdout.
    Xml,
    /// One JSON object on stdout.
    Json,
}

/// Arguments of `disco fix`.
#[derive(Debug, Args)]
pub struct FixArgs {
    /// The fix module to run: an executable script, or its folder (`mod/fix/NAME`, which holds
    /// `NAME`).
    #[arg(value_name = "MODULE_PATH")]
    pub module: PathBuf,
    /// Pass NAME=VALUE in the module's environment (repeatable; the host clears the rest).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The host the fix is for [default: this machine's host name].
    #[arg(long)]
    pub host: Option<String>,
    /// The service the fix is for [default: the module's file name].
    #[arg(long)]
    pub service: Option<String>,
    /// Seconds the fix may take, lock wait included (decimals allowed) [default: the request's
    /// Timeout with --stdin, else 45].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
    /// A module option; repeat a name to give several values.
    #[arg(
        short = 'o',
        long = "option",
        value_name = "NAME=VALUE",
        conflicts_with = "stdin"
    )]
    pub options: Vec<String>,
    /// Pass on the SurvivorFixData document read from stdin (validated first).
    #[arg(long)]
    pub stdin: bool,
    /// The lock to hold while the fix runs; a module header may ask for a stricter one.
    #[arg(long, value_name = "LEVEL", default_value = "service@host",
          value_parser = ["service@host", "host", "service", "none"])]
    pub lock: String,
    /// Where the lock files are [default: STATE/locks, so two state directories are two
    /// separate hosts' worth of locks].
    #[arg(long, value_name = "DIR")]
    pub lock_dir: Option<PathBuf>,
    /// How to report.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Milliseconds between SIGTERM and SIGKILL at the timeout.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub grace: u64,
    /// Milliseconds to wait for the module's handles to close after it exited.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub leak_timeout: u64,
    /// Bound on captured stdout and stderr, in bytes; the rest is read and discarded.
    #[arg(long, value_name = "BYTES", default_value_t = supervise::DEFAULT_MAX_OUTPUT)]
    pub max_output: usize,
    /// Run a compiled (ELF) module instead of refusing it (rule 3).
    #[arg(long)]
    pub allow_compiled: bool,
    /// Memory the fix's processes may use together (bytes, or with a K, M, G or T suffix);
    /// the module's `# survivor-memory-max:` header may ask for less.
    #[arg(long, value_name = "BYTES", value_parser = |s: &str| supervise::parse_bytes("--memory-max", s))]
    pub memory_max: Option<u64>,
    /// How many processes the fix may have at once.
    #[arg(long, value_name = "N", value_parser = |s: &str| supervise::parse_pids("--pids-max", s))]
    pub pids_max: Option<u64>,
    /// CPU time the fix may use, in percent of one CPU (200 = two CPUs).
    #[arg(long, value_name = "PERCENT", value_parser = |s: &str| supervise::parse_percent("--cpu-max", s))]
    pub cpu_max: Option<u32>,
}

/// A `--timeout` that is no time `disco fix` can wait (clap says it with the option's name).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BadSeconds {
    /// Not a number.
    #[error("'{0}' is not a number of seconds")]
    NotANumber(String),
    /// Zero, negative, or past what a timeout can be.
    #[error("'{0}' is not a positive number of seconds")]
    NotPositive(String),
}

fn parse_seconds(s: &str) -> std::result::Result<Duration, BadSeconds> {
    let secs: f64 = s
        .parse()
        .map_err(|_| BadSeconds::NotANumber(s.to_owned()))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(BadSeconds::NotPositive(s.to_owned()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The request and the timeout it implies: built from `-o`, or read from stdin.
fn request(args: &FixArgs) -> Result<(Vec<u8>, Duration)> {
    if !args.stdin {
        let timeout = args.timeout.unwrap_or(supervise::DEFAULT_TIMEOUT);
        // <Timeout> is whole seconds; round up so the module never thinks it has less.
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let data = super::request::build(Some(secs), &args.options)?;
        return Ok((data.to_xml()?, timeout));
    }
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).map_err(|source| {
        SuperviseError::RequestUnreadable {
            module: args.module.clone(),
            source,
        }
    })?;
    let data = FixData::validate(&bytes).map_err(|source| SuperviseError::Request {
        module: args.module.clone(),
        source: Box::new(source),
    })?;
    let timeout = args
        .timeout
        .or(data.timeout.filter(|&t| t > 0).map(Duration::from_secs))
        .unwrap_or(supervise::DEFAULT_TIMEOUT);
    Ok((bytes, timeout))
}

/// A module folder (`mod/fix/NAME`) names the module `NAME` in it, as `disco validate` takes it.
fn module_file(path: &std::path::Path) -> PathBuf {
    match path.file_name() {
        Some(name) if path.is_dir() => path.join(name),
        _ => path.to_owned(),
    }
}

fn spec(args: &FixArgs, global: &super::GlobalArgs) -> Result<FixSpec> {
    let (request, timeout) = request(args)?;
    let host = match &args.host {
        Some(h) => h.clone(),
        None => crate::sys::hostname().map_err(Error::Hostname)?,
    };
    let service = match &args.service {
        Some(s) => s.clone(),
        None => args
            .module
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let lock: LockLevel = args.lock.parse()?;
    let module = module_file(&args.module);
    let mut spec = FixSpec::new(&module, request, host, service);
    for e in &args.env {
        let (name, value) = e.split_once('=').ok_or(Error::BadOption {
            arg: e.clone(),
            why: "expected NAME=VALUE for -e",
        })?;
        spec.env.push((name.into(), value.into()));
    }
    spec.timeout = timeout;
    spec.grace = Duration::from_millis(args.grace);
    spec.leak_timeout = Duration::from_millis(args.leak_timeout);
    spec.max_output = args.max_output;
    spec.lock = lock;
    spec.lock_dir = args
        .lock_dir
        .clone()
        .unwrap_or_else(|| global.state_dir.join("locks"));
    spec.allow_compiled = args.allow_compiled;
    spec.limits = supervise::Limits {
        memory_max: args.memory_max,
        pids_max: args.pids_max,
        cpu_max: args.cpu_max,
    };
    Ok(spec)
}

fn summary(o: &FixOutcome) -> String {
    let name = o.return_code.name().unwrap_or("custom");
    let word = if o.return_code.value() == 0 {
        "ok"
    } else {
        "failed"
    };
    let mut line = format!(
        "{word}: fix {} for {}@{}: ReturnCode {} ({name}) in {} ms",
        o.module.display(),
        o.service,
        o.host,
        o.return_code.value(),
        o.duration.as_millis()
    );
    if !o.comment.is_empty() {
        // One line, whatever the module wrote.
        line.push_str(": ");
        line.push_str(&o.comment.replace(['\n', '\r'], " "));
    }
    line
}

pub(super) fn exec(args: FixArgs, global: &super::GlobalArgs) -> Result<ExitCode> {
    let spec = spec(&args, global)?;
    let outcome = supervise::run(&spec)?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => writeln!(out, "{}", summary(&outcome)).map_err(Error::Write)?,
        Format::Xml => out
            .write_all(&outcome.result().to_xml()?)
            .map_err(Error::Write)?,
        Format::Json => {
            serde_json::to_writer(&mut out, &outcome)
                .map_err(|e| Error::Write(std::io::Error::other(e)))?;
            writeln!(out).map_err(Error::Write)?;
        }
    }
    out.flush().map_err(Error::Write)?;
    if args.format != Format::Json {
        for v in &outcome.violations {
            output::warning(&format!("{}: {}", v.kind, v.detail));
        }
        for p in &outcome.background {
            output::info(&format!("left running in the background: {p}"));
        }
    }
    Ok(ExitCode::from(outcome.return_code.exit_status()))
}
