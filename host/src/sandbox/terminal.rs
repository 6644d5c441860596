//! The interactive `disco shell`'s terminal: a pseudo-terminal of its own, which the shell in
//! the sandbox gets as its controlling terminal (see `enter::payload`), while disco relays the
//! bytes and the window size between it and the user's terminal. So nothing inside can push
//! keystrokes into the user's terminal (TIOCSTI reaches only the shell's own), nor change its
//! settings.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::termios::{self, SetArg, Termios};

use crate::sys::{self, Interest};

/// What can go wrong with the shell's terminal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TerminalError {
    /// The pseudo-terminal could not be made.
    #[error("cannot open a pseudo-terminal: {0}")]
    Open(#[source] nix::errno::Errno),
    /// The user's terminal could not be set up (raw mode, window size signal).
    #[error("cannot set up the terminal: {0}")]
    Setup(#[source] std::io::Error),
    /// Relaying between the terminals failed.
    #[error("cannot relay the terminal: {0}")]
    Relay(#[source] std::io::Error),
}

/// A pseudo-terminal: disco keeps the master; the sandbox gets the slave as 0, 1 and 2.
#[derive(Debug)]
pub struct Pty {
    /// disco's end.
    pub master: OwnedFd,
    /// The shell's end.
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal the size of the user's terminal (on stdin), if it is one.
pub fn open() -> Result<Pty, TerminalError> {
    let size = sys::window_size(std::io::stdin().as_fd()).map(|w| nix::pty::Winsize {
        ws_row: w.ws_row,
        ws_col: w.ws_col,
        ws_xpixel: w.ws_xpixel,
        ws_ypixel: w.ws_ypixel,
    });
    let pty = nix::pty::openpty(size.as_ref(), None).map_err(TerminalError::Open)?;
    Ok(Pty {
        master: pty.master,
        slave: pty.slave,
    })
}

/// Puts the user's terminal back as it was, however the relay ends.
struct Restore(Option<Termios>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(saved) = self.0.take() {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &saved);
        }
    }
}

/// Relays between the user's terminal (stdin, stdout) and `master` until the shell's side is
/// closed (the sandbox has ended), then reaps `child`. The user's terminal is raw meanwhile (the
/// shell's own terminal does the line editing and the signals), and its window size follows.
pub fn relay(master: OwnedFd, child: &mut Child) -> Result<ExitStatus, TerminalError> {
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(&stdin).ok();
    let _restore = match &saved {
        Some(t) => {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)
                .map_err(|e| TerminalError::Setup(e.into()))?;
            Restore(saved.clone())
        }
        None => Restore(None),
    };
    let resized = Arc::new(AtomicBool::new(false));
    let winch = signal_hook::flag::register(signal_hook::consts::SIGWINCH, resized.clone())
        .map_err(TerminalError::Setup)?;
    let relayed = pump(&master, &resized);
    signal_hook::low_level::unregister(winch);
    relayed.map_err(TerminalError::Relay)?;
    child.wait().map_err(TerminalError::Relay)
}

/// The relay loop of [`relay`].
fn pump(master: &OwnedFd, resized: &AtomicBool) -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut to_shell = std::fs::File::from(master.try_clone()?);
    let mut from_shell = std::fs::File::from(master.try_clone()?);
    let mut stdin_open = true;
    let mut buf = [0u8; 8192];
    loop {
        if resized.swap(false, Ordering::Relaxed) {
            if let Some(size) = sys::window_size(stdin.as_fd()) {
                sys::set_window_size(master.as_fd(), &size)?;
            }
        }
        let mut fds = vec![(master.as_fd(), Interest::Read)];
        if stdin_open {
            fds.push((stdin.as_fd(), Interest::Read));
        }
        let ready = match sys::poll(&fds, Duration::from_millis(200)) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        if ready.first().is_some_and(|r| r.readable || r.hangup) {
            match from_shell.read(&mut buf) {
                // EIO: every descriptor of the shell's side is closed; the sandbox has ended.
                Ok(0) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
                Ok(n) => {
                    out.write_all(&buf[..n])?;
                    out.flush()?;
                }
            }
        }
        if ready.get(1).is_some_and(|r| r.readable || r.hangup) {
            match nix::unistd::read(stdin.as_fd(), &mut buf).map_err(std::io::Error::from) {
                Ok(0) => {
                    // Input that is not a terminal has ended: end of file, as the shell's
                    // terminal spells it (at the start of a line).
                    stdin_open = false;
                    to_shell.write_all(b"\x04")?;
                }
                Ok(n) => to_shell.write_all(&buf[..n])?,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
