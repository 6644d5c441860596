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
    /// Connections open at once at most; beyond, a connection gets 503 and is closed.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections open at once from one IP address at most.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_connections_per_client: usize,
    /// Seconds a request head (and a TLS handshake) may take to arrive, counted from the
    /// moment the connection waits for it: also how long a keep-alive connection may idle.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub head_timeout: f64,
    /// Seconds a connection with no request in flight may send nothing before it is closed
    /// (keep-alive idle; the head timeout bounds it too).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub idle_timeout: f64,
    /// Seconds a request body may take to arrive.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub body_timeout: f64,
    /// Serve HTTPS with this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate signed by a CA in this file (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Rotate the journal (STATE/history/serve.jsonl) when it reaches this size (K, M, G).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = size)]
    pub history_segment_size: u64,
    /// Keep at most this much history in all (K, M, G); the oldest segments go first.
    #[arg(long, value_name = "SIZE", default_value = "2G", value_parser = size)]
    pub history_max_size: u64,
    /// Rotate the journal when its first record is this old (s, m, h, d).
    #[arg(long, value_name = "AGE", default_value = "1d", value_parser = age)]
    pub history_segment_age: std::time::Duration,
    /// Remove history segments last written longer ago than this (s, m, h, d).
    #[arg(long, value_name = "AGE", default_value = "31d", value_parser = age)]
    pub history_max_age: std::time::Duration,
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
    let exe = std::env::current_exe().map_err(Error::SelfExe)?;
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
        max_connections_per_client: args.max_connections_per_client.max(1),
        head_timeout: seconds(args.head_timeout),
        idle_timeout: seconds(args.idle_timeout),
        body_timeout: seconds(args.body_timeout),
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(serve::TlsFiles {
                cert,
                key,
                client_ca: args.client_ca,
            }),
            _ => None,
        },
        retention: serve::Retention {
            segment_bytes: args.history_segment_size.max(1),
            segment_age: args.history_segment_age,
            max_bytes: args.history_max_size,
            max_age: args.history_max_age,
        },
        token_file: args.token_file,
        textfile: args.textfile,
        sink_plugins: args.sink_plugin,
        exe,
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    serve::serve(config, |addr| {
        // The one line on stdout: tests and scripts that asked for port 0 read it.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
        crate::output::info(&format!("listening on {scheme}://{addr}"));
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A positive, finite number of seconds (at least a millisecond).
fn seconds(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(if s.is_finite() { s.max(0.001) } else { 10.0 })
}

/// A size or age on the command line that is not one.
#[derive(Debug, thiserror::Error)]
#[error("'{value}' is not {what}")]
pub struct BadValue {
    value: String,
    what: &'static str,
}

/// A size: bytes, or with a K, M or G suffix (powers of 1024).
fn size(s: &str) -> std::result::Result<u64, BadValue> {
    let (n, mult) = match s.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| BadValue {
            value: s.to_owned(),
            what: "a size like 512K, 64M or 2G",
        })
}

/// An age: seconds, or with an s, m, h or d suffix.
fn age(s: &str) -> std::result::Result<std::time::Duration, BadValue> {
    serve::parse_since(s, 0.0)
        .ok()
        .map(|t| -t)
        .filter(|t| t.is_finite() && *t >= 0.0 && !s.contains(['-', 'T', ':']))
        .map(std::time::Duration::from_secs_f64)
        .or_else(|| s.parse::<u64>().ok().map(std::time::Duration::from_secs))
        .ok_or_else(|| BadValue {
            value: s.to_owned(),
            what: "an age like 90s, 10m, 12h or 31d",
        })
}

/// Arguments of `disco __serve-fix` (none: every fix comes on stdin).
#[derive(Debug, Args)]
pub struct ServeFixArgs {}

pub(super) fn exec_fix(_args: ServeFixArgs) -> Result<ExitCode> {
    serve::serve_fixes(&mut std::io::stdin().lock(), &mut std::io::stdout().lock())
        .map_err(Error::Write)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(size("64M").unwrap(), 64 << 20);
        assert_eq!(size("2g").unwrap(), 2 << 30);
        assert_eq!(size("512").unwrap(), 512);
        assert!(size("lots").is_err());
        assert_eq!(age("31d").unwrap(), Duration::from_secs(31 * 86_400));
        assert_eq!(age("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(age("3600").unwrap(), Duration::from_secs(3600));
        assert!(age("2024-01-01T00:00:00Z").is_err());
        assert!(age("-5m").is_err());
    }
}
