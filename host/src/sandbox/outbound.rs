//! `--network outbound`: a noop sandbox's network namespace gets a way out through
//! `slirp4netns`, a user-mode network stack (Debian's `slirp4netns`): the namespace sees a
//! tap device (`tap0`, 10.0.2.100/24, default route through 10.0.2.2), and slirp4netns, in the
//! host's namespace, makes each connection with ordinary sockets of its own. Its
//! `--disable-host-loopback` keeps the host's loopback unreachable (10.0.2.2 does not lead to
//! 127.0.0.1), and the sandbox's own loopback stays its own.
//!
//! The trade-off, plainly: with outbound access a noop script can change a remote service
//! (and reach what the host serves on its other addresses); it is for sites whose scripts
//! must download. The default, [`super::Network::Loopback`], reaches nothing.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::SandboxError;

/// The program, and what to install when it is missing.
const SLIRP: &str = "slirp4netns";

/// How long slirp4netns may take to configure the namespace.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running slirp4netns for one namespace; it ends when this is dropped (or when disco
/// dies: it watches a pipe whose other end only disco holds).
#[derive(Debug)]
pub struct Outbound {
    child: Child,
    /// Closing it tells slirp4netns to exit (`--exit-fd`).
    exit: Option<OwnedFd>,
}

fn failed(what: &'static str) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Outbound { what, source }
}

impl Outbound {
    /// Connects the network namespace of process `pid` to the outside through slirp4netns,
    /// and waits until it is configured.
    pub fn start(pid: u32) -> Result<Outbound, SandboxError> {
        let (exit_rx, exit_tx) = std::io::pipe().map_err(failed("make a pipe for"))?;
        let (mut ready_rx, ready_tx) = std::io::pipe().map_err(failed("make a pipe for"))?;
        let (exit_fd, ready_fd) = (exit_rx.as_raw_fd(), ready_tx.as_raw_fd());
        let mut cmd = Command::new(SLIRP);
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--exit-fd=3",
            "--ready-fd=4",
            "--netns-type=path",
        ])
        .arg(format!("/proc/{pid}/ns/net"))
        .arg("tap0")
        // Its chatter ("sent tapfd...") is not the dance's; a failure shows as no "ready".
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: `renumber` only duplicates descriptors and allocates nothing:
        // async-signal-safe; no memory of the parent is touched.
        unsafe {
            // Its two descriptors as 3 and 4.
            cmd.pre_exec(move || crate::sys::renumber([(exit_fd, 3), (ready_fd, 4)]));
        }
        let child = cmd.spawn().map_err(|e| SandboxError::Outbound {
            what: "start (apt-get install slirp4netns)",
            source: e,
        })?;
        drop(cmd);
        drop((exit_rx, ready_tx));
        let mut outbound = Outbound {
            child,
            exit: Some(OwnedFd::from(exit_tx)),
        };
        // It writes "1" once the namespace is configured; an end of file means it failed.
        use std::os::fd::AsFd;
        let ready = crate::sys::poll(
            &[(ready_rx.as_fd(), crate::sys::Interest::Read)],
            READY_WITHIN,
        )
        .map_err(failed("wait for"))?;
        let mut byte = [0u8; 1];
        if !ready.iter().any(|r| r.readable) || !matches!(ready_rx.read(&mut byte), Ok(1)) {
            outbound.stop();
            return Err(SandboxError::Outbound {
                what: "configure the network with",
                source: std::io::Error::other("it did not say it was ready"),
            });
        }
        Ok(outbound)
    }

    fn stop(&mut self) {
        drop(self.exit.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.stop();
    }
}
