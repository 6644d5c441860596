//! `disco check-result`: validate a module's output strictly, one finding a line.
//!
//! The root element says which document it is, so a request or a check module's output can be
//! checked the same way; a fix module's result is the usual case.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use protocol::{CheckData, CheckResult, Document, FixData, FixResult, Invalid, ReturnCode};

use crate::error::{Error, Result, EXIT_FAILURE};

/// Arguments of `disco check-result`.
#[derive(Debug, Args)]
pub struct CheckResultArgs {
    /// The document to check; `-` or nothing for stdin.
    #[arg(value_name = "FILE|-")]
    pub file: Option<PathBuf>,
    /// The module's exit status, to check rule 9 (exit status = ReturnCode mod 256).
    #[arg(long, value_name = "N")]
    pub exit_status: Option<u8>,
}

/// What a valid document amounts to, for the one-line summary.
struct Summary {
    kind: &'static str,
    detail: String,
    code: Option<ReturnCode>,
}

fn check(bytes: &[u8]) -> std::result::Result<Summary, Invalid> {
    // Sniff the root name; anything unknown is checked as a fix result, whose error names it.
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    let is = |root: &str| text.contains(&format!("<{root}"));
    if is("SurvivorFixData") {
        let d = FixData::validate(bytes)?;
        Ok(Summary {
            kind: "SurvivorFixData",
            detail: format!(
                "{} option(s), timeout {}",
                d.options.len(),
                d.timeout.map_or("unset".to_owned(), |t| format!("{t}s"))
            ),
            code: None,
        })
    } else if is("SurvivorCheckData") {
        let d = CheckData::validate(bytes)?;
        Ok(Summary {
            kind: "SurvivorCheckData",
            detail: format!("{} host(s), {} option(s)", d.hosts.len(), d.options.len()),
            code: None,
        })
    } else if is("SurvivorCheckResult") {
        let r = CheckResult::validate(bytes)?;
        Ok(Summary {
            kind: "SurvivorCheckResult",
            detail: format!("ReturnCode {}, Scalar {}", r.return_code, r.scalar),
            code: Some(r.return_code),
        })
    } else {
        let r = FixResult::validate(bytes)?;
        Ok(Summary {
            kind: "SurvivorFixResult",
            detail: format!("ReturnCode {}, Comment {:?}", r.return_code, r.comment),
            code: Some(r.return_code),
        })
    }
}

pub(super) fn exec(args: CheckResultArgs) -> Result<ExitCode> {
    let path = args.file.unwrap_or_else(|| PathBuf::from("-"));
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
        buf
    } else {
        std::fs::read(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?
    };
    let mut out = std::io::stdout().lock();
    let mut valid = true;
    match check(&bytes) {
        Ok(summary) => {
            if let (Some(status), Some(code)) = (args.exit_status, summary.code) {
                if !code.matches_exit_status(i32::from(status)) {
                    valid = false;
                    writeln!(
                        out,
                        "rule 9: exit status {status} differs from ReturnCode {} mod 256 = {}",
                        code.value(),
                        code.exit_status()
                    )
                    .map_err(Error::Write)?;
                }
            }
            if valid {
                writeln!(out, "valid {}: {}", summary.kind, summary.detail)
                    .map_err(Error::Write)?;
            }
        }
        Err(invalid) => {
            valid = false;
            for line in invalid.lines() {
                writeln!(out, "{line}").map_err(Error::Write)?;
            }
        }
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}
