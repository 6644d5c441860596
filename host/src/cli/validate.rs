//! `disco validate`: tell a module author, rule by rule, what their fix module (or disco ball)
//! gets wrong against the Survivor fix module specification. Exit 0 when clean, 1 otherwise.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::error::{Error, Result};
use crate::validate::{self, RunOptions, Target};

/// How `disco validate` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    /// One `RULE N: what is wrong (where)` a line.
    Text,
    /// One JSON object: `{"path":..., "findings":[{"rule","what","where"}...]}`.
    Json,
}

/// Arguments of `disco validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A fix module (its script, or its `mod/fix/NAME` directory) or a disco ball's folder.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Also run the fix module through the fix-module host (in a noop sandbox, which needs
    /// root) and check its result, exit status, process group, handles and reentrancy.
    #[arg(long)]
    pub run: bool,
    /// A sample module option for --run; repeat a name to give several values.
    #[arg(
        short = 'o',
        long = "option",
        value_name = "NAME=VALUE",
        requires = "run"
    )]
    pub options: Vec<String>,
    /// An environment variable for the module in --run (e.g. DISCO_CONF_DIR=DIR for a sample
    /// configuration).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE", requires = "run")]
    pub env: Vec<String>,
    /// Run the module on the live system instead of a noop sandbox (only for modules you
    /// trust; no root needed).
    #[arg(long, requires = "run")]
    pub no_sandbox: bool,
    /// Seconds one run may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    /// Where a disco ball's required modules are (`SOURCE/modules/NAME`) [default: beside it].
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// How to report.
    #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
    pub format: ValidateFormat,
}

pub(super) fn exec(args: ValidateArgs) -> Result<ExitCode> {
    let target = Target::of(&args.path).ok_or_else(|| Error::NoSuchPath(args.path.clone()))?;
    let mut work = None;
    let run = if args.run {
        let data = super::request::build(None, &args.options)?;
        let mut env = Vec::new();
        for e in &args.env {
            let (k, v) = e
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| Error::BadEnv(e.clone()))?;
            env.push((k.into(), v.into()));
        }
        let dir = std::env::temp_dir().join(format!("disco-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Create {
            path: dir.clone(),
            source,
        })?;
        work = Some(dir.clone());
        Some(RunOptions {
            options: data.options,
            env,
            sandbox: !args.no_sandbox,
            timeout: Duration::from_secs(args.timeout.max(1)),
            work_dir: dir,
            host: crate::sys::hostname().unwrap_or_else(|_| "localhost".into()),
        })
    } else {
        None
    };
    let findings = validate::validate(&target, args.source.as_deref(), run.as_ref());
    if let Some(dir) = work {
        let _ = std::fs::remove_dir_all(dir);
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        ValidateFormat::Text => {
            for f in &findings {
                writeln!(out, "{f}").map_err(Error::Write)?;
            }
        }
        ValidateFormat::Json => {
            let json = serde_json::json!({ "path": args.path, "findings": findings });
            writeln!(out, "{json}").map_err(Error::Write)?;
        }
    }
    out.flush().map_err(Error::Write)?;
    if findings.is_empty() {
        if args.format == ValidateFormat::Text {
            crate::output::info(&format!("{}: no findings", args.path.display()));
        }
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(crate::error::EXIT_FAILURE))
    }
}
