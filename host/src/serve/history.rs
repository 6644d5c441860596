//! The durable record of every request, every decision and every outcome.
//!
//! `STATE/history/serve.jsonl`: append-only JSON lines, one [`Record`] a line, made durable
//! with `fdatasync` before the HTTP answer goes out. Appends from many threads are group
//! committed: whoever finds no flush running writes everything queued so far with one write and
//! one sync while the others wait, so a storm costs one sync per batch, not per line. A line
//! torn by a crash is skipped when reading (and the next append starts on a fresh line).
//!
//! Plus, per fix that ran, the Survivor `fixhistory` line (protocol.md §7) in
//! `STATE/history/host/HOST/SERVICE/fixhistory`, for tools that read the original's files.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::ServeError;

/// The journal's file name under the history folder.
pub const JOURNAL: &str = "serve.jsonl";

/// Seconds since the epoch, now, with microseconds.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What became of one alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Accepted: queued to run (its outcome follows in an `outcome` record).
    Queued,
    /// The same alert for the same target ran (or is queued) within the cool-down.
    Deduplicated,
    /// Too many fixes for this target in the storm window.
    Suppressed,
    /// A resolved alert: nothing to run.
    Resolved,
    /// No rule matches the alert.
    Unmatched,
    /// A rule matched but cannot make a fix of it (a missing label, a bad host name).
    Rejected,
}

impl Decision {
    /// The name used in the history, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Queued => "queued",
            Decision::Deduplicated => "deduplicated",
            Decision::Suppressed => "suppressed",
            Decision::Resolved => "resolved",
            Decision::Unmatched => "unmatched",
            Decision::Rejected => "rejected",
        }
    }
}

/// One HTTP request, whatever its fate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When it was answered.
    pub time: f64,
    /// The request's id (the fixes it made name it).
    pub request: String,
    /// The peer address.
    pub remote: String,
    /// `POST /alertmanager`...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The HTTP status answered.
    pub status: u16,
    /// How many alerts it held.
    pub alerts: usize,
    /// Why it was refused, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One alert and what was decided for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FixRecord {
    /// When it was decided (the request's arrival).
    pub time: f64,
    /// The fix's id.
    pub id: String,
    /// The request it came in.
    pub request: String,
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// Its `alertname` label.
    #[serde(default)]
    pub alertname: String,
    /// The rule that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The target host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The target service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<PathBuf>,
    /// The ModuleOptions, name → values.
    #[serde(default)]
    pub options: BTreeMap<String, Vec<String>>,
    /// The decision.
    pub decision: Decision,
    /// Why, for everything but `queued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a queued fix ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// When it ended.
    pub time: f64,
    /// The fix's id.
    pub id: String,
    /// When its runner started (dispatch latency is `started` minus the fix record's `time`).
    pub started: f64,
    /// The decided ReturnCode.
    pub return_code: u32,
    /// Its comment.
    pub comment: String,
    /// The host's full outcome (`disco fix --format json`), or `{"error": ...}`.
    pub outcome: serde_json::Value,
}

/// One line of the journal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A server started (fixes queued before it without an outcome were interrupted).
    Start {
        /// When.
        time: f64,
        /// Its pid.
        pid: u32,
    },
    /// An HTTP request.
    Request(RequestRecord),
    /// An alert's decision.
    Fix(FixRecord),
    /// A queued fix's outcome.
    Outcome(OutcomeRecord),
    /// A queued fix that never started: the server stopped first.
    Cancelled {
        /// When.
        time: f64,
        /// The fix's id.
        id: String,
    },
}

#[derive(Debug, Default)]
struct Commit {
    buf: Vec<u8>,
    appended: u64,
    durable: u64,
    flushing: bool,
    broken: Option<String>,
}

/// The append-only journal, group committed.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    commit: Mutex<Commit>,
    flushed: Condvar,
}

fn history_err(path: &Path) -> impl Fn(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::History {
        path: path.to_owned(),
        source,
    }
}

