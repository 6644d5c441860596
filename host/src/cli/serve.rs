//! `disco serve`: fixes on alert, from Prometheus Alertmanager's webhooks; and its hidden
//! helper `disco __serve-fix`, a worker process that runs the server's fixes one at a time.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::GlobalArgs;
use crate::error::{Error, Result};
use crate::serve::{self, Config};

/// Arguments of `disco serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen (port 0 picks a free one; the address is printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9099")]
    pub listen: String,
    /// The rules file (TOML; see doc/serve.md).
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,
    /// Where rule module NAMEs are looked up, as DIR/fix/NAME [default: PREFIX/mod].
    #[arg(long, value_name = "DIR")]
    pub module_dir: Option<PathBuf>,
    /// Fixes running at once at most (one per target at most, always).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_concurrent: usize,
    /// Fixes waiting at most; a webhook whose fixes do not fit gets 503 and is retried.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_queue: usize,
    /// Connections served at once at most.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// A file holding the bearer token requests must carry (all but /healthz and /metrics).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Also write the metrics to DIR/disco_serve.prom after each fix (node_exporter).
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<PathBuf>,
    /// Load a native sink plugin (repeatable; see doc/serve.md for its C ABI).
    #[arg(long, value_name = "PATH")]
    pub sink_plugin: Vec<PathBuf>,
    /// Where the lock files are [default: STATE/locks, so two state directories are two
    /// separate hosts' worth of locks].
    #[arg(long, value_name = "DIR")]
    pub lock_dir: Option<PathBuf>,
}

pub(super) fn exec(args: ServeArgs, global: &GlobalArgs) -> Result<ExitCode> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Other(format!("cannot find the disco binary to run fixes: {e}")))?;
    let config = Config {
        listen: args.listen,
        rules: args.rules,
        module_dir: args.module_dir.unwrap_or_else(serve::default_module_dir),
        state_dir: global.state_dir.clone(),
        lock_dir: args
            .lock_dir
            .unwrap_or_else(|| global.state_dir.join("locks")),
        max_concurrent: args.max_concurrent.max(1),
        max_queue: args.max_queue,
        max_connections: args.max_connections.max(1),
        token_file: args.token_file,
        textfile: args.textfile,
        sink_plugins: args.sink_plugin,
        exe,
    };
    serve::serve(config, |addr| {
        // The one line on stdout: tests and scripts that asked for port 0 read it.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
        crate::output::info(&format!("listening on http://{addr}"));
    })
    .map_err(|e| Error::Other(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `disco __serve-fix` (none: every fix comes on stdin).
#[derive(Debug, Args)]
pub struct ServeFixArgs {}

pub(super) fn exec_fix(_args: ServeFixArgs) -> Result<ExitCode> {
    serve::serve_fixes(&mut std::io::stdin().lock(), &mut std::io::stdout().lock())
        .map_err(Error::Write)?;
    Ok(ExitCode::SUCCESS)
}
