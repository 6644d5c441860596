//! "Would connect": every connection a noop script attempts, with its address, like "Would
//! execute" for the commands the shims trap.
//!
//! A seccomp filter notifies a thread of the process that runs the module's pieces
//! (`seccomp_unotify(2)`) of each `connect`, each `sendto` with an address and each
//! `sendmsg`; the thread reads the address from the caller's memory, notes it, and lets the
//! call go on. The sandbox's network namespace is what keeps the call from reaching anything
//! (it has only its own loopback): the script gets what an unreachable service gives,
//! `ECONNREFUSED` or `ENETUNREACH`, and its logic goes on. Nothing is decided from what the
//! thread reads (which the caller could change meanwhile): it only reports.
//!
//! The thread starts before the process drops noop's capabilities (which are a thread's own),
//! so it can read the memory of a piece that changed its credentials (`su nobody -c ...`); it
//! runs no code of the module, and the process is not dumpable, so no piece can reach it.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use std::os::fd::{AsRawFd, OwnedFd};

use libseccomp::{notify_id_valid, ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use nix::libc;

use super::SandboxError;

/// The connections a module's pieces attempted, as they come.
#[derive(Debug)]
pub struct Watcher {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    /// Starts the thread that reads the notifications of `listener`, the descriptor that
    /// loading noop's watching filter ([`super::seccomp::Program::load`]) gave. Called while
    /// the process is single-threaded still (so that every later thread and child is under
    /// the filter) and holds `CAP_SYS_ADMIN` (so setuid programs keep working: no
    /// `no_new_privs`).
    pub fn start(listener: OwnedFd) -> Result<Watcher, SandboxError> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let noted = Arc::clone(&seen);
        std::thread::Builder::new()
            .name("would-connect".into())
            // The listener lives as long as the thread, that is, as the process.
            .spawn(move || serve(listener.as_raw_fd(), &noted))
            .map_err(|source| SandboxError::Seccomp {
                what: "watch",
                source,
            })?;
        Ok(Watcher { seen })
    }

    /// The connections attempted since the last call, each once, in the order they came.
    pub fn take(&self) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<String> = Vec::new();
        for s in seen.drain(..) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }
}

/// The watching thread: each notification read, noted, and let go on. It ends only with the
/// process (a closed listener would fail the calls with ENOSYS).
fn serve(fd: libseccomp::ScmpFd, seen: &Mutex<Vec<String>>) {
    loop {
        let Ok(req) = ScmpNotifReq::receive(fd) else {
            // Interrupted, or the caller died before we read it: the next one.
            continue;
        };
        let address = describe(&req);
        // The caller is still the one that made the call (its pid was not reused meanwhile),
        // so what was read is its.
        if let (Some(address), Ok(())) = (address, notify_id_valid(fd, req.id)) {
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(address);
        }
        let _ = ScmpNotifResp::new_continue(req.id, ScmpNotifRespFlags::empty()).respond(fd);
    }
}

/// The sockets of glibc's name service cache: every user or host lookup tries it, and it only
/// answers queries, so naming it would bury what matters.
const QUIET: &[&str] = &["unix /var/run/nscd/socket", "unix /run/nscd/socket"];

/// The call's destination, as `tcp 127.0.0.1:5432`, `udp [::1]:53`, `unix /run/x.sock` or
/// `unix @abstract`; `None` when it has none worth saying (netlink, a socket's own peer).
fn describe(req: &ScmpNotifReq) -> Option<String> {
    let pid = i32::try_from(req.pid).ok()?;
    let args = req.data.args;
    let name = req.data.syscall.get_name().ok()?;
    let (fd, addr, len) = match name.as_str() {
        "connect" => (args[0], args[1], args[2]),
        "sendto" => (args[0], args[4], args[5]),
        "sendmsg" => {
            // struct msghdr starts with msg_name (a pointer) and msg_namelen (a socklen_t).
            let head = crate::sys::read_process_memory(pid, args[1], 12).ok()?;
            let name = u64::from_ne_bytes(head.get(..8)?.try_into().ok()?);
            let len = u32::from_ne_bytes(head.get(8..12)?.try_into().ok()?);
            (args[0], name, u64::from(len))
        }
        _ => return None,
    };
    if addr == 0 || len < 2 {
        return None;
    }
    let bytes = crate::sys::read_process_memory(pid, addr, usize::try_from(len).ok()?).ok()?;
    let kind = || {
        let fd = i32::try_from(fd).ok()?;
        match crate::sys::socket_type_of(pid, fd).ok()? {
            libc::SOCK_STREAM => Some("tcp"),
            libc::SOCK_DGRAM => Some("udp"),
            _ => None,
        }
    };
    address(&bytes, kind).filter(|a| !QUIET.contains(&a.as_str()))
}

/// A socket address in text, for the families a script reaches services with; `kind` says
/// `tcp` or `udp` for an internet socket (`inet` when it cannot be told).
fn address(bytes: &[u8], kind: impl FnOnce() -> Option<&'static str>) -> Option<String> {
    let family = i32::from(u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?));
    let port = || bytes.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]));
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            let kind = kind().unwrap_or("inet");
            Some(format!("{kind} {}:{}", Ipv4Addr::from(ip), port()?))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            let kind = kind().unwrap_or("inet");
            Some(format!("{kind} [{}]:{}", Ipv6Addr::from(ip), port()?))
        }
        libc::AF_UNIX => {
            let path = bytes.get(2..)?;
            match path.split_first() {
                // An abstract name: its bytes are the name, NULs and all.
                Some((0, name)) => Some(format!("unix @{}", String::from_utf8_lossy(name))),
                Some(_) => {
                    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                    Some(format!("unix {}", String::from_utf8_lossy(&path[..end])))
                }
                None => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_a_person_would_write_them() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&5432u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            address(&v4, || Some("tcp")).as_deref(),
            Some("tcp 127.0.0.1:5432")
        );
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&53u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(address(&v6, || None).as_deref(), Some("inet [::1]:53"));
        let mut unix = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        unix.extend_from_slice(b"/run/x.sock\0junk");
        assert_eq!(address(&unix, || None).as_deref(), Some("unix /run/x.sock"));
        let mut abs = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        abs.extend_from_slice(b"\0name");
        assert_eq!(address(&abs, || None).as_deref(), Some("unix @name"));
        let netlink = (libc::AF_NETLINK as u16).to_ne_bytes().to_vec();
        assert_eq!(address(&netlink, || None), None);
    }
}
