//! What a fix amounted to: the decided ReturnCode and comment, how the process ended, the rule
//! violations, and the figures; and the one function that decides the code from the module's
//! stdout and exit status.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use protocol::{Document, ErrorKind, FixResult, ReturnCode};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::CgroupUsage;
use crate::sys;

/// Which rule a module broke. The serialised names are fixed: other tools match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ViolationKind {
    /// The module ran past its timeout (or its lock could not be had in time).
    Timeout,
    /// The module or a descendant left the process group the host gave it (rule 2).
    ProcessGroupChanged,
    /// A process still held the module's stdin, stdout or stderr after it exited (rule 7).
    LeakedFileHandle,
    /// The exit status differs from the ReturnCode modulo 256 (rule 9).
    ReturnCodeMismatch,
    /// A ReturnCode outside 0..=7 and 20..=1000.
    ReturnCodeOutOfRange,
    /// No valid SurvivorFixResult on stdout (rule 8).
    InvalidResult,
    /// Stdout or stderr was larger than the bound; the rest was discarded.
    OutputTruncated,
    /// The module is a compiled executable (rule 3).
    CompiledModule,
    /// The fix's processes reached its memory limit and the kernel killed one.
    MemoryLimit,
    /// The fix tried to have more processes than its pids limit.
    PidsLimit,
}

impl ViolationKind {
    /// The name tools match on (`timeout`, `leaked_file_handle`...).
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::Timeout => "timeout",
            ViolationKind::ProcessGroupChanged => "process_group_changed",
            ViolationKind::LeakedFileHandle => "leaked_file_handle",
            ViolationKind::ReturnCodeMismatch => "return_code_mismatch",
            ViolationKind::ReturnCodeOutOfRange => "return_code_out_of_range",
            ViolationKind::InvalidResult => "invalid_result",
            ViolationKind::OutputTruncated => "output_truncated",
            ViolationKind::CompiledModule => "compiled_module",
            ViolationKind::MemoryLimit => "memory_limit",
            ViolationKind::PidsLimit => "pids_limit",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken rule, with what was seen.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Which rule.
    pub kind: ViolationKind,
    /// What happened, for people (pids, command lines, sizes).
    pub detail: String,
}

impl Violation {
    /// A violation of `kind` described by `detail`.
    pub fn new(kind: ViolationKind, detail: impl Into<String>) -> Violation {
        Violation {
            kind,
            detail: detail.into(),
        }
    }
}

/// A process the module left behind.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Proc {
    /// Its pid.
    pub pid: i32,
    /// Its command line.
    pub command: String,
}

impl Proc {
    /// The process `pid` with its current command line.
    pub fn of(pid: i32) -> Proc {
        Proc {
            pid,
            command: sys::proc_cmdline(pid),
        }
    }
}

impl fmt::Display for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

/// How the module's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// This signal killed it.
    Signal(i32),
    /// It was never started (refused, or its lock was not had in time).
    NotRun,
}

impl From<sys::Ended> for Exit {
    fn from(e: sys::Ended) -> Exit {
        match e {
            sys::Ended::Exited(c) => Exit::Code(c),
            sys::Ended::Signaled(s) => Exit::Signal(s),
        }
    }
}

impl Serialize for Exit {
    /// `{"code":N}`, `{"signal":N}`, or `null` when it did not run.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (key, value) = match *self {
            Exit::Code(c) => ("code", c),
            Exit::Signal(n) => ("signal", n),
            Exit::NotRun => return s.serialize_none(),
        };
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(key, &value)?;
        map.end()
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
            Exit::NotRun => f.write_str("not run"),
        }
    }
}

/// The module's resource usage, from wait4(2): the module process and the children it waited
/// for.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Rusage {
    /// User CPU time, ms.
    pub user_ms: f64,
    /// System CPU time, ms.
    pub system_ms: f64,
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

