//! The durable record of every request, every decision and every outcome.
//!
//! `STATE/history/serve.jsonl`: append-only JSON lines, one [`Record`] a line, made durable
//! with `fdatasync` before the HTTP answer goes out. Appends from many threads are group
//! committed: whoever finds no flush running writes everything queued so far with one write and
//! one sync while the others wait, so a storm costs one sync per batch, not per line. A line
//! torn by a crash is skipped when reading (and the next append starts on a fresh line). The
//! journal is rotated by size and age into `serve.jsonl.N` and old segments removed
//! (`rotate.rs`); it is read a page at a time (`page.rs`).
//!
//! Plus, per fix that ran, the Survivor `fixhistory` line (protocol.md §7) in
//! `STATE/history/host/HOST/SERVICE/fixhistory`, for tools that read the original's files,
//! rotated the same way.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::rotate::{self, Retention};
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
    /// A write that failed: every writer after it gets it (a journal that failed once may
    /// hold half a batch).
    broken: Option<std::sync::Arc<std::io::Error>>,
}

/// The active segment, written only by the flusher of the moment.
#[derive(Debug)]
struct Active {
    file: File,
    len: u64,
    /// When its first record was written (for rotation by age).
    born: Option<f64>,
}

/// The append-only journal, group committed, rotated.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    retention: Retention,
    active: Mutex<Active>,
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
    /// Opens (creating) `DIR/serve.jsonl` for appending, kept within `retention`; a torn last
    /// line from a crash is ended so the next record starts on its own line. An active file
    /// already over its size or age (a journal from before rotation, or a long stop) is
    /// rotated first, and old segments removed.
    pub fn open(dir: &Path, retention: Retention) -> Result<Journal, ServeError> {
        std::fs::create_dir_all(dir).map_err(history_err(dir))?;
        let path = dir.join(JOURNAL);
        let born = |path: &Path| {
            File::open(path)
                .and_then(rotate::first_line)
                .ok()
                .and_then(|l| super::page::line_time(&l))
        };
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        if retention.due(len, 0, born(&path), now()) {
            rotate::rotate(dir, JOURNAL).map_err(history_err(&path))?;
        }
        rotate::prune(dir, JOURNAL, &retention, SystemTime::now()).map_err(history_err(dir))?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(history_err(&path))?;
        let mut len = file.metadata().map_err(history_err(&path))?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(history_err(&path))?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(history_err(&path))?;
                len += 1;
            }
        }
        // The new file's name must survive a crash too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(history_err(dir))?;
        Ok(Journal {
            dir: dir.to_owned(),
            path: path.clone(),
            retention,
            active: Mutex::new(Active {
                file,
                len,
                born: born(&path),
            }),
            commit: Mutex::new(Commit::default()),
            flushed: Condvar::new(),
        })
    }

    /// Writes and syncs `batch` to the active segment, rotating it first when it is due.
    /// A rotation that fails is said and the active file kept: losing rotation must not lose
    /// records.
    fn write(&self, batch: &[u8]) -> std::io::Result<()> {
        let mut a = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let t = now();
        if self.retention.due(a.len, batch.len() as u64, a.born, t) {
            let rotated = rotate::rotate(&self.dir, JOURNAL).and_then(|()| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(true)
                    .open(&self.path)
            });
            match rotated {
                Ok(file) => {
                    *a = Active {
                        file,
                        len: 0,
                        born: None,
                    };
                    if let Err(e) =
                        rotate::prune(&self.dir, JOURNAL, &self.retention, SystemTime::now())
                    {
                        crate::output::warning(&format!(
                            "history {}: cannot remove old segments: {e}",
                            self.dir.display()
                        ));
                    }
                }
                Err(e) => crate::output::warning(&format!(
                    "history {}: cannot rotate: {e}",
                    self.path.display()
                )),
            }
        }
        (&a.file).write_all(batch)?;
        a.file.sync_data()?;
        a.len += batch.len() as u64;
        a.born.get_or_insert(t);
        Ok(())
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
        let broken = |why: &std::sync::Arc<std::io::Error>| ServeError::HistoryBroken {
            path: self.path.clone(),
            source: why.clone(),
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
            let written = self.write(&batch);
            c = self.commit.lock().unwrap_or_else(|e| e.into_inner());
            c.flushing = false;
            match written {
                Ok(()) => c.durable = upto,
                // A journal that failed once may hold half a batch: stop trusting it.
                Err(e) => c.broken = Some(std::sync::Arc::new(e)),
            }
            self.flushed.notify_all();
        }
    }
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

