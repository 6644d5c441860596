//! Running one queued fix: in a `disco __serve-fix` worker process, which runs it through its
//! one [`Supervisor`] exactly as `disco fix` does.
//!
//! Why processes and not threads of the server: with a cgroup per fix, one supervisor could
//! run the fixes on the server's own threads (membership tells each fix's processes apart,
//! `supervise/track.rs`), and `tests/supervise.rs` shows it does. It was measured slower
//! (`bench/serve.sh`, one after the other, 2 cores: 165 fixes/s and a dispatch p99 of 73 ms
//! on threads, against 368 fixes/s and 16.8 ms in this pool): every module is forked from the
//! process that supervises it, and forking the server (tens of threads, a gigabyte of address
//! space) and tearing that copy down at the module's exec costs each fix far more than forking
//! a small single-threaded worker.
//!
//! Why a pool of workers and not a process per fix: an exec of `disco` costs more than the rest
//! of a quick fix. A worker serves fixes one after another. With cgroups it keeps serving
//! after a fix left a daemon: the daemon is a member of that fix's cgroup, so the next fix's
//! supervisor never takes it (or its children) for its own. Without cgroups, orphans carry no
//! mark of their fix, so a worker serves on only while it stays clean: after each fix it
//! checks that it has no child left at all, alive or zombie. A live descendant of a subreaper
//! is always reachable from one of its children (whatever dies in between, its orphans are
//! re-parented to the subreaper), so "no child" means nothing of any earlier fix is left to be
//! mistaken for an orphan of the next one. A worker with something left then answers and exits
//! instead; what it leaves goes to init as before, and the next fix gets a new worker.
//!
//! The worker gets nothing from the alert on its command line: each fix comes on its stdin as
//! one JSON line (a [`ChildSpec`]) followed by the request document (`request_len` bytes); the
//! answer is one JSON line (an [`Answer`]). End of stdin ends the worker, so a worker whose
//! server died (`kill -9`) finishes its fix and exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rules::Planned;
use crate::supervise::{CgroupUsage, FixSpec, Limits, LockLevel, Supervisor};

/// What the parent tells `disco __serve-fix` about one fix, as the first line of the fix on its
/// stdin; the request document follows (`request_len` bytes).
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
    /// The rule's resource limits.
    #[serde(default)]
    pub limits: LimitSpec,
    /// The length of the request document that follows the line, in bytes.
    pub request_len: u64,
}

/// A rule's resource limits, as [`ChildSpec`] carries them.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct LimitSpec {
    /// Bytes of memory.
    pub memory_max: Option<u64>,
    /// Processes at once.
    pub pids_max: Option<u64>,
    /// Percent of one CPU.
    pub cpu_max: Option<u32>,
}

impl From<Limits> for LimitSpec {
    fn from(l: Limits) -> LimitSpec {
        LimitSpec {
            memory_max: l.memory_max,
            pids_max: l.pids_max,
            cpu_max: l.cpu_max,
        }
    }
}

impl From<LimitSpec> for Limits {
    fn from(l: LimitSpec) -> Limits {
        Limits {
            memory_max: l.memory_max,
            pids_max: l.pids_max,
            cpu_max: l.cpu_max,
        }
    }
}

/// What `disco __serve-fix` answers for one fix, on one line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    /// The host's outcome (`disco fix --format json`), or `{"error": ..., "return_code": N}`
    /// when the fix could not be run at all.
    pub outcome: serde_json::Value,
    /// The worker has something left from this fix and exits after this answer (the next fix
    /// needs another worker).
    pub retire: bool,
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
    /// What the fix's cgroup measured (none without cgroups, or when it could not run).
    pub cgroup: Option<CgroupUsage>,
    /// The host's outcome as JSON (`disco fix --format json`), or `{"error": ...}`.
    pub outcome: serde_json::Value,
}

/// One `disco __serve-fix` process and the server's ends of its pipes.
#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Fixes it answered.
    served: u64,
}

