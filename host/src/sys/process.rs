//! Processes and signals: reaping with resource usage, pidfds, kill, the subreaper flag.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Makes this process a child subreaper: orphaned descendants of its children are re-parented to
/// it instead of to init, so a module's descendants stay findable through parent links even when
/// they double-fork or `setsid`. See prctl(2), `PR_SET_CHILD_SUBREAPER`.
pub fn set_child_subreaper() -> io::Result<()> {
    Ok(nix::sys::prctl::set_child_subreaper(true)?)
}

/// Opens a pidfd for `pid`, which becomes readable when the process exits. See pidfd_open(2).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// How a reaped process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl From<std::process::ExitStatus> for Ended {
    /// How a process std's `Command` waited for ended.
    fn from(status: std::process::ExitStatus) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Ended::Exited(code),
            (None, signal) => Ended::Signaled(signal.unwrap_or(0)),
        }
    }
}

/// Resource usage of a reaped process, as wait4(2) reports it (the process and the children it
/// waited for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawRusage {
    /// User CPU time.
    pub user: Duration,
    /// System CPU time.
    pub system: Duration,
    /// Peak resident set size, KiB.
    pub max_rss_kib: i64,
    /// Page faults served without I/O.
    pub minor_faults: i64,
    /// Page faults that needed I/O.
    pub major_faults: i64,
    /// Block input operations.
    pub blocks_in: i64,
    /// Block output operations.
    pub blocks_out: i64,
    /// Signals received.
    pub signals: i64,
    /// Voluntary context switches.
    pub voluntary_switches: i64,
    /// Involuntary context switches.
    pub involuntary_switches: i64,
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec.max(0) as u64) + Duration::from_micros(tv.tv_usec.max(0) as u64)
}

/// Reaps `pid` (blocking unless `nohang`) and returns how it ended with its resource usage;
/// `None` with `nohang` when it has not ended yet. See wait4(2).
pub fn wait4(pid: i32, nohang: bool) -> io::Result<Option<(Ended, RawRusage)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; wait4 fills it in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: status and ru are valid, writable and live for the call.
        let rc = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
        if rc == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if rc == 0 {
            return Ok(None);
        }
        break;
    }
    let ended = if libc::WIFSIGNALED(status) {
        Ended::Signaled(libc::WTERMSIG(status))
    } else {
        Ended::Exited(libc::WEXITSTATUS(status))
    };
    let usage = RawRusage {
        user: timeval(ru.ru_utime),
        system: timeval(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss,
        minor_faults: ru.ru_minflt,
        major_faults: ru.ru_majflt,
        blocks_in: ru.ru_inblock,
        blocks_out: ru.ru_oublock,
        signals: ru.ru_nsignals,
        voluntary_switches: ru.ru_nvcsw,
        involuntary_switches: ru.ru_nivcsw,
    };
    Ok(Some((ended, usage)))
}

/// Whether this process has any child at all (alive or zombie). `waitid(P_ALL, WNOHANG |
/// WNOWAIT)` answers ECHILD only when there is none, and reaps nothing. See waitid(2).
pub fn has_children() -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::All, flags) != Err(Errno::ECHILD)
}

/// Sends `signal` to process `pid`; a process that is already gone is not an error.
pub fn kill(pid: i32, signal: Signal) -> io::Result<()> {
    match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sends `signal` to every process in group `pgid`; an empty group is not an error.
pub fn killpg(pgid: i32, signal: Signal) -> io::Result<()> {
    // Guard against `kill(0, ..)`/`kill(-1, ..)`, which would signal our own group or everyone.
    if pgid <= 1 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    kill(-pgid, signal)
}

/// Whether any process is left in group `pgid` (`kill(-pgid, 0)` answers ESRCH when none is).
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    nix::sys::signal::kill(Pid::from_raw(-pgid), None) != Err(Errno::ESRCH)
}

/// This process's id.
pub fn getpid() -> i32 {
    std::process::id() as i32
}
/// Whether `path` may be executed by us. See access(2).
pub fn executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::Ended;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn an_exit_status_reads_as_it_ended() {
        assert_eq!(Ended::from(ExitStatus::from_raw(3 << 8)), Ended::Exited(3));
        assert_eq!(Ended::from(ExitStatus::from_raw(9)), Ended::Signaled(9));
    }
}
