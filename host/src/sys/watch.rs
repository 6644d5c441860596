//! What the connect watcher of a noop sandbox needs: the loopback of a new network namespace,
//! a look into a watched process (its memory, its sockets), and loading a seccomp filter.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

use super::pidfd_open;

/// Brings up the loopback interface of this process's network namespace (a new one has `lo`
/// down, so even 127.0.0.1 would be unreachable inside). See netdevice(7), `SIOCSIFFLAGS`.
pub fn loopback_up() -> io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
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

/// Reads `len` bytes at `addr` in process `pid`'s memory (at most 256). See
/// process_vm_readv(2): the caller needs ptrace access to `pid` (the same credentials do).
pub fn read_process_memory(pid: i32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    use nix::sys::uio::{process_vm_readv, RemoteIoVec};
    let mut buf = vec![0u8; len.min(256)];
    let remote = RemoteIoVec {
        base: usize::try_from(addr).map_err(|_| io::Error::from_raw_os_error(libc::EFAULT))?,
        len: buf.len(),
    };
    let n = process_vm_readv(
        nix::unistd::Pid::from_raw(pid),
        &mut [io::IoSliceMut::new(&mut buf)],
        &[remote],
    )?;
    buf.truncate(n);
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
    let kind = nix::sys::socket::getsockopt(&copy, nix::sys::socket::sockopt::SockType)?;
    Ok(kind as i32)
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
