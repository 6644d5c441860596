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

fn broken(what: &str) -> String {
    format!("the dance's sandbox {what} (see the error above)")
}

impl Worker {
    /// Starts `disco __dance-sandbox` for `setup` (saved at `path`).
    pub fn start(setup: &Setup, path: &Path) -> Result<Worker, String> {
        let json = serde_json::to_vec(setup).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut child = Command::new(&setup.tools)
            .arg("__dance-sandbox")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the dance's sandbox: {e}"))?;
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
            _ => return Err(broken("could not be set up")),
        }
        if setup.noop && setup.network == Network::Outbound {
            // The sandbox's network namespace is that of the process we started (it unshared
            // it before forking the worker); no module runs before it has its way out.
            worker.outbound = Some(
                crate::sandbox::outbound::Outbound::start(worker.child.id())
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(worker)
    }

    /// Runs one module.
    pub fn run(&mut self, request: &Request) -> Result<Reply, String> {
        let limit = self.send(request)?;
        self.receive(limit)
    }

    /// Sends a request; returns how long its reply may take.
    pub fn send(&mut self, request: &Request) -> Result<Duration, String> {
        let mut json = serde_json::to_string(request).map_err(|e| e.to_string())?;
        json.push('\n');
        let to = self.to.as_mut().ok_or_else(|| broken("has ended"))?;
        to.write_all(json.as_bytes())
            .and_then(|()| to.flush())
            .map_err(|_| broken("has ended"))?;
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
    pub fn receive(&mut self, limit: Duration) -> Result<Reply, String> {
        let deadline = std::time::Instant::now() + limit;
        while self.from.buffer().is_empty() {
            use std::os::fd::AsFd;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                let _ = self.child.kill();
                return Err(format!(
                    "the dance's sandbox did not answer within {}s",
                    limit.as_secs()
                ));
            }
            let ready = crate::sys::poll(
                &[(self.from.get_ref().as_fd(), crate::sys::Interest::Read)],
                left,
            )
            .map_err(|e| format!("the dance's sandbox: {e}"))?;
            if ready.iter().any(|r| r.readable || r.hangup) {
                break;
            }
        }
        let mut line = String::new();
        match self.from.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).map_err(|e| e.to_string()),
            _ => Err(broken("has ended")),
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
