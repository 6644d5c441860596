//! `disco history`: the fixes `disco serve` decided and ran, from its durable history.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::GlobalArgs;
use crate::error::{Error, Result};
use crate::serve::{self, Query};

/// How `disco history` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HistoryFormat {
    /// One line a fix.
    Text,
    /// One JSON object a line (as `GET /fixes` gives them).
    Json,
}

/// Arguments of `disco history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only fixes for this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only fixes for this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only fixes since: epoch seconds, an RFC 3339 time, or an age (90s, 10m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// How to print.
    #[arg(long, value_enum, default_value_t = HistoryFormat::Text)]
    pub format: HistoryFormat,
}

pub(super) fn exec(args: HistoryArgs, global: &GlobalArgs) -> Result<ExitCode> {
    let since = args
        .since
        .as_deref()
        .map(|s| serve::parse_since(s, serve::now()))
        .transpose()
        .map_err(Error::Other)?;
    let dir = global.state_dir.join("history");
    let (records, torn) = serve::read(&dir).map_err(|e| Error::Other(e.to_string()))?;
    if torn > 0 {
        crate::output::warning(&format!(
            "{}: {torn} unreadable lines skipped",
            dir.join(serve::JOURNAL).display()
        ));
    }
    let q = Query {
        host: args.host,
        service: args.service,
        since,
    };
    let mut out = std::io::stdout().lock();
    for v in serve::fixes(&records, &q) {
        let line = match args.format {
            HistoryFormat::Json => serde_json::to_string(&v).unwrap_or_default(),
            HistoryFormat::Text => {
                let f = &v.fix;
                let target = match (&f.service, &f.host) {
                    (Some(s), Some(h)) => format!("{s}@{h}"),
                    _ => "-".to_owned(),
                };
                let module = f.module.as_ref().map_or("-".to_owned(), |m| {
                    m.file_name().map_or(m.display().to_string(), |n| {
                        n.to_string_lossy().into_owned()
                    })
                });
                let result = match &v.outcome {
                    Some(o) => format!("rc {}: {}", o.return_code, o.comment.replace('\n', " ")),
                    None => f.reason.clone().unwrap_or_default(),
                };
                format!(
                    "{}  {:<12} {} {} {} {}",
                    serve::local_time(f.time),
                    v.status,
                    f.id,
                    target,
                    module,
                    result
                )
            }
        };
        writeln!(out, "{line}").map_err(Error::Write)?;
    }
    out.flush().map_err(Error::Write)?;
    Ok(ExitCode::SUCCESS)
}