impl Query {
    /// Whether fix `f` is one the query wants.
    pub fn matches(&self, f: &FixRecord) -> bool {
        self.host
            .as_ref()
            .is_none_or(|h| f.host.as_ref() == Some(h))
            && self
                .service
                .as_ref()
                .is_none_or(|s| f.service.as_ref() == Some(s))
            && self.since.is_none_or(|t| f.time >= t)
    }
}

/// A `since` that is no time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("since '{0}' is not epoch seconds, an RFC 3339 time or an age like 10m")]
pub struct BadSince(pub String);

/// Parses a `since`: epoch seconds (`1700000000`), an RFC 3339 time
/// (`2024-01-01T00:00:00Z`), or an age (`90s`, `10m`, `2h`, `7d`) counted back from `now`.
pub fn parse_since(s: &str, now: f64) -> Result<f64, BadSince> {
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
        .map_err(|_| BadSince(s.to_owned()))
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

/// Appends `line` to `DIR/host/HOST/SERVICE/fixhistory` and syncs it, rotating the file
/// within `retention` (see [`Retention::for_fixhistory`]). Host and service were checked as
/// target names before the fix was queued, so they cannot leave `DIR`.
pub fn append_fixhistory(
    dir: &Path,
    host: &str,
    service: &str,
    line: &str,
    retention: &Retention,
) -> Result<(), ServeError> {
    const NAME: &str = "fixhistory";
    let folder = dir.join("host").join(host).join(service);
    std::fs::create_dir_all(&folder).map_err(history_err(&folder))?;
    let path = folder.join(NAME);
    // The file's birth time is its first line's (statx; where the filesystem keeps none, the
    // file rotates by size only): no read of the file on every fix.
    let (len, born) = std::fs::metadata(&path).map_or((0, None), |m| {
        let born = m
            .created()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        (m.len(), born)
    });
    if retention.due(len, line.len() as u64, born, now()) {
        rotate::rotate(&folder, NAME)
            .and_then(|()| rotate::prune(&folder, NAME, retention, SystemTime::now()))
            .map_err(history_err(&path))?;
    }
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

    #[test]
    fn fixhistory_line_is_one_line() {
        let l = fixhistory_line(1_700_000_000.5, 12, 0, "disco:serve", "a\nb");
        assert!(l.ends_with("/1700000000/12:0:0:disco serve:a b\n"), "{l}");
        assert_eq!(l.lines().count(), 1);
    }

    #[test]
    fn fixhistory_rotates_within_its_bound() {
        let dir =
            std::env::temp_dir().join(format!("disco-fixhistory-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = Retention {
            segment_bytes: 1000,
            max_bytes: 3000,
            ..Retention::default()
        };
        for i in 0..200 {
            let line = fixhistory_line(now(), 1, 0, "disco-serve", &format!("fix {i}"));
            append_fixhistory(&dir, "h", "s", &line, &r).unwrap();
        }
        let folder = dir.join("host/h/s");
        let (total, files) = std::fs::read_dir(&folder)
            .unwrap()
            .flatten()
            .fold((0, 0), |(t, n), e| (t + e.metadata().unwrap().len(), n + 1));
        assert!(total <= 4000, "{total} bytes in {files} files");
        assert!(files >= 3, "{files} files");
        let last = std::fs::read_to_string(folder.join("fixhistory")).unwrap();
        assert!(last.ends_with(":fix 199\n"), "{last}");
        let _ = std::fs::remove_dir_all(&dir);
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
        // Written now, so that it is not old enough to be rotated.
        std::fs::write(
            dir.join(JOURNAL),
            format!(
                "{{\"type\":\"start\",\"time\":{},\"pid\":1}}\n{{\"ty",
                now()
            ),
        )
        .unwrap();
        let j = Journal::open(&dir, Retention::default()).unwrap();
        j.append(&[Record::Start { time: 2.0, pid: 2 }]).unwrap();
        let text = std::fs::read_to_string(dir.join(JOURNAL)).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[2].starts_with("{\"type\":\"start\",\"time\":2"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
