//! `disco completions SHELL` and `disco man`: generated from the same clap definition.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, CommandFactory};

use crate::error::{Error, Result};

/// Arguments of `disco completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `disco man`.
#[derive(Debug, Args)]
pub struct ManArgs {}

pub(super) fn exec_completions(args: CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "disco", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn exec_man(_args: ManArgs) -> Result<ExitCode> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(super::Cli::command())
        .render(&mut buf)
        .map_err(Error::Write)?;
    std::io::stdout().write_all(&buf).map_err(Error::Write)?;
    Ok(ExitCode::SUCCESS)
}