impl Worker {
    /// Closes its stdin (its signal to exit) and reaps it.
    fn end(mut self) -> String {
        drop(self.stdin);
        match self.child.wait() {
            Ok(s) if s.signal().is_some() => format!("signal {}", s.signal().unwrap_or_default()),
            Ok(s) => format!("exit status {}", s.code().unwrap_or_default()),
            Err(e) => e.to_string(),
        }
    }
}

/// Runs fixes in a pool of `disco __serve-fix` workers of `exe` (the `disco` binary), one fix
/// at a time per worker; at most as many workers as fixes ever ran at once.
#[derive(Debug)]
pub struct Runner {
    exe: PathBuf,
    lock_dir: PathBuf,
    /// Workers waiting for a fix.
    idle: Mutex<Vec<Worker>>,
}

fn failed(why: String) -> Ran {
    Ran {
        return_code: u32::from(protocol::ReturnCode::PROBLEM.value()),
        comment: why.clone(),
        duration_ms: 0,
        cgroup: None,
        outcome: serde_json::json!({ "error": why }),
    }
}

impl Runner {
    /// A runner of `exe __serve-fix` workers, locking under `lock_dir`.
    pub fn new(exe: &Path, lock_dir: &Path) -> Runner {
        Runner {
            exe: exe.to_owned(),
            lock_dir: lock_dir.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self) -> std::io::Result<Worker> {
        let mut child = Command::new(&self.exe)
            .arg("__serve-fix")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own group: a Ctrl-C meant for the server (which then lets fixes finish) must
            // not reach the fixes themselves.
            .process_group(0)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("both piped at spawn");
        };
        Ok(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            served: 0,
        })
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
            limits: plan.resources.into(),
            request_len: plan.request.len() as u64,
        };
        let mut input = match serde_json::to_vec(&spec) {
            Ok(v) => v,
            Err(e) => return failed(format!("cannot encode the fix: {e}")),
        };
        input.push(b'\n');
        input.extend_from_slice(&plan.request);
        loop {
            let pooled = self.idle().pop();
            let mut worker = match pooled {
                Some(w) => w,
                None => match self.start() {
                    Ok(w) => w,
                    Err(e) => return failed(format!("cannot start {}: {e}", self.exe.display())),
                },
            };
            // The worker reads the whole fix before it starts it, so this cannot deadlock.
            if let Err(e) = worker
                .stdin
                .write_all(&input)
                .and_then(|()| worker.stdin.flush())
            {
                let fresh = worker.served == 0;
                let how = worker.end();
                if fresh {
                    return failed(format!("cannot hand the fix to its runner ({how}): {e}"));
                }
                // A pooled worker that died while idle (killed by someone) never saw the fix:
                // give it to a new one.
                continue;
            }
            let mut line = String::new();
            let read = worker.stdout.read_line(&mut line);
            let answer = match read {
                Ok(_) => serde_json::from_str::<Answer>(&line).ok(),
                Err(_) => None,
            };
            let Some(answer) = answer else {
                let how = worker.end();
                return failed(format!("the fix runner ended ({how}) without an outcome"));
            };
            worker.served += 1;
            if answer.retire {
                worker.end();
            } else {
                self.idle().push(worker);
            }
            let outcome = answer.outcome;
            let return_code = outcome["return_code"]
                .as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(u32::from(protocol::ReturnCode::PROBLEM.value()));
            let comment = outcome["comment"]
                .as_str()
                .or(outcome["error"].as_str())
                .unwrap_or_default()
                .to_owned();
            return Ran {
                return_code,
                comment,
                duration_ms: outcome["duration_ms"].as_u64().unwrap_or(0),
                cgroup: serde_json::from_value(outcome["cgroup"].clone()).ok(),
                outcome,
            };
        }
    }

    /// Ends the idle workers (each exits at the end of its stdin) and reaps them.
    pub fn close(&self) {
        let idle = std::mem::take(&mut *self.idle());
        for w in idle {
            w.end();
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.close();
    }
}

