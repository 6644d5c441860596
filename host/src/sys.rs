//! Every raw syscall and every `/proc` read of the host, behind small safe functions.
//!
//! The raw calls of the supervisor, the dance and the merge live here: the supervisor
//! (`supervise/`) speaks in pids, fds and [`ProcStat`]s, and the seams here are what a test or
//! a port would replace. (The sandbox's `fork` and `sigaction` are in `sandbox/enter.rs`, next
//! to the recipe they belong to; loading sink plugins is in `serve/sinks.rs`.)
//! Errors are `std::io::Error`s from `errno`; callers add the context (which module, which pid).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use nix::libc;

/// Makes this process a child subreaper: orphaned descendants of its children are re-parented to
/// it instead of to init, so a module's descendants stay findable through parent links even when
/// they double-fork or `setsid`. See prctl(2), `PR_SET_CHILD_SUBREAPER`.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    // SAFETY: siginfo_t is plain old data; waitid fills it in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: info is valid and writable for the call.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    !(rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

/// Sends `signal` to process `pid`; a process that is already gone is not an error.
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes two integers.
    if unsafe { libc::kill(pid, signal) } == -1 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    Ok(())
}

/// Sends `signal` to every process in group `pgid`; an empty group is not an error.
pub fn killpg(pgid: i32, signal: i32) -> io::Result<()> {
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
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(-pgid, 0) };
    !(rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH))
}

/// This process's id.
pub fn getpid() -> i32 {
    std::process::id() as i32
}

/// Sets `O_NONBLOCK` on `fd`, so the poll loop never blocks in read or write. See fcntl(2).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on an fd we borrow; no memory is passed.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags == -1 || libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
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
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, interest)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: match interest {
                Interest::Read => libc::POLLIN,
                Interest::Write => libc::POLLOUT,
            },
            revents: 0,
        })
        .collect();
    // Round up so that a wait of 0.3 ms does not become a busy loop of zero-timeout polls.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: pfds is a valid array of pfds.len() pollfd structs, alive for the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc == -1 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
        return Ok(vec![Ready::default(); fds.len()]);
    }
    Ok(pfds
        .iter()
        .map(|p| Ready {
            readable: p.revents & libc::POLLIN != 0,
            writable: p.revents & libc::POLLOUT != 0,
            hangup: p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0,
        })
        .collect())
}

/// One process as `/proc/PID/stat` describes it. See proc_pid_stat(5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// The short command name (`comm`).
    pub comm: String,
    /// State letter (`R`, `S`, `Z`...).
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
    /// Session.
    pub session: i32,
    /// Start time in clock ticks since boot: with the pid, it names a process across pid reuse.
    pub start_time: u64,
}

impl ProcStat {
    /// Whether the process has ended and waits to be reaped.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of `/proc/PID/stat`. The command name is in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); start time is field 22.
    Some(ProcStat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        session: rest.get(3)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

/// Reads `/proc/PID/stat`; `None` when the process is gone.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Every process on the system now (those that vanish while we read are skipped).
pub fn proc_table() -> Vec<ProcStat> {
    proc_table_in(Path::new("/proc"))
}

/// Every process that the procfs mounted at `proc` shows: the processes of the PID namespace
/// it was mounted from, numbered as there (which `/proc` may not be, for a process that
/// entered a PID namespace but still sees the host's tree).
pub fn proc_table_in(proc: &Path) -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir(proc) else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        entry.file_name().to_str()?.parse::<i32>().ok()?;
        parse_stat(&fs::read_to_string(entry.path().join("stat")).ok()?)
    })
    .collect()
}

/// The command line of `pid`, arguments joined by spaces; `[comm]` when it has none (a kernel
/// thread or a zombie), empty when the process is gone.
pub fn proc_cmdline(pid: i32) -> String {
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(bytes) if !bytes.is_empty() => {
            let trimmed = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
            String::from_utf8_lossy(trimmed).replace('\0', " ")
        }
        _ => proc_stat(pid)
            .map(|s| format!("[{}]", s.comm))
            .unwrap_or_default(),
    }
}