impl From<sys::RawRusage> for Rusage {
    fn from(r: sys::RawRusage) -> Rusage {
        let ms = |d: Duration| (d.as_micros() as f64) / 1000.0;
        Rusage {
            user_ms: ms(r.user),
            system_ms: ms(r.system),
            max_rss_kib: r.max_rss_kib,
            minor_faults: r.minor_faults,
            major_faults: r.major_faults,
            blocks_in: r.blocks_in,
            blocks_out: r.blocks_out,
            signals: r.signals,
            voluntary_switches: r.voluntary_switches,
            involuntary_switches: r.involuntary_switches,
        }
    }
}

/// Everything a fix amounted to. Serialises to the JSON object of `disco fix --format json`.
#[derive(Clone, Debug)]
pub struct FixOutcome {
    /// The module that ran.
    pub module: PathBuf,
    /// The host it ran for.
    pub host: String,
    /// The service it ran for.
    pub service: String,
    /// The ReturnCode the host decided.
    pub return_code: ReturnCode,
    /// The comment that goes with it.
    pub comment: String,
    /// How the module's process ended.
    pub exit: Exit,
    /// Wall time from the start of the fix (lock wait included) to the end of supervision.
    pub duration: Duration,
    /// Whether the fix ran past its timeout (or waited past it for its lock).
    pub timed_out: bool,
    /// The rules the module broke.
    pub violations: Vec<Violation>,
    /// Processes the module left running that hold none of its handles (a proper daemon).
    pub background: Vec<Proc>,
    /// The module's resource usage.
    pub rusage: Rusage,
    /// How many processes the host signalled to end them (at the timeout, as leak holders,
    /// or at a limit); the module counts when it was one of them.
    pub killed: usize,
    /// What the fix's cgroup measured (every member, not only the module and the children
    /// it waited for); `None` without a cgroup.
    pub cgroup: Option<CgroupUsage>,
    /// The end of the module's stderr (a few KiB at most), lossily decoded.
    pub stderr_tail: String,
    /// The module's stdout as read (up to the output bound).
    pub stdout: Vec<u8>,
}

impl FixOutcome {
    /// The decided outcome as a SurvivorFixResult, for `--format xml` and for history.
    pub fn result(&self) -> FixResult {
        FixResult::new(self.return_code, self.comment.clone())
    }

    /// Whether a violation of `kind` was seen.
    pub fn has(&self, kind: ViolationKind) -> bool {
        self.violations.iter().any(|v| v.kind == kind)
    }
}

#[derive(serde::Serialize)]
struct Json<'a> {
    module: &'a PathBuf,
    host: &'a str,
    service: &'a str,
    return_code: u16,
    return_code_name: Option<&'static str>,
    comment: &'a str,
    exit: Exit,
    duration_ms: u64,
    timed_out: bool,
    violations: &'a [Violation],
    background: &'a [Proc],
    rusage: Rusage,
    killed: usize,
    cgroup: Option<CgroupUsage>,
    stderr_tail: &'a str,
}

impl Serialize for FixOutcome {
    /// The object `disco fix --format json` prints; stdout itself is left out (the decided code
    /// and comment are its meaning).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Json {
            module: &self.module,
            host: &self.host,
            service: &self.service,
            return_code: self.return_code.value(),
            return_code_name: self.return_code.name(),
            comment: &self.comment,
            exit: self.exit,
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            timed_out: self.timed_out,
            violations: &self.violations,
            background: &self.background,
            rusage: self.rusage,
            killed: self.killed,
            cgroup: self.cgroup,
            stderr_tail: &self.stderr_tail,
        }
        .serialize(s)
    }
}