/// Runs one fix as `spec` says, with `request`; the outcome as JSON.
fn run_one(supervisor: &Supervisor, c: ChildSpec, request: Vec<u8>) -> serde_json::Value {
    let lock: LockLevel = match c.lock.parse() {
        Ok(l) => l,
        Err(why) => return serde_json::json!({ "error": why.to_string(), "return_code": 4 }),
    };
    let mut spec = FixSpec::new(&c.module, request, c.host, c.service);
    spec.timeout = Duration::from_millis(c.timeout_ms.max(1));
    spec.lock = lock;
    spec.lock_dir = c.lock_dir;
    spec.limits = c.limits.into();
    match supervisor.run(&spec) {
        Ok(o) => serde_json::to_value(&o).unwrap_or_default(),
        Err(e) => serde_json::json!({
            "error": e.to_string(),
            "return_code": e.return_code().value(),
        }),
    }
}

/// The worker's side (`disco __serve-fix`): reads fixes from `input` (a [`ChildSpec`] line and
/// the request, each), runs each under the host, and writes one [`Answer`] line per fix, until
/// the end of `input`, or, without cgroups, until a fix leaves something behind (then it
/// answers and returns).
pub fn serve_fixes(input: &mut impl BufRead, out: &mut impl Write) -> std::io::Result<()> {
    let supervisor = Supervisor::new();
    loop {
        let mut head = Vec::new();
        if input.read_until(b'\n', &mut head)? == 0 {
            return Ok(());
        }
        let (outcome, in_step) = match serde_json::from_slice::<ChildSpec>(&head) {
            // The rest of the stream cannot be trusted to start where a fix starts.
            Err(e) => (
                serde_json::json!({ "error": format!("bad fix spec on stdin: {e}"), "return_code": 4 }),
                false,
            ),
            Ok(c) => {
                let mut request = Vec::new();
                let want = c.request_len;
                input.by_ref().take(want).read_to_end(&mut request)?;
                if (request.len() as u64) < want {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                }
                (run_one(&supervisor, c, request), true)
            }
        };
        // Without cgroups, anything left from this fix (alive or a zombie) could pass for an
        // orphan of the next; with them, its membership says whose it is.
        let retire = !in_step || (!supervisor.has_cgroups() && crate::sys::has_children());
        let answer = Answer { outcome, retire };
        serde_json::to_writer(&mut *out, &answer).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        out.flush()?;
        if retire {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(spec: &serde_json::Value, request: &[u8]) -> Vec<u8> {
        let mut v = serde_json::to_vec(spec).unwrap();
        v.push(b'\n');
        v.extend_from_slice(request);
        v
    }

    fn spec(module: &str, request_len: usize) -> serde_json::Value {
        serde_json::json!({
            "module": module, "host": "h", "service": "s", "timeout_ms": 1000,
            "lock": "none", "lock_dir": "/nonexistent", "request_len": request_len,
        })
    }

    fn answers(out: &[u8]) -> Vec<Answer> {
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn end_of_input_ends_the_worker_quietly() {
        let mut out = Vec::new();
        serve_fixes(&mut &b""[..], &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_bad_spec_is_answered_and_ends_the_worker() {
        // After a line it cannot read, the worker cannot know where the next fix starts.
        let mut input = b"not json\n".to_vec();
        input.extend(frame(&spec("/nonexistent/module", 0), b""));
        let mut out = Vec::new();
        serve_fixes(&mut &input[..], &mut out).unwrap();
        let a = answers(&out);
        assert_eq!(a.len(), 1);
        assert!(a[0].retire);
        assert!(a[0].outcome["error"]
            .as_str()
            .unwrap()
            .starts_with("bad fix spec on stdin"));
        assert_eq!(a[0].outcome["return_code"], 4);
    }

    #[test]
    fn a_request_cut_short_is_an_error() {
        let input = frame(&spec("/nonexistent/module", 100), b"<short/>");
        let err = serve_fixes(&mut &input[..], &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_fix_that_cannot_run_is_an_answer_with_its_code() {
        let request = b"<?xml version=\"1.0\"?>\n<SurvivorFixData/>\n";
        let input = frame(&spec("/nonexistent/module", request.len()), request);
        let mut out = Vec::new();
        serve_fixes(&mut &input[..], &mut out).unwrap();
        let a = answers(&out);
        assert_eq!(a.len(), 1);
        assert!(a[0].outcome["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/module"));
        assert_eq!(a[0].outcome["return_code"], 4, "{}", a[0].outcome);
    }
}
