//! Starting a module in its cgroup: clone3(2) with `CLONE_INTO_CGROUP`, or a move into the
//! cgroups before exec.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

use super::{prepare_exec, wait4};

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
                if nix::unistd::write(fd, b"0")? != 1 {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
            }
            Ok(())
        });
    }
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
    use nix::fcntl::{fcntl, FcntlArg};
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let high = |fd: OwnedFd| -> io::Result<OwnedFd> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        let new = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
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
    let empty = nix::sys::signal::SigSet::empty();
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
        // (no allocation, no lock); every path ends in execve or _exit. Raw `libc` on
        // purpose: this child of a possibly multi-threaded process may not allocate or take
        // a lock, and nix's `dup2` wants an owned target and `execve` builds its arrays.
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
            libc::sigprocmask(libc::SIG_SETMASK, empty.as_ref(), ptr::null_mut());
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