impl Journal {
    /// Opens (creating) `DIR/serve.jsonl` for appending; a torn last line from a crash is
    /// ended so the next record starts on its own line.
    pub fn open(dir: &Path) -> Result<Journal, ServeError> {
        std::fs::create_dir_all(dir).map_err(history_err(dir))?;
        let path = dir.join(JOURNAL);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(history_err(&path))?;
        let len = file.metadata().map_err(history_err(&path))?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(history_err(&path))?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(history_err(&path))?;
            }
        }
        // The new file's name must survive a crash too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(history_err(dir))?;
        Ok(Journal {
            path,
            file,
            commit: Mutex::new(Commit::default()),
            flushed: Condvar::new(),
        })
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `records` and returns once they are on disk.
    pub fn append(&self, records: &[Record]) -> Result<(), ServeError> {
        let mut lines = Vec::new();
        for r in records {
            serde_json::to_writer(&mut lines, r).map_err(|e| ServeError::History {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?;
            lines.push(b'\n');
        }
        let broken = |why: &str| ServeError::History {
            path: self.path.clone(),
            source: std::io::Error::other(why.to_owned()),
        };
        let mut c = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = &c.broken {
            return Err(broken(why));
        }
        c.buf.extend_from_slice(&lines);
        c.appended += 1;
        let mine = c.appended;
        loop {
            if let Some(why) = &c.broken {
                return Err(broken(why));
            }
            if c.durable >= mine {
                return Ok(());
            }
            if c.flushing {
                c = self.flushed.wait(c).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Nobody is flushing: write everything queued so far, for everyone.
            c.flushing = true;
            let batch = std::mem::take(&mut c.buf);
            let upto = c.appended;
            drop(c);
            let written = (&self.file)
                .write_all(&batch)
                .and_then(|_| self.file.sync_data());
            c = self.commit.lock().unwrap_or_else(|e| e.into_inner());
            c.flushing = false;
            match written {
                Ok(()) => c.durable = upto,
                // A journal that failed once may hold half a batch: stop trusting it.
                Err(e) => c.broken = Some(e.to_string()),
            }
            self.flushed.notify_all();
        }
    }
}

/// Reads every record of the journal in `dir`; torn or foreign lines are counted, not fatal.
pub fn read(dir: &Path) -> Result<(Vec<Record>, usize), ServeError> {
    let path = dir.join(JOURNAL);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(history_err(&path)(e)),
    };
    let mut records = Vec::new();
    let mut bad = 0;
    for line in text.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
    }
    Ok((records, bad))
}

/// One fix as queries show it: its decision, and for a queued one how it ended.
#[derive(Clone, Debug, Serialize)]
pub struct FixView {
    /// The decision record.
    #[serde(flatten)]
    pub fix: FixRecord,
    /// `ran`, `pending` (queued, not ended yet), `cancelled`, `interrupted` (the server
    /// stopped without ending it), or the decision itself when nothing was queued.
    pub status: String,
    /// The outcome, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeRecord>,
}

/// Which fixes a query wants.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Only this host.
    pub host: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Only fixes decided at or after this time (epoch seconds).
    pub since: Option<f64>,
}

/// Folds `records` into one view per fix, oldest first, filtered by `q`.
pub fn fixes(records: &[Record], q: &Query) -> Vec<FixView> {
    let mut views: Vec<FixView> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in records {
        match r {
            Record::Start { .. } => {
                // Whatever was pending when this server started was cut short.
                for v in views.iter_mut().filter(|v| v.status == "pending") {
                    v.status = "interrupted".to_owned();
                }
            }
            Record::Fix(f) => {
                let status = match f.decision {
                    Decision::Queued => "pending".to_owned(),
                    d => d.as_str().to_owned(),
                };
                index.insert(f.id.clone(), views.len());
                views.push(FixView {
                    fix: f.clone(),
                    status,
                    outcome: None,
                });
            }
            Record::Outcome(o) => {
                if let Some(&i) = index.get(&o.id) {
                    views[i].status = "ran".to_owned();
                    views[i].outcome = Some(o.clone());
                }
            }
            Record::Cancelled { id, .. } => {
                if let Some(&i) = index.get(id) {
                    views[i].status = "cancelled".to_owned();
                }
            }
            Record::Request(_) => {}
        }
    }
    views.retain(|v| {
        q.host
            .as_ref()
            .is_none_or(|h| v.fix.host.as_ref() == Some(h))
            && q.service
                .as_ref()
                .is_none_or(|s| v.fix.service.as_ref() == Some(s))
            && q.since.is_none_or(|t| v.fix.time >= t)
    });
    views
}

/// Parses a `since`: epoch seconds (`1700000000`), an RFC 3339 time
/// (`2024-01-01T00:00:00Z`), or an age (`90s`, `10m`, `2h`, `7d`) counted back from `now`.
pub fn parse_since(s: &str, now: f64) -> Result<f64, String> {
    if let Ok(t) = s.parse::<f64>() {
        if t.is_finite() {
            return Ok(t);
        }
    }
    let units = [('s', 1.0), ('m', 60.0), ('h', 3600.0), ('d', 86400.0)];
    for (suffix, mult) in units {
        if let Some(n) = s.strip_suffix(suffix).and_then(|n| n.parse::<f64>().ok()) {
            if n.is_finite() && n >= 0.0 {
                return Ok(now - n * mult);
            }
        }
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_microsecond() as f64 / 1e6)
        .map_err(|_| {
            format!("since '{s}' is not epoch seconds, an RFC 3339 time or an age like 10m")
        })
}

