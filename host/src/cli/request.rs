//! `disco request`: print a SurvivorFixData document, as Survivor's hand-test tool did (without
//! its comma limitation: each `-o` is one value, and a repeated name makes a list).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use protocol::{Document, FixData};

use crate::error::{Error, Result};

/// Arguments of `disco request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Seconds the module has to finish (written as `<Timeout>`).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// A module option; repeat a name to give several values.
    #[arg(short = 'o', long = "option", value_name = "NAME=VALUE")]
    pub options: Vec<String>,
}

/// Builds the request these arguments describe.
pub fn build(timeout: Option<u64>, options: &[String]) -> Result<FixData> {
    let mut data = FixData {
        timeout,
        ..FixData::default()
    };
    for arg in options {
        let (name, value) = super::parse_option(arg)?;
        data.options.push(name, value);
    }
    Ok(data)
}

pub(super) fn exec(args: RequestArgs) -> Result<ExitCode> {
    let xml = build(args.timeout, &args.options)?.to_xml()?;
    std::io::stdout().write_all(&xml).map_err(Error::Write)?;
    Ok(ExitCode::SUCCESS)
}
