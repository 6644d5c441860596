//! Terminals: giving up the caller's before an exec, taking a pseudo-terminal, window sizes.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;

use super::cloexec_from_3;

/// Between fork and exec: no controlling terminal (a module can neither push keystrokes into
/// the caller's terminal with TIOCSTI nor open it as `/dev/tty`), while staying in the
/// caller's session, so that a module that leaves its process group or session is still seen
/// doing so (rule 2); and no descriptor but 0, 1 and 2 across the exec (kernels without
/// `CLOSE_RANGE_CLOEXEC` rely on [`cloexec_inherited`] at start). Async-signal-safe.
/// See tty_ioctl(4), `TIOCNOTTY`: from a process that does not lead its session it gives up
/// the terminal for that process (and what it starts) alone.
pub fn prepare_exec() -> io::Result<()> {
    use nix::fcntl::{open, OFlag};
    let tty = open(
        c"/dev/tty",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    );
    // No controlling terminal to begin with (ENXIO): nothing to give up.
    if let Ok(tty) = tty {
        // SAFETY: TIOCNOTTY takes no argument and touches no memory (nix has no call for it);
        // the descriptor is ours, and closed when `tty` drops.
        if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCNOTTY) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    match cloexec_from_3() {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) => Ok(()),
        other => other,
    }
}

/// Makes the terminal on descriptor 0 the controlling terminal of this process, which must
/// lead a session that has none. See tty_ioctl(4), `TIOCSCTTY`.
pub fn take_terminal_on_stdin() -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer (0: do not steal it from another session).
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The window size of the terminal on `fd`, if it is one. See tty_ioctl(4), `TIOCGWINSZ`.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<libc::winsize> {
    // SAFETY: winsize is plain data; the kernel fills it, and only it, on success.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `size` is valid for writes for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some(size)
}

/// Sets the window size of the terminal on `fd` (its foreground group gets SIGWINCH). See
/// tty_ioctl(4), `TIOCSWINSZ`.
pub fn set_window_size(fd: BorrowedFd<'_>, size: &libc::winsize) -> io::Result<()> {
    // SAFETY: the kernel only reads `size`, valid for the whole call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
