//! What a dance shows as it goes: `info:`, `warning:` and `error:` lines on stdout, in the
//! order things happen, what scripts print, and a progress bar on stderr when it is a terminal.

use std::io::{IsTerminal, Write};

/// Progress lines on stdout, in the order things happen: `info:`, `warning:`, `error:`,
/// and what scripts print.
pub(super) struct Printer {
    on: bool,
    color: bool,
    /// A progress bar on stderr, when stderr is a terminal; lines are printed around it.
    pub(super) bar: Option<indicatif::ProgressBar>,
}

impl Printer {
    pub(super) fn new(on: bool, modules: usize) -> Printer {
        // A dance with nothing to count (the early replay's printer) draws no bar.
        let bar = (on && modules > 0 && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(modules as u64);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {elapsed}")
            {
                bar.set_style(style);
            }
            bar
        });
        Printer {
            on,
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            bar,
        }
    }

    pub(super) fn suspend(&self, f: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    pub(super) fn module(&self, name: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(name.to_owned());
        }
    }

    pub(super) fn module_done(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    pub(super) fn line(&self, prefix: &str, color: &str, msg: &str) {
        if !self.on {
            return;
        }
        self.suspend(|| {
            let mut out = std::io::stdout().lock();
            // A closed stdout must not stop the dance halfway.
            let _ = if self.color {
                writeln!(out, "\x1b[{color}m{prefix}\x1b[0m {msg}")
            } else {
                writeln!(out, "{prefix} {msg}")
            };
        });
    }
    pub(super) fn info(&self, msg: &str) {
        self.line("info:", "32", msg);
    }
    pub(super) fn warning(&self, msg: &str) {
        self.line("warning:", "33", msg);
    }
    pub(super) fn error(&self, msg: &str) {
        self.line("error:", "31", msg);
    }
    pub(super) fn raw(&self, text: &[u8]) {
        if self.on && !text.is_empty() {
            self.suspend(|| {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text);
                if !text.ends_with(b"\n") {
                    let _ = out.write_all(b"\n");
                }
            });
        }
    }
}
