//! Descriptors: non-blocking mode, poll, and what crosses an exec.

use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use nix::libc;

/// Sets `O_NONBLOCK` on `fd`, so the poll loop never blocks in read or write. See fcntl(2).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The inode of the file (here: pipe) behind `fd`, to recognise it in `/proc/PID/fd`.
pub fn inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let file = fs::File::from(fd.try_clone_to_owned()?);
    Ok(file.metadata()?.ino())
}

/// Readiness of one fd after [`poll`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Ready {
    /// Readable, or at end of file.
    pub readable: bool,
    /// Writable.
    pub writable: bool,
    /// Error or hang-up: the other side is gone.
    pub hangup: bool,
}

/// What to wait for on one fd in [`poll`].
#[derive(Clone, Copy, Debug)]
pub enum Interest {
    /// Wait until it can be read.
    Read,
    /// Wait until it can be written.
    Write,
}

/// Waits up to `timeout` for any of `fds` to be ready. See poll(2). An interrupted wait returns
/// with nothing ready, and the caller loops.
pub fn poll(fds: &[(BorrowedFd<'_>, Interest)], timeout: Duration) -> io::Result<Vec<Ready>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|(fd, interest)| {
            let events = match interest {
                Interest::Read => PollFlags::POLLIN,
                Interest::Write => PollFlags::POLLOUT,
            };
            PollFd::new(*fd, events)
        })
        .collect();
    // Round up so that a wait of 0.3 ms does not become a busy loop of zero-timeout polls.
    let ms = PollTimeout::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX);
    match nix::poll::poll(&mut pfds, ms) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(vec![Ready::default(); fds.len()]),
        Err(e) => return Err(e.into()),
    }
    Ok(pfds
        .iter()
        .map(|p| {
            let got = p.revents().unwrap_or(PollFlags::empty());
            Ready {
                readable: got.contains(PollFlags::POLLIN),
                writable: got.contains(PollFlags::POLLOUT),
                hangup: got
                    .intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL),
            }
        })
        .collect())
}

/// Marks every descriptor from 3 up close-on-exec, so that nothing this process inherited or
/// opened reaches a program it executes; 0, 1 and 2 stay. Async-signal-safe (one system call),
/// so it may run between fork and exec. See close_range(2), `CLOSE_RANGE_CLOEXEC` (Linux 5.11).
pub fn cloexec_from_3() -> io::Result<()> {
    close_range_from_3(libc::CLOSE_RANGE_CLOEXEC)
}

/// Closes every descriptor from 3 up. Only for a process that owns none of them yet: the
/// entry of a sandbox, before it opens anything. See close_range(2).
pub fn close_from_3() -> io::Result<()> {
    close_range_from_3(0)
}

fn close_range_from_3(flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range takes three integers and touches no memory. Its callers own no
    // descriptor above 2 that they go on using, or only mark them close-on-exec.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            flags,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// [`cloexec_from_3`], or on a kernel without it, the same one descriptor at a time (as listed
/// in `/proc/self/fd`). For the start of `disco`: whatever its caller left open (a CI harness's,
/// a monitoring agent's descriptors) reaches no module, script or sandbox it starts.
pub fn cloexec_inherited() -> io::Result<()> {
    if cloexec_from_3().is_ok() {
        return Ok(());
    }
    let fds: Vec<i32> = fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        // SAFETY: the descriptor is only borrowed for F_SETFD, which changes its flag; one
        // that is already closed (the listing's own) gives EBADF, which is fine.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    Ok(())
}

/// Puts each `(from, to)` descriptor on number `to`, by way of copies above every target, so
/// that no move overwrites a descriptor still to be moved; the copies close on exec, the
/// targets do not. Allocates nothing: for a pre_exec hook, between fork and exec. See dup2(2).
pub fn renumber<const N: usize>(moves: [(RawFd, RawFd); N]) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    use std::mem::ManuallyDrop;
    let above = moves.iter().map(|&(_, to)| to).max().unwrap_or(2) + 1;
    let mut high = [0; N];
    for (slot, &(from, _)) in high.iter_mut().zip(&moves) {
        // SAFETY: `from` is a descriptor the caller owns, borrowed for this one call.
        let from = unsafe { BorrowedFd::borrow_raw(from) };
        *slot = fcntl(from, FcntlArg::F_DUPFD_CLOEXEC(above.max(10)))?;
    }
    for (&from, &(_, to)) in high.iter().zip(&moves) {
        // SAFETY: both numbers are only borrowed: the copy stays open, closed by the exec, and
        // the target is never closed here (ManuallyDrop), only replaced by dup2.
        let (from, mut to) = unsafe {
            (
                BorrowedFd::borrow_raw(from),
                ManuallyDrop::new(OwnedFd::from_raw_fd(to)),
            )
        };
        nix::unistd::dup2(from, &mut to)?;
    }
    Ok(())
}
