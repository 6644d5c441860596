//! Messages for people: `info:`, `warning: `, `error: ` on stderr, coloured only on a terminal
//! and never with `NO_COLOR`; diagnostics go through `tracing`, filtered by `-v`/`-q` or
//! `RUST_LOG`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicI8, Ordering};

use crate::cli::GlobalArgs;

static COLOR: AtomicBool = AtomicBool::new(false);
static VERBOSITY: AtomicI8 = AtomicI8::new(0);

/// Sets colour and verbosity from the global options and the environment, and starts tracing.
pub fn init(global: &GlobalArgs) {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    COLOR.store(
        !no_color && std::io::stderr().is_terminal(),
        Ordering::Relaxed,
    );
    let verbosity = i8::try_from(i16::from(global.verbose) - i16::from(global.quiet)).unwrap_or(0);
    VERBOSITY.store(verbosity, Ordering::Relaxed);
    let default = match verbosity {
        i8::MIN..=-1 => "error",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A second init (tests calling run twice) is harmless, so its error is ignored.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(COLOR.load(Ordering::Relaxed))
        .try_init();
}

fn emit(prefix: &str, color: &str, msg: &str) {
    let mut err = std::io::stderr().lock();
    // A closed stderr must not turn a message into a crash.
    let _ = if COLOR.load(Ordering::Relaxed) {
        writeln!(err, "\x1b[{color}m{prefix}\x1b[0m {msg}")
    } else {
        writeln!(err, "{prefix} {msg}")
    };
}

/// An informational line (`info: ...`), hidden by `-q`.
pub fn info(msg: &str) {
    if VERBOSITY.load(Ordering::Relaxed) >= 0 {
        emit("info:", "32", msg);
    }
}

/// A warning (`warning: ...`).
pub fn warning(msg: &str) {
    emit("warning:", "33", msg);
}

/// An error (`error: ...`), always shown.
pub fn error(msg: &str) {
    emit("error:", "31", msg);
}