/// Decides ReturnCode and comment from what a module that ran to its end wrote and how it
/// ended (protocol.md §3): the document's code when it is valid, `MODEXEC_PROBLEM` with the
/// parser's message when it is not, and a mismatch of exit status and code reported but not
/// overriding the document.
pub(crate) fn judge(
    stdout: &[u8],
    exit: Exit,
    plain_output: bool,
) -> (ReturnCode, String, Vec<Violation>) {
    let mut violations = Vec::new();
    let looks_like_result = stdout
        .windows(b"<SurvivorFixResult".len())
        .any(|w| w == b"<SurvivorFixResult");
    if plain_output && !looks_like_result {
        // A plain script: its exit status is its return code, as a shell would see it.
        return match exit {
            Exit::Code(status) => {
                let code = ReturnCode::from_exit_status(status.clamp(0, 255) as u8);
                (code, format!("exit status {status}"), violations)
            }
            Exit::Signal(sig) => (
                ReturnCode::PROBLEM,
                format!("killed by signal {sig}"),
                violations,
            ),
            Exit::NotRun => (ReturnCode::PROBLEM, "did not run".to_owned(), violations),
        };
    }
    match FixResult::parse(stdout) {
        Ok(parsed) => {
            let code = parsed.doc.return_code;
            let mismatch = match exit {
                Exit::Code(status) if !code.matches_exit_status(status) => Some(format!(
                    "exit status {status} differs from ReturnCode {code} mod 256 = {}",
                    code.exit_status()
                )),
                Exit::Signal(sig) => Some(format!(
                    "killed by signal {sig} after answering ReturnCode {code}"
                )),
                _ => None,
            };
            if let Some(detail) = mismatch {
                violations.push(Violation::new(ViolationKind::ReturnCodeMismatch, detail));
            }
            (code, parsed.doc.comment, violations)
        }
        Err(err) => {
            let kind = match err.kind {
                ErrorKind::ReturnCodeOutOfRange(_) => ViolationKind::ReturnCodeOutOfRange,
                _ => ViolationKind::InvalidResult,
            };
            let message = if stdout.is_empty() {
                format!("no SurvivorFixResult on stdout ({exit}): {err}")
            } else {
                err.to_string()
            };
            violations.push(Violation::new(kind, message.clone()));
            (ReturnCode::PROBLEM, message, violations)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"<?xml version=\"1.0\"?>\n<SurvivorFixResult Version=\"1.0\">\n\
        <ReturnCode>0</ReturnCode>\n<Comment>done</Comment>\n</SurvivorFixResult>\n";

    #[test]
    fn valid_result_with_matching_status() {
        let (code, comment, v) = judge(OK, Exit::Code(0), false);
        assert_eq!((code, comment.as_str()), (ReturnCode::OK, "done"));
        assert!(v.is_empty());
    }

    #[test]
    fn mismatch_keeps_the_document_code() {
        let (code, _, v) = judge(OK, Exit::Code(3), false);
        assert_eq!(code, ReturnCode::OK);
        assert_eq!(v[0].kind, ViolationKind::ReturnCodeMismatch);
    }

    #[test]
    fn plain_output_takes_the_exit_status() {
        let (code, _, v) = judge(b"Hello, disco\n", Exit::Code(0), true);
        assert_eq!(code, ReturnCode::OK);
        assert!(v.is_empty());
        let (code, _, _) = judge(b"Hello\n", Exit::Code(1), true);
        assert_eq!(code, ReturnCode::PROBLEM);
        // A result document still decides.
        let (code, comment, _) = judge(OK, Exit::Code(0), true);
        assert_eq!((code, comment.as_str()), (ReturnCode::OK, "done"));
    }

    #[test]
    fn garbage_is_a_problem() {
        let (code, comment, v) = judge(b"<oops", Exit::Code(0), false);
        assert_eq!(code, ReturnCode::PROBLEM);
        assert_eq!(v[0].kind, ViolationKind::InvalidResult);
        assert!(!comment.is_empty());
    }

    #[test]
    fn kinds_serialise_to_their_names() {
        for kind in [
            ViolationKind::Timeout,
            ViolationKind::ProcessGroupChanged,
            ViolationKind::LeakedFileHandle,
            ViolationKind::ReturnCodeMismatch,
            ViolationKind::ReturnCodeOutOfRange,
            ViolationKind::InvalidResult,
            ViolationKind::OutputTruncated,
            ViolationKind::CompiledModule,
            ViolationKind::MemoryLimit,
            ViolationKind::PidsLimit,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
