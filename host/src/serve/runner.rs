//! Running one queued fix: each fix runs in a child `disco __serve-fix` process, which calls
//! [`supervise::run`] exactly as `disco fix` does.
//!
//! Why a child and not a thread: the host finds a module's escaped processes as orphans
//! re-parented to it (it is a child subreaper), and orphans carry no mark of the fix they came
//! from (see `supervise/track.rs`). Two fixes supervised by one process could claim, kill or
//! report each other's processes. One small supervising process per fix keeps every fix's
//! orphans its own, at the cost of one fork and exec (about a millisecond; `bench/serve.sh`).
//! The child gets nothing from the alert on its command line: the target, the module and the
//! request come on its stdin.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rules::Planned;
use crate::supervise::{self, FixSpec, LockLevel};

/// What the parent tells `disco __serve-fix` on the first line of its stdin; the request
/// document follows, to the end of stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildSpec {
    /// The module.
    pub module: PathBuf,
    /// The target host.
    pub host: String,
    /// The target service.
    pub service: String,
    /// The timeout, ms.
    pub timeout_ms: u64,
    /// The lock level (`service@host`, `host`, `service`, `none`).
    pub lock: String,
    /// The lock directory.
    pub lock_dir: PathBuf,
}

/// How one fix ended, as the parent sees it.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The decided ReturnCode.
    pub return_code: u32,
    /// Its comment.
    pub comment: String,
    /// Wall time of the fix, ms.
    pub duration_ms: u64,
    /// The host's outcome as JSON (`disco fix --format json`), or `{"error": ...}`.
    pub outcome: serde_json::Value,
}

/// Starts fixes as child processes of `exe` (the `disco` binary).
#[derive(Debug, Clone)]
pub struct Runner {
    exe: PathBuf,
    lock_dir: PathBuf,
}

fn failed(why: String) -> Ran {
    Ran {
        return_code: u32::from(protocol::ReturnCode::PROBLEM.value()),
        comment: why.clone(),
        duration_ms: 0,
        outcome: serde_json::json!({ "error": why }),
    }
}

impl Runner {
    /// A runner of `exe __serve-fix`, locking under `lock_dir`.
    pub fn new(exe: &Path, lock_dir: &Path) -> Runner {
        Runner {
            exe: exe.to_owned(),
            lock_dir: lock_dir.to_owned(),
        }
    }

    /// Runs one fix to its end (the host bounds its time) and says how it went.
    pub fn run(&self, plan: &Planned) -> Ran {
        let spec = ChildSpec {
            module: plan.module.clone(),
            host: plan.host.clone(),
            service: plan.service.clone(),
            timeout_ms: u64::try_from(plan.timeout.as_millis()).unwrap_or(u64::MAX),
            lock: plan.lock.to_string(),
            lock_dir: self.lock_dir.clone(),
        };
        let mut input = match serde_json::to_vec(&spec) {
            Ok(v) => v,
            Err(e) => return failed(format!("cannot encode the fix: {e}")),
        };
        input.push(b'\n');
        input.extend_from_slice(&plan.request);
        let child = Command::new(&self.exe)
            .arg("__serve-fix")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own group: a Ctrl-C meant for the server (which then lets fixes finish) must
            // not reach the fixes themselves.
            .process_group(0)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return failed(format!("cannot start {}: {e}", self.exe.display())),
        };
        // The child reads all of stdin before it writes anything, so this cannot deadlock.
        let wrote = child.stdin.take().map(|mut s| s.write_all(&input));
        let mut out = Vec::new();
        let read = child.stdout.take().map(|mut s| s.read_to_end(&mut out));
        let status = child.wait();
        if let Some(Err(e)) = wrote {
            return failed(format!("cannot hand the fix to its runner: {e}"));
        }
        if let Some(Err(e)) = read {
            return failed(format!("cannot read the fix's outcome: {e}"));
        }
        let outcome: serde_json::Value = match serde_json::from_slice(&out) {
            Ok(v) => v,
            Err(_) => {
                let how = match status {
                    Ok(s) if s.signal().is_some() => {
                        format!("signal {}", s.signal().unwrap_or_default())
                    }
                    Ok(s) => format!("exit status {}", s.code().unwrap_or_default()),
                    Err(e) => e.to_string(),
                };
                return failed(format!("the fix runner ended ({how}) without an outcome"));
            }
        };
        let return_code = outcome["return_code"]
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(u32::from(protocol::ReturnCode::PROBLEM.value()));
        let comment = outcome["comment"]
            .as_str()
            .or(outcome["error"].as_str())
            .unwrap_or_default()
            .to_owned();
        Ran {
            return_code,
            comment,
            duration_ms: outcome["duration_ms"].as_u64().unwrap_or(0),
            outcome,
        }
    }
}

/// The child's side (`disco __serve-fix`): reads a [`ChildSpec`] line and the request from
/// `input`, runs the fix under the host, and writes its outcome as one JSON line (or
/// `{"error": ..., "return_code": N}` when it could not be run at all).
pub fn run_child(input: &[u8], out: &mut impl Write) -> std::io::Result<()> {
    let (head, request) = match input.iter().position(|&b| b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let answer = match serde_json::from_slice::<ChildSpec>(head) {
        Err(e) => {
            serde_json::json!({ "error": format!("bad fix spec on stdin: {e}"), "return_code": 4 })
        }
        Ok(c) => {
            let lock: Result<LockLevel, String> = c.lock.parse();
            match lock {
                Err(why) => serde_json::json!({ "error": why, "return_code": 4 }),
                Ok(lock) => {
                    let mut spec = FixSpec::new(&c.module, request.to_vec(), c.host, c.service);
                    spec.timeout = Duration::from_millis(c.timeout_ms.max(1));
                    spec.lock = lock;
                    spec.lock_dir = c.lock_dir;
                    match supervise::run(&spec) {
                        Ok(o) => serde_json::to_value(&o).unwrap_or_default(),
                        Err(e) => serde_json::json!({
                            "error": e.to_string(),
                            "return_code": e.return_code().value(),
                        }),
                    }
                }
            }
        }
    };
    serde_json::to_writer(&mut *out, &answer).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}
