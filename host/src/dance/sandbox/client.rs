//! The dance's side of its sandbox: starts `disco __dance-sandbox`, sends each [`Request`]
//! and waits, bounded, for its [`Reply`].

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use super::wire::{differ_limit, Reply, Request, Setup};
use crate::sandbox::Network;

/// The dance's side of the sandbox: requests in, replies out.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
    /// `--network outbound`: the sandbox's way out, stopped after the worker (fields drop
    /// after [`Drop::drop`]).
    outbound: Option<crate::sandbox::outbound::Outbound>,
}

/// Why the dance's sandbox could not serve the dance.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// Its setup could not be written.
    #[error("{path}: {source}")]
    Setup {
        /// The setup file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `disco __dance-sandbox` could not be started.
    #[error("cannot start the dance's sandbox: {0}")]
    Start(#[source] std::io::Error),
    /// It failed or ended; it printed why on stderr.
    #[error("the dance's sandbox {0} (see the error above)")]
    Broken(&'static str),
    /// Its way out (`--network outbound`) could not be made.
    #[error(transparent)]
    Outbound(#[from] crate::sandbox::SandboxError),
    /// It did not answer in time (it was killed).
    #[error("the dance's sandbox did not answer within {0}s")]
    Timeout(u64),
    /// Its reply could not be waited for.
    #[error("the dance's sandbox: {0}")]
    Wait(#[source] std::io::Error),
    /// A request or reply could not be encoded or decoded.
    #[error("the dance's sandbox: {0}")]
    Wire(#[from] serde_json::Error),
}

impl Worker {
    /// Starts `disco __dance-sandbox` for `setup` (saved at `path`).
    pub fn start(setup: &Setup, path: &Path) -> Result<Worker, WorkerError> {
        let json = serde_json::to_vec(setup)?;
        std::fs::write(path, json).map_err(|source| WorkerError::Setup {
            path: path.to_owned(),
            source,
        })?;
        let mut child = Command::new(&setup.tools)
            .arg("__dance-sandbox")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(WorkerError::Start)?;
        let to = child.stdin.take();
        let from = BufReader::new(child.stdout.take().expect("piped"));
        let mut worker = Worker {
            child,
            to,
            from,
            outbound: None,
        };
        // The worker says it is ready once `/dev`, `/proc` and `/sys` are in place.
        let mut line = String::new();
        match worker.from.read_line(&mut line) {
            Ok(n) if n > 0 && line.trim() == "ready" => {}
            _ => return Err(WorkerError::Broken("could not be set up")),
        }
        if setup.noop && setup.network == Network::Outbound {
            // The sandbox's network namespace is that of the process we started (it unshared
            // it before forking the worker); no module runs before it has its way out.
            worker.outbound = Some(crate::sandbox::outbound::Outbound::start(
                worker.child.id(),
            )?);
        }
        Ok(worker)
    }

    /// Runs one module.
    pub fn run(&mut self, request: &Request) -> Result<Reply, WorkerError> {
        let limit = self.send(request)?;
        self.receive(limit)
    }

    /// Sends a request; returns how long its reply may take.
    pub fn send(&mut self, request: &Request) -> Result<Duration, WorkerError> {
        let mut json = serde_json::to_string(request)?;
        json.push('\n');
        let to = self.to.as_mut().ok_or(WorkerError::Broken("has ended"))?;
        to.write_all(json.as_bytes())
            .and_then(|()| to.flush())
            .map_err(|_| WorkerError::Broken("has ended"))?;
        // The worker bounds every piece; this bounds the worker, so the dance never hangs.
        // (A diff has the worker's own bound, `differ_limit`.)
        let diff = request
            .earlier
            .as_ref()
            .map_or(Duration::ZERO, differ_limit)
            + Duration::from_secs(30);
        Ok(match &request.module {
            Some(m) => {
                let pieces = m.plan.templates.len() + m.plan.scripts.len() + 2;
                m.plan.timeout * pieces as u32 + diff.max(Duration::from_secs(630))
            }
            None => diff.max(Duration::from_secs(630)),
        })
    }

    /// Waits (up to `limit`) for the reply to the request sent last.
    pub fn receive(&mut self, limit: Duration) -> Result<Reply, WorkerError> {
        let deadline = std::time::Instant::now() + limit;
        while self.from.buffer().is_empty() {
            use std::os::fd::AsFd;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                let _ = self.child.kill();
                return Err(WorkerError::Timeout(limit.as_secs()));
            }
            let ready = crate::sys::poll(
                &[(self.from.get_ref().as_fd(), crate::sys::Interest::Read)],
                left,
            )
            .map_err(WorkerError::Wait)?;
            if ready.iter().any(|r| r.readable || r.hangup) {
                break;
            }
        }
        let mut line = String::new();
        match self.from.read_line(&mut line) {
            Ok(n) if n > 0 => Ok(serde_json::from_str(&line)?),
            _ => Err(WorkerError::Broken("has ended")),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // End of input ends the worker, and with it every mount of the dance; one that does
        // not end soon is killed (its namespaces go with it).
        drop(self.to.take());
        if let Ok(fd) = crate::sys::pidfd_open(self.child.id() as i32) {
            use std::os::fd::AsFd;
            let _ = crate::sys::poll(
                &[(fd.as_fd(), crate::sys::Interest::Read)],
                Duration::from_secs(10),
            );
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