/// The pipe inodes `pid` holds open, as `(fd, inode)`, from the `pipe:[INODE]` links in
/// `/proc/PID/fd`. A process we may not look into holds nothing as far as we can tell.
pub fn proc_pipe_fds(pid: i32) -> Vec<(i32, u64)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
        let target = fs::read_link(entry.path()).ok()?;
        let target = target.to_str()?;
        let inode = target
            .strip_prefix("pipe:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        Some((fd, inode))
    })
    .collect()
}

/// The machine's host name, from the kernel (`/proc/sys/kernel/hostname`).
pub fn hostname() -> io::Result<String> {
    let name = fs::read_to_string(Path::new("/proc/sys/kernel/hostname"))?;
    Ok(name.trim().to_owned())
}

/// Whether `path` may be executed by us. See access(2).
pub fn executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// Gives the calling thread a mount namespace of its own, with every mount private, so that
/// what it mounts is seen by no other thread or process and goes away when the thread ends.
/// [unshare(2)](https://man7.org/linux/man-pages/man2/unshare.2.html)
pub fn private_mount_namespace() -> Result<(), nix::errno::Errno> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    make_mounts_private()
}

/// Makes every mount of this mount namespace private, recursively, so that nothing mounted
/// from here on propagates to the namespace it was copied from.
pub fn make_mounts_private() -> Result<(), nix::errno::Errno> {
    use nix::mount::{mount, MsFlags};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

/// Mounts a read-only overlay of `lowers` (topmost first) on `target`.
pub fn mount_overlay_readonly(lowers: &[&Path], target: &Path) -> Result<(), nix::errno::Errno> {
    crate::sandbox::mounts::overlay_read_only(&mut crate::sandbox::mounts::Kernel, lowers, target)
}

/// The `lowerdir=` value for `lowers` (topmost first). Mount options fit in one page, which
/// a few dozen absolute paths of stacked scratch layers would overflow; so the process moves
/// into the folder that holds all but the last (the live one) and names them relative to it.
/// The caller must be single-threaded or have its own working directory (`CLONE_FS`), as a
/// thread in its own mount namespace has.
pub fn overlay_lowerdir(lowers: &[&Path]) -> Result<String, nix::errno::Errno> {
    let (last, above) = match lowers.split_last() {
        Some((last, above)) if above.len() > 1 => (last, above),
        _ => {
            let dirs: Vec<String> = lowers.iter().map(|p| overlay_escape(p)).collect();
            return Ok(dirs.join(":"));
        }
    };
    // The deepest folder that holds all but at most two of them (the disco layer and a
    // module's files may lie elsewhere): those two stay absolute.
    let mut base = above[above.len() - 1].to_path_buf();
    while above.iter().filter(|p| p.starts_with(&base)).count() + 2 < above.len() {
        if !base.pop() {
            break;
        }
    }
    nix::unistd::chdir(&base)?;
    let mut dirs: Vec<String> = above
        .iter()
        .map(|p| match p.strip_prefix(&base) {
            Ok(rel) if !rel.as_os_str().is_empty() => overlay_escape(rel),
            _ => overlay_escape(p),
        })
        .collect();
    dirs.push(overlay_escape(last));
    Ok(dirs.join(":"))
}

/// Escapes a path for an overlay option list, where `,` separates options and `:` layers.
pub fn overlay_escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, '\\' | ',' | ':') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A read-only view of `live` on `target` that is a filesystem of its own (an overlay of `live`
/// and an empty tmpfs at `empty`), for stacking under layers that live on `live`'s
/// filesystem: overlayfs refuses lower layers nested inside one another ("overlapping lowerdir
/// path"), and a separate superblock is not nested in anything. Must run in a private mount
/// namespace.
pub fn mount_live_view(live: &Path, empty: &Path, target: &Path) -> Result<(), nix::errno::Errno> {
    use nix::mount::{mount, MsFlags};
    for dir in [empty, target] {
        std::fs::create_dir_all(dir)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc_eio())))?;
    }
    let fresh = std::fs::read_dir(empty).map_or(true, |mut d| d.next().is_none());
    if fresh {
        mount(
            Some("tmpfs"),
            empty,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("size=4k,mode=755"),
        )?;
    }
    mount_overlay_readonly(&[live, empty], target)
}

fn libc_eio() -> i32 {
    nix::libc::EIO
}

