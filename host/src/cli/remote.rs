//! `disco remote`: the Survivor scheduler's remote protocol on stdin and stdout, for
//! `ssh HOST disco remote`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::error::{Error, Result};
use crate::serve::{self, Remote};

/// Arguments of `disco remote`.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The module directory: a module NAME is DIR/fix/NAME [default: PREFIX/mod].
    #[arg(short = 'm', long, value_name = "DIR")]
    pub module_dir: Option<PathBuf>,
    /// The host fixes are for [default: this machine's host name].
    #[arg(long)]
    pub host: Option<String>,
    /// Where the lock files are [default: STATE/locks, so two state directories are two
    /// separate hosts' worth of locks].
    #[arg(long, value_name = "DIR")]
    pub lock_dir: Option<PathBuf>,
}

pub(super) fn exec(args: RemoteArgs, global: &super::GlobalArgs) -> Result<ExitCode> {
    let host = match args.host {
        Some(h) => h,
        None => crate::sys::hostname().map_err(Error::Hostname)?,
    };
    let remote = Remote {
        module_dir: args.module_dir.unwrap_or_else(serve::default_module_dir),
        lock_dir: args
            .lock_dir
            .unwrap_or_else(|| global.state_dir.join("locks")),
        host,
        max_request: 1 << 20,
    };
    let stdin = std::io::stdin();
    remote
        .session(&mut stdin.lock(), &mut std::io::stdout().lock())
        .map_err(Error::Write)?;
    Ok(ExitCode::SUCCESS)
}