/// `time` as local time for people, in the style of ctime(3) (`Sun Nov 22 22:47:03 2026`).
pub fn local_time(time: f64) -> String {
    jiff::Timestamp::from_microsecond((time * 1e6) as i64)
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%a %b %e %H:%M:%S %Y")
                .to_string()
        })
        .unwrap_or_else(|_| format!("{time:.0}"))
}

/// The Survivor `fixhistory` line (protocol.md §7) for one attempt:
/// `<local time>/<epoch seconds>/<duration ms>:<rc>:0:<who>:<comment>`.
pub fn fixhistory_line(time: f64, duration_ms: u64, rc: u32, who: &str, comment: &str) -> String {
    format!(
        "{}/{}/{duration_ms}:{rc}:0:{}:{}\n",
        local_time(time),
        time as u64,
        who.replace([':', '\n', '\r'], " "),
        comment.replace(['\n', '\r'], " ")
    )
}

/// Appends `line` to `DIR/host/HOST/SERVICE/fixhistory` and syncs it. Host and service were
/// checked as target names before the fix was queued, so they cannot leave `DIR`.
pub fn append_fixhistory(
    dir: &Path,
    host: &str,
    service: &str,
    line: &str,
) -> Result<(), ServeError> {
    let folder = dir.join("host").join(host).join(service);
    std::fs::create_dir_all(&folder).map_err(history_err(&folder))?;
    let path = folder.join("fixhistory");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(history_err(&path))?;
    f.write_all(line.as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(history_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(id: &str, host: &str, decision: Decision, time: f64) -> Record {
        Record::Fix(FixRecord {
            time,
            id: id.into(),
            request: "r".into(),
            fingerprint: "f".into(),
            alertname: "A".into(),
            rule: None,
            host: Some(host.into()),
            service: Some("s".into()),
            module: None,
            options: BTreeMap::new(),
            decision,
            reason: None,
        })
    }

    #[test]
    fn fold_marks_interrupted_and_filters() {
        let recs = vec![
            Record::Start { time: 0.0, pid: 1 },
            fix("a", "h1", Decision::Queued, 1.0),
            fix("b", "h2", Decision::Queued, 2.0),
            fix("c", "h2", Decision::Deduplicated, 3.0),
            Record::Outcome(OutcomeRecord {
                time: 2.5,
                id: "b".into(),
                started: 2.1,
                return_code: 0,
                comment: "ok".into(),
                outcome: serde_json::Value::Null,
            }),
            Record::Start { time: 4.0, pid: 2 },
        ];
        let all = fixes(&recs, &Query::default());
        let status: Vec<_> = all.iter().map(|v| v.status.as_str()).collect();
        assert_eq!(status, ["interrupted", "ran", "deduplicated"]);
        let q = Query {
            host: Some("h2".into()),
            since: Some(2.5),
            ..Query::default()
        };
        assert_eq!(fixes(&recs, &q).len(), 1);
    }

    #[test]
    fn fixhistory_line_is_one_line() {
        let l = fixhistory_line(1_700_000_000.5, 12, 0, "disco:serve", "a\nb");
        assert!(l.ends_with("/1700000000/12:0:0:disco serve:a b\n"), "{l}");
        assert_eq!(l.lines().count(), 1);
    }

    #[test]
    fn since_forms() {
        assert_eq!(parse_since("100", 0.0).unwrap(), 100.0);
        assert_eq!(parse_since("10m", 1000.0).unwrap(), 400.0);
        assert_eq!(parse_since("1970-01-01T00:01:00Z", 0.0).unwrap(), 60.0);
        assert!(parse_since("yesterday", 0.0).is_err());
    }

    #[test]
    fn journal_survives_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("disco-journal-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(JOURNAL),
            "{\"type\":\"start\",\"time\":1,\"pid\":1}\n{\"ty",
        )
        .unwrap();
        let j = Journal::open(&dir).unwrap();
        j.append(&[Record::Start { time: 2.0, pid: 2 }]).unwrap();
        let (recs, bad) = read(&dir).unwrap();
        assert_eq!((recs.len(), bad), (2, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