/// Brings up the loopback interface of this process's network namespace (a new one has `lo`
/// down, so even 127.0.0.1 would be unreachable inside). See netdevice(7), `SIOCSIFFLAGS`.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) takes three integers and returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd, and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq for the whole call; the kernel writes the flags into it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; the kernel only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
        // SAFETY: F_SETFD only changes the flag of a descriptor number; one that is already
        // closed (the listing's own) gives EBADF, which is fine.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Between fork and exec: no controlling terminal (a module can neither push keystrokes into
/// the caller's terminal with TIOCSTI nor open it as `/dev/tty`), while staying in the
/// caller's session, so that a module that leaves its process group or session is still seen
/// doing so (rule 2); and no descriptor but 0, 1 and 2 across the exec (kernels without
/// `CLOSE_RANGE_CLOEXEC` rely on [`cloexec_inherited`] at start). Async-signal-safe.
/// See tty_ioctl(4), `TIOCNOTTY`: from a process that does not lead its session it gives up
/// the terminal for that process (and what it starts) alone.
pub fn prepare_exec() -> io::Result<()> {
    // SAFETY: open, ioctl and close with a constant path and integer arguments; the
    // descriptor is closed before returning.
    unsafe {
        let fd = libc::open(
            c"/dev/tty".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        // No controlling terminal to begin with (ENXIO): nothing to give up.
        if fd >= 0 {
            let rc = libc::ioctl(fd, libc::TIOCNOTTY);
            let err = io::Error::last_os_error();
            libc::close(fd);
            if rc < 0 {
                return Err(err);
            }
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

/// Reads `len` bytes at `addr` in process `pid`'s memory (at most 256). See
/// process_vm_readv(2): the caller needs ptrace access to `pid` (the same credentials do).
pub fn read_process_memory(pid: i32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len.min(256)];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, valid for writes of its length for the whole call; the
    // remote range is the other process's, which the kernel checks.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The type (`SOCK_STREAM`, `SOCK_DGRAM`...) of socket `fd` of process `pid`, through a copy
/// of it (pidfd_getfd(2), which needs ptrace access to `pid`).
pub fn socket_type_of(pid: i32, fd: i32) -> io::Result<i32> {
    let pidfd = pidfd_open(pid)?;
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags; it returns a new fd.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us, and nothing else owns it.
    let copy = unsafe { OwnedFd::from_raw_fd(copy as i32) };
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are valid for writes for the whole call.
    let rc = unsafe {
        libc::getsockopt(
            copy.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(kind)
}

/// Loads the classic BPF program `program` (whole `sock_filter`s) as a seccomp filter on this
/// thread, with `flags` (`SECCOMP_FILTER_FLAG_*`); returns the notification listener when
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER` is among them. One system call: libseccomp's own load
/// probes the kernel's API first, a dozen calls in each process that loads a filter. Without
/// `no_new_privs` the caller needs `CAP_SYS_ADMIN`. See seccomp(2).
pub fn seccomp_load(
    program: &[libc::sock_filter],
    flags: libc::c_ulong,
) -> io::Result<Option<OwnedFd>> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, valid for reads of `len` instructions for the whole
    // call; the kernel copies it before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER == 0 {
        return Ok(None);
    }
    // SAFETY: with NEW_LISTENER the kernel returns a new descriptor that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(rc as i32) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_in_the_name() {
        let s = parse_stat(
            "42 (a) b (c)) S 1 42 42 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 55762 3133440 379",
        )
        .unwrap();
        assert_eq!(s.pid, 42);
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!((s.state, s.ppid, s.pgrp, s.session), ('S', 1, 42, 42));
        assert_eq!(s.start_time, 55762);
    }

    #[test]
    fn own_stat_is_read() {
        let me = proc_stat(getpid()).unwrap();
        assert_eq!(me.pid, getpid());
        assert!(!me.is_zombie());
    }
}

/// Where a file or folder lives, as the kernel names it: its device, inode and the ID of the
/// mount it was reached through (statx(2), `STATX_MNT_ID`, zero on kernels before 5.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// The mount's ID, as in `/proc/self/mountinfo`.
    pub mnt_id: u64,
}

/// The [`Placement`] of what `fd` refers to (any kind of descriptor, `O_PATH` included).
pub fn placement(fd: BorrowedFd<'_>) -> io::Result<Placement> {
    // SAFETY: statx writes one `struct statx` into the zeroed buffer we own; the empty path
    // with AT_EMPTY_PATH makes it describe `fd` itself.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_INO | libc::STATX_MNT_ID,
            &mut st,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    let mnt_id = if st.stx_mask & libc::STATX_MNT_ID != 0 {
        st.stx_mnt_id
    } else {
        0
    };
    Ok(Placement {
        dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        mnt_id,
    })
}

/// The filesystem's ID (statfs(2) `f_fsid`): derived from the filesystem's UUID on disk
/// filesystems, so it names the same filesystem after a reboot, when device numbers and mount
/// IDs may have changed.
pub fn fsid(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = nix::sys::statfs::fstatfs(fd)?;
    // SAFETY: fsid_t is two ints; reading them as one u64 copies plain bytes.
    let raw: [i32; 2] = unsafe { std::mem::transmute(st.filesystem_id()) };
    Ok((u64::from(raw[0] as u32) << 32) | u64::from(raw[1] as u32))
}

/// `len` random bytes from the kernel (getrandom(2)), for names no one can predict.
pub fn random_bytes(len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        // SAFETY: getrandom writes at most `len - filled` bytes into our buffer from `filled`.
        let rc = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), len - filled, 0) };
        if rc == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += rc as usize;
    }
    Ok(buf)
}

/// This boot's ID (`/proc/sys/kernel/random/boot_id`): device numbers and mount IDs are
/// compared only within one boot.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Makes the folder `path` (and its missing parents) and leaves it 0700: state that names
/// every path a dance changes, and holds parameters, is root's alone.
pub fn private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

/// Makes the child that `cmd` spawns move itself into the cgroups whose `cgroup.procs` files
/// `procs` are open for writing, after the fork and before the exec, so that the module is a
/// member from its first instruction and everything it forks is one too. Writing `0` to
/// `cgroup.procs` moves the writer (cgroups(7), cgroup-v2.rst "Processes"). A failed move fails
/// the spawn with that error: a module must never run outside the cgroup it was given.
pub fn enter_cgroups_before_exec(cmd: &mut std::process::Command, procs: Vec<OwnedFd>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child, where only async-signal-safe calls are
    // allowed: it does nothing but write(2) on descriptors it already owns, and builds its
    // error from errno without allocating.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &procs {
                if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Whether `path` is on a cgroup2 filesystem (statfs(2), `CGROUP2_SUPER_MAGIC`).
pub fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// `struct clone_args` of clone3(2), as the kernel defines it (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3(2) flags (linux/sched.h).
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A program to start in a cgroup: everything the child needs, prepared before the clone, so
/// that the child does nothing but system calls (it is a copy of a possibly multi-threaded
/// process, where only async-signal-safe calls are allowed).
#[derive(Debug)]
pub struct SpawnPlan {
    /// The program's path (already looked up in `PATH`).
    pub program: std::ffi::CString,
    /// Its arguments, `argv[0]` first.
    pub argv: Vec<std::ffi::CString>,
    /// Its whole environment, `NAME=VALUE`.
    pub envp: Vec<std::ffi::CString>,
    /// The cgroup2 folder the child starts in, open (`O_DIRECTORY`).
    pub cgroup: OwnedFd,
    /// `cgroup.procs` files of further (v1) cgroups the child moves itself into before exec.
    pub also_into: Vec<OwnedFd>,
}

/// Why [`spawn_in_cgroup`] did not start its program.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// clone3 itself failed: `ENOSYS`, `EINVAL` or `E2BIG` on a kernel without clone3 or
    /// `CLONE_INTO_CGROUP` (before 5.7), where moving the child in before exec still works.
    #[error("clone3: {0}")]
    Clone(#[source] io::Error),
    /// The pipes could not be made, or the child could not set itself up or exec.
    #[error("{0}")]
    Start(#[source] io::Error),
}

impl SpawnError {
    /// Whether the kernel lacks clone3 with `CLONE_INTO_CGROUP`.
    pub fn unsupported(&self) -> bool {
        matches!(self, SpawnError::Clone(e)
            if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG)))
    }
}

/// A child started by [`spawn_in_cgroup`]: its pid, its pidfd and the parent's pipe ends.
#[derive(Debug)]
pub struct RawChild {
    /// Process id (also its process group).
    pub pid: i32,
    /// Readable when it exits.
    pub pidfd: OwnedFd,
    /// Its stdin, to write.
    pub stdin: OwnedFd,
    /// Its stdout, to read.
    pub stdout: OwnedFd,
    /// Its stderr, to read.
    pub stderr: OwnedFd,
}

/// A pipe whose both ends are close-on-exec and numbered 3 or above (so that putting the
/// child's ends on 0, 1 and 2 never overwrites another of them).
fn pipe_high() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us these two fds, owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let high = |fd: OwnedFd| -> io::Result<OwnedFd> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        // SAFETY: F_DUPFD_CLOEXEC duplicates an fd we own into a new one.
        let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if new == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd from the kernel, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(new) })
    };
    Ok((high(r)?, high(w)?))
}

/// Starts `plan` with clone3(2) and `CLONE_INTO_CGROUP`: the child is a member of the cgroup
/// from its first instant, without a migration (writing `cgroup.procs` takes a lock whose
/// write side waits for an RCU grace period, milliseconds on a busy machine). The child leads
/// a process group of its own, has the three pipes as stdin, stdout and stderr, starts in
/// `/`, with an empty signal mask and SIGPIPE at its default. An exec failure comes back as
/// its errno; `ENOSYS` or `EINVAL` from clone3 means a kernel without it (before 5.7).
pub fn spawn_in_cgroup(plan: &SpawnPlan) -> Result<RawChild, SpawnError> {
    use std::ptr;
    let (in_r, in_w) = pipe_high().map_err(SpawnError::Start)?;
    let (out_r, out_w) = pipe_high().map_err(SpawnError::Start)?;
    let (err_r, err_w) = pipe_high().map_err(SpawnError::Start)?;
    // The exec-error pipe: closed by a successful exec, or carries the errno of a failure.
    let (fail_r, fail_w) = pipe_high().map_err(SpawnError::Start)?;
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(ptr::null());
    let also: Vec<libc::c_int> = plan.also_into.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is valid and writable.
    unsafe { libc::sigemptyset(&mut empty) };
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: CLONE_PIDFD | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: plan.cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    let fds = [
        (in_r.as_raw_fd(), 0),
        (out_w.as_raw_fd(), 1),
        (err_w.as_raw_fd(), 2),
    ];
    let (program, fail) = (plan.program.as_ptr(), fail_w.as_raw_fd());
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of our memory and fds.
    // `args` and `pidfd` live across the call.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: in the child, only async-signal-safe system calls on data prepared above
        // (no allocation, no lock); every path ends in execve or _exit.
        unsafe {
            let die = |errno: libc::c_int| -> ! {
                let bytes = errno.to_ne_bytes();
                libc::write(fail, bytes.as_ptr().cast(), bytes.len());
                libc::_exit(127)
            };
            let errno = || *libc::__errno_location();
            if libc::setpgid(0, 0) == -1 {
                die(errno());
            }
            libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            for (from, to) in fds {
                if libc::dup2(from, to) == -1 {
                    die(errno());
                }
            }
            if libc::chdir(c"/".as_ptr()) == -1 {
                die(errno());
            }
            for fd in &also {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    die(errno());
                }
            }
            // No caller's terminal, no descriptor but 0, 1 and 2 (see `prepare_exec`).
            if let Err(e) = prepare_exec() {
                die(e.raw_os_error().unwrap_or(libc::EIO));
            }
            libc::execve(program, argv.as_ptr(), envp.as_ptr());
            die(errno());
        }
    }
    if pid == -1 {
        return Err(SpawnError::Clone(io::Error::last_os_error()));
    }
    let pid = pid as i32;
    // SAFETY: CLONE_PIDFD stored a new fd for the child in `pidfd`; we own it now.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop((in_r, out_w, err_w, fail_w));
    let mut buf = [0u8; 4];
    let mut got = 0;
    let mut fail_file = fs::File::from(fail_r);
    loop {
        match io::Read::read(&mut fail_file, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SpawnError::Start(e)),
        }
    }
    if got == buf.len() {
        // The exec failed: reap the child, which exits at once, and say why.
        let _ = wait4(pid, false);
        return Err(SpawnError::Start(io::Error::from_raw_os_error(
            i32::from_ne_bytes(buf),
        )));
    }
    Ok(RawChild {
        pid,
        pidfd,
        stdin: in_w,
        stdout: out_r,
        stderr: err_r,
    })
}
