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
    /// Print at most N fixes; when more follow, their cursor is said on stderr.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Start where an earlier --limit stopped (its "next cursor").
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<serve::Cursor>,
}

pub(super) fn exec(args: HistoryArgs, global: &GlobalArgs) -> Result<ExitCode> {
    let since = args
        .since
        .as_deref()
        .map(|s| serve::parse_since(s, serve::now()))
        .transpose()?;
    let dir = global.state_dir.join("history");
    let q = Query {
        host: args.host,
        service: args.service,
        since,
    };
    let mut out = std::io::stdout().lock();
    // Page by page: memory stays that of one page, whatever the history's size.
    let mut left = args.limit.unwrap_or(usize::MAX);
    let mut cursor = args.cursor;
    while left > 0 {
        let page = serve::page(&dir, &q, cursor, left.min(serve::MAX_LIMIT))?;
        left -= page.fixes.len();
        for v in &page.fixes {
            writeln!(out, "{}", line(v, args.format)).map_err(Error::Write)?;
        }
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    if let (Some(c), Some(_)) = (cursor, args.limit) {
        crate::output::info(&format!("more follow: next cursor {c} (--cursor {c})"));
    }
    out.flush().map_err(Error::Write)?;
    Ok(ExitCode::SUCCESS)
}

fn line(v: &serve::FixView, format: HistoryFormat) -> String {
    match format {
        HistoryFormat::Json => serde_json::to_string(v).unwrap_or_default(),
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
                Some(o) => format!(
                    "rc {}: {}{}",
                    o.return_code,
                    o.comment.replace('\n', " "),
                    usage(&o.outcome["cgroup"])
                ),
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
    }
}

/// What a fix's cgroup measured, as ` (cpu 12.5 ms, memory peak 2.0 MiB, pids peak 3)`; empty
/// when the fix had no cgroup.
fn usage(cgroup: &serde_json::Value) -> String {
    let Some(c) = cgroup.as_object() else {
        return String::new();
    };
    let ms = |k: &str| c.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    let mut parts = vec![format!(
        "cpu {:.1} ms",
        ms("cpu_user_ms") + ms("cpu_system_ms")
    )];
    if let Some(b) = c
        .get("memory_peak_bytes")
        .and_then(serde_json::Value::as_u64)
    {
        parts.push(format!("memory peak {:.1} MiB", b as f64 / 1048576.0));
    }
    if let Some(n) = c.get("pids_peak").and_then(serde_json::Value::as_u64) {
        parts.push(format!("pids peak {n}"));
    }
    format!(" ({})", parts.join(", "))
}
