//! `disco shell`: a noop sandbox with a shell, for trying things out; its scratch layer is kept
//! as the latest run, so `disco diff` shows what the session would have changed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::error::{Error, Result};
use crate::sandbox::{terminal, Sandbox, SandboxOptions, ShimConfig};

/// Arguments of `disco shell`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The root to sandbox (a disposable tree, or `/`).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Run this command with `bash -c` instead of an interactive shell.
    #[arg(short = 'c', value_name = "COMMAND")]
    pub command: Option<String>,
    /// Commands to shim instead of the default list (comma-separated; empty for none).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub shims: Option<Vec<String>>,
}

pub(super) fn exec(args: ShellArgs, global: &super::GlobalArgs) -> Result<ExitCode> {
    let shims = match args.shims {
        Some(list) => ShimConfig {
            commands: list.into_iter().filter(|c| !c.is_empty()).collect(),
        },
        None => ShimConfig::default(),
    };
    let sandbox = Sandbox::prepare(&SandboxOptions {
        root: args.root,
        state_dir: global.state_dir.clone(),
        noop: true,
        shims,
        terminal: args.command.is_none(),
    })?;
    let mut argv: Vec<OsString> = vec!["bash".into()];
    if let Some(command) = args.command {
        argv.push("-c".into());
        argv.push(command.into());
    }
    let mut cmd = sandbox.command(&argv);
    cmd.env("PS1", "(disco noop) \\u@\\h:\\w\\$ ");
    let status = if argv.len() == 1 {
        // Interactive: a pseudo-terminal of its own (see `sandbox::terminal`), never the
        // user's, whose keystrokes a script could otherwise push (TIOCSTI).
        let pty = terminal::open()?;
        let slave = |pty: &terminal::Pty| {
            pty.slave
                .try_clone()
                .map(std::process::Stdio::from)
                .map_err(Error::StartSandbox)
        };
        cmd.stdin(slave(&pty)?)
            .stdout(slave(&pty)?)
            .stderr(slave(&pty)?);
        let mut child = cmd.spawn().map_err(Error::StartSandbox)?;
        // The sandbox holds the shell's side now: it closes when the sandbox ends.
        let terminal::Pty { master, slave } = pty;
        drop(slave);
        drop(cmd);
        terminal::relay(master, &mut child)?
    } else {
        cmd.status().map_err(Error::StartSandbox)?
    };
    if status.code() == Some(crate::sandbox::enter::EXIT_SANDBOX) {
        // The sandbox itself could not be built, and has said why: there is no layer to keep.
        return Ok(ExitCode::from(crate::sandbox::enter::EXIT_SANDBOX as u8));
    }
    let info = sandbox.finish()?;
    crate::output::info(&format!(
        "scratch layer of run {} kept in {}; 'disco diff' reports it",
        info.id,
        global.state_dir.join("runs").join(&info.id).display()
    ));
    Ok(ExitCode::from(
        status
            .code()
            .map_or(1, |c| u8::try_from(c).unwrap_or(u8::MAX)),
    ))
}
