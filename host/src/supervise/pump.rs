//! The poll loop: writes the request, reads stdout and stderr, and watches for the module's exit,
//! all at once and never blocking on one of them, so a module that writes megabytes before it
//! reads its request cannot deadlock the host. Memory stays bounded whatever the module prints.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use crate::sys::{self, Interest};

/// Bytes read or written per call.
const CHUNK: usize = 64 * 1024;
/// How much of stderr is kept for the report: its end, where the error usually is.
pub const STDERR_TAIL: usize = 8 * 1024;

/// Why [`Pump::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The module process has exited (it is a zombie, not yet reaped).
    Exited,
    /// The module has exited and stdout and stderr are at end of file.
    Closed,
    /// The time given ran out first.
    Deadline,
}

/// The host's ends of the module's pipes, and what came out of them.
#[derive(Debug)]
pub struct Pump {
    stdin: Option<File>,
    request: Vec<u8>,
    written: usize,
    stdout: Option<File>,
    stderr: Option<File>,
    pidfd: Option<OwnedFd>,
    max_output: usize,
    /// Stdout, up to `max_output` bytes.
    pub out: Vec<u8>,
    /// How many bytes stdout had in all.
    pub out_total: u64,
    /// The last bytes of stderr (at most twice [`STDERR_TAIL`] before [`Pump::stderr_tail`]).
    err: Vec<u8>,
    /// How many bytes stderr had in all.
    pub err_total: u64,
}

impl Pump {
    /// A pump over the module's pipes that will write `request`.
    pub fn new(
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
        pidfd: OwnedFd,
        request: Vec<u8>,
        max_output: usize,
    ) -> Pump {
        Pump {
            stdin: Some(File::from(stdin)),
            request,
            written: 0,
            stdout: Some(File::from(stdout)),
            stderr: Some(File::from(stderr)),
            pidfd: Some(pidfd),
            max_output,
            out: Vec::new(),
            out_total: 0,
            err: Vec::new(),
            err_total: 0,
        }
    }

    /// Whether stdout and stderr are both at end of file.
    pub fn outputs_closed(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }

    /// Whether the module's exit has been seen.
    pub fn exited(&self) -> bool {
        self.pidfd.is_none()
    }

    /// Stops writing the request (the module is gone; the rest has no reader we care about).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Stops reading: what is left in the pipes is dropped with them.
    pub fn close_outputs(&mut self) {
        self.stdout = None;
        self.stderr = None;
    }

    /// The end of stderr, lossily decoded.
    pub fn stderr_tail(&self) -> String {
        let start = self.err.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&self.err[start..]).into_owned()
    }

    /// Pumps until the module exits (if that has not been seen yet), or until the outputs close
    /// after it exited, or until `until`.
    pub fn run(&mut self, until: Instant) -> io::Result<Wake> {
        loop {
            if self.exited() && self.outputs_closed() {
                return Ok(Wake::Closed);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(Wake::Deadline);
            }
            let mut fds = Vec::with_capacity(4);
            let mut slots = Vec::with_capacity(4);
            if let Some(f) = &self.pidfd {
                fds.push((f.as_fd(), Interest::Read));
                slots.push(Slot::Pid);
            }
            if let Some(f) = &self.stdin {
                fds.push((f.as_fd(), Interest::Write));
                slots.push(Slot::In);
            }
            if let Some(f) = &self.stdout {
                fds.push((f.as_fd(), Interest::Read));
                slots.push(Slot::Out);
            }
            if let Some(f) = &self.stderr {
                fds.push((f.as_fd(), Interest::Read));
                slots.push(Slot::Err);
            }
            let ready = sys::poll(&fds, until - now)?;
            drop(fds);
            let mut exited = false;
            for (slot, r) in slots.into_iter().zip(ready) {
                if !(r.readable || r.writable || r.hangup) {
                    continue;
                }
                match slot {
                    Slot::Pid => exited = true,
                    Slot::In => self.write_stdin(),
                    Slot::Out => self.read_stdout(),
                    Slot::Err => self.read_stderr(),
                }
            }
            if exited {
                self.pidfd = None;
                return Ok(Wake::Exited);
            }
        }
    }

    fn write_stdin(&mut self) {
        let Some(f) = &mut self.stdin else { return };
        while self.written < self.request.len() {
            let end = (self.written + CHUNK).min(self.request.len());
            match f.write(&self.request[self.written..end]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EPIPE: the module closed its stdin without reading it all; that is its right.
                Err(_) => break,
            }
        }
        // All written (or no reader): closing is the end of file the module reads to.
        self.stdin = None;
    }

    fn read_stdout(&mut self) {
        let Some(f) = &mut self.stdout else { return };
        let mut buf = [0u8; CHUNK];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.out_total += n as u64;
                    let room = self.max_output.saturating_sub(self.out.len());
                    self.out.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.stdout = None;
    }

    fn read_stderr(&mut self) {
        let Some(f) = &mut self.stderr else { return };
        let mut buf = [0u8; CHUNK];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.err_total += n as u64;
                    self.err.extend_from_slice(&buf[..n]);
                    // Keep only the tail; trimming in batches keeps it cheap.
                    if self.err.len() > 2 * STDERR_TAIL {
                        let cut = self.err.len() - STDERR_TAIL;
                        self.err.drain(..cut);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.stderr = None;
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Pid,
    In,
    Out,
    Err,
}
