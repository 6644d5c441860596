//! Reading the journal without holding it: a page of fixes at a time from a cursor (for
//! `GET /fixes` and `disco history`), and the recent tail (for the dispatcher's cool-downs at
//! start-up). Memory and time per call are bounded by the page, never by the history's size.
//!
//! A page is read forwards: fix records are collected from the cursor on (a line's type is
//! told from its first bytes, so other lines are not parsed), and the records after each fix
//! (its outcome, a cancel, a server start) settle its status; the scan goes on past the
//! page's last fix only until every fix of the page is settled, and never further than
//! [`LOOKAHEAD`] bytes. A cursor is `SEGMENT.OFFSET`, the start of a line in a segment whose
//! number never changes (`rotate.rs`); it stays valid across rotations until its segment is
//! removed, and then the page starts at the oldest segment left.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::str::FromStr;

use super::history::{Decision, FixRecord, FixView, OutcomeRecord, Query, JOURNAL};
use super::rotate::{self, Segment};
use super::ServeError;

/// Fixes in a page when the caller does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Fixes in a page at most.
pub const MAX_LIMIT: usize = 1000;
/// Bytes one page reads at most while looking for matching fixes: a filter that matches
/// little gives a short page (with a cursor) rather than a scan of the whole history.
pub const SCAN_BUDGET: u64 = 64 << 20;
/// Bytes read past a page's last fix at most, looking for how its fixes ended.
pub const LOOKAHEAD: u64 = 16 << 20;
/// How far records may be out of time order in the journal (a request is journaled when
/// decided, an outcome when recorded): seeks by time start this much earlier.
const DISORDER: f64 = 600.0;

/// Where a page starts: a line's offset in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The segment's number.
    pub segment: u64,
    /// The byte offset of a line in it.
    pub offset: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.segment, self.offset)
    }
}

/// A cursor that is not `SEGMENT.OFFSET`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cursor '{0}' is not SEGMENT.OFFSET (as a page's next cursor gives it)")]
pub struct BadCursor(String);

impl FromStr for Cursor {
    type Err = BadCursor;
    fn from_str(s: &str) -> Result<Cursor, BadCursor> {
        let bad = || BadCursor(super::http::escape_control(s));
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            segment: a.parse().map_err(|_| bad())?,
            offset: b.parse().map_err(|_| bad())?,
        })
    }
}

/// One page of fixes, oldest first.
#[derive(Debug, Default)]
pub struct Page {
    /// The fixes.
    pub fixes: Vec<FixView>,
    /// Where the next page starts, when there may be one.
    pub next: Option<Cursor>,
}

fn history_err(path: &Path) -> impl Fn(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::History {
        path: path.to_owned(),
        source,
    }
}

/// The kind of a journal line, from its first bytes (serde writes the tag first).
fn kind(line: &[u8]) -> &[u8] {
    line.strip_prefix(b"{\"type\":\"")
        .and_then(|rest| rest.split(|&b| b == b'"').next())
        .unwrap_or_default()
}

/// The `time` of a journal line (every record's first field after its tag), without parsing
/// the rest.
pub fn line_time(line: &[u8]) -> Option<f64> {
    let at = line.windows(7).position(|w| w == b"\"time\":")? + 7;
    let rest = &line[at..];
    let end = rest
        .iter()
        .position(|&b| b == b',' || b == b'}')
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.trim().parse().ok()
}

/// The first `"id":"..."` of a line: the record's own id for outcomes and cancels.
fn line_id(line: &[u8]) -> Option<&[u8]> {
    let at = line.windows(6).position(|w| w == b"\"id\":\"")? + 6;
    let rest = &line[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

/// Reads lines from a segment, keeping track of the offset; a last line without its newline
/// (being written, or torn by a crash) is not returned.
struct Lines {
    reader: BufReader<File>,
    offset: u64,
    buf: Vec<u8>,
}

impl Lines {
    fn open(seg: &Segment, offset: u64) -> Result<Lines, ServeError> {
        let mut file = seg.open().map_err(history_err(&seg.path))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(history_err(&seg.path))?;
        Ok(Lines {
            reader: BufReader::with_capacity(256 << 10, file),
            offset,
            buf: Vec::new(),
        })
    }

    /// The next whole line, without its newline.
    fn next_line(&mut self) -> std::io::Result<Option<&[u8]>> {
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf)?;
        if n == 0 || self.buf.last() != Some(&b'\n') {
            return Ok(None);
        }
        self.offset += n as u64;
        self.buf.pop();
        Ok(Some(&self.buf))
    }
}

/// Where a scan by time starts: the segment and a line offset at or shortly before the first
/// record at `since` (the journal is in time order, give or take [`DISORDER`]).
fn seek_since(segs: &[Segment], since: f64) -> Result<(usize, u64), ServeError> {
    let target = since - DISORDER;
    let mut index = 0;
    for (i, s) in segs.iter().enumerate() {
        let first = s
            .open()
            .and_then(rotate::first_line)
            .map_err(history_err(&s.path))?;
        match line_time(&first) {
            Some(t) if t <= target => index = i,
            // An emptied segment (kept for its number) says nothing of time.
            None if first.is_empty() => {}
            _ => break,
        }
    }
    let seg = &segs[index];
    let mut file = seg.open().map_err(history_err(&seg.path))?;
    let len = file.metadata().map_err(history_err(&seg.path))?.len();
    // Binary search for the first line whose time is at or after the target.
    let (mut lo, mut hi) = (0u64, len);
    let mut buf = vec![0u8; 64 << 10];
    while hi - lo > 4096 {
        let mid = lo + (hi - lo) / 2;
        file.seek(SeekFrom::Start(mid))
            .map_err(history_err(&seg.path))?;
        let n = file.read(&mut buf).map_err(history_err(&seg.path))?;
        let Some(nl) = buf[..n].iter().position(|&b| b == b'\n') else {
            hi = mid;
            continue;
        };
        let start = mid + nl as u64 + 1;
        let line = &buf[nl + 1..n];
        let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
        match line_time(line) {
            Some(t) if t < target => lo = start,
            _ => hi = mid,
        }
    }
    // `lo` is a line start (0 or just after a newline).
    Ok((index, lo))
}

/// The page of fixes matching `q` from `from` (or from the start, or from `q.since`), at
/// most `limit` of them.
pub fn page(dir: &Path, q: &Query, from: Option<Cursor>, limit: usize) -> Result<Page, ServeError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let segs = rotate::segments(dir, JOURNAL).map_err(history_err(dir))?;
    if segs.is_empty() {
        return Ok(Page::default());
    }
    let (mut index, mut offset) = match (from, q.since) {
        (Some(c), _) => match segs.iter().position(|s| s.number >= c.segment) {
            Some(i) if segs[i].number == c.segment => (i, c.offset),
            Some(i) => (i, 0),
            None => return Ok(Page::default()),
        },
        (None, Some(since)) => seek_since(&segs, since)?,
        (None, None) => (0, 0),
    };
    let mut fixes: Vec<FixView> = Vec::new();
    // Queued fixes of the page not settled yet: id → index in `fixes`.
    let mut open: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut next = None;
    let mut scanned = 0u64;
    let mut past_page = 0u64;
    'segments: while index < segs.len() {
        let mut lines = Lines::open(&segs[index], offset)?;
        let path = &segs[index].path;
        while let Some(line) = lines.next_line().map_err(history_err(path))? {
            let len = line.len() as u64 + 1;
            let full = next.is_some();
            if full {
                past_page += len;
            } else {
                scanned += len;
            }
            match kind(line) {
                b"fix" if !full => {
                    let Ok(f) = serde_json::from_slice::<FixRecord>(line) else {
                        continue;
                    };
                    if !q.matches(&f) {
                        continue;
                    }
                    let status = match f.decision {
                        Decision::Queued => "pending",
                        d => d.as_str(),
                    };
                    if f.decision == Decision::Queued {
                        open.insert(f.id.clone().into_bytes(), fixes.len());
                    }
                    fixes.push(FixView {
                        fix: f,
                        status: status.to_owned(),
                        outcome: None,
                    });
                    if fixes.len() == limit {
                        next = Some(Cursor {
                            segment: segs[index].number,
                            offset: lines.offset,
                        });
                    }
                }
                b"outcome" if !open.is_empty() => {
                    let Some(i) = line_id(line).and_then(|id| open.remove(id)) else {
                        continue;
                    };
                    if let Ok(o) = serde_json::from_slice::<OutcomeRecord>(line) {
                        fixes[i].status = "ran".to_owned();
                        fixes[i].outcome = Some(o);
                    }
                }
                b"cancelled" => {
                    if let Some(i) = line_id(line).and_then(|id| open.remove(id)) {
                        fixes[i].status = "cancelled".to_owned();
                    }
                }
                b"start" => {
                    // Whatever was pending when a server started was cut short.
                    for (_, i) in open.drain() {
                        fixes[i].status = "interrupted".to_owned();
                    }
                }
                _ => {}
            }
            if next.is_some() && (open.is_empty() || past_page > LOOKAHEAD) {
                break 'segments;
            }
            if next.is_none() && scanned > SCAN_BUDGET {
                next = Some(Cursor {
                    segment: segs[index].number,
                    offset: lines.offset,
                });
                if open.is_empty() {
                    break 'segments;
                }
            }
        }
        index += 1;
        offset = 0;
    }
    Ok(Page { fixes, next })
}

/// Bytes read at a time from the end of a segment.
const TAIL_CHUNK: u64 = 256 << 10;
/// Fix records kept from the tail at most (the dispatcher forgets older ones anyway).
pub const TAIL_MAX: usize = 100_000;

/// The queued fixes decided at or after `from`, oldest first, read backwards from the end of
/// the journal and stopping at the first record older than `from` (less the disorder margin):
/// the cost is the recent tail's, whatever the history's size.
pub fn recent_fixes(dir: &Path, from: f64) -> Result<Vec<FixRecord>, ServeError> {
    let segs = rotate::segments(dir, JOURNAL).map_err(history_err(dir))?;
    let mut out = Vec::new();
    for seg in segs.iter().rev() {
        let done = backwards(seg, |line| {
            let Some(t) = line_time(line) else {
                return true;
            };
            if t < from - DISORDER || out.len() >= TAIL_MAX {
                return false;
            }
            if t >= from && kind(line) == b"fix" {
                if let Ok(f) = serde_json::from_slice::<FixRecord>(line) {
                    if f.decision == Decision::Queued {
                        out.push(f);
                    }
                }
            }
            true
        })
        .map_err(history_err(&seg.path))?;
        if done {
            break;
        }
    }
    out.reverse();
    Ok(out)
}

/// Calls `f` on each whole line of `seg`, last first, until it returns false; whether it
/// did.
fn backwards(seg: &Segment, mut f: impl FnMut(&[u8]) -> bool) -> std::io::Result<bool> {
    let mut file = seg.open()?;
    let mut pos = file.metadata()?.len();
    // The start of a line cut by the chunk before: kept until its beginning is read.
    let mut carry: Vec<u8> = Vec::new();
    let mut first = true;
    while pos > 0 {
        let n = TAIL_CHUNK.min(pos);
        pos -= n;
        let mut buf = vec![0u8; n as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf)?;
        buf.extend_from_slice(&carry);
        let mut pieces: Vec<&[u8]> = buf.split(|&b| b == b'\n').collect();
        if first {
            // What follows the last newline is a line being written (or torn): not whole.
            pieces.pop();
            first = false;
        }
        let head = if pos > 0 { pieces.remove(0) } else { &[][..] };
        for line in pieces.iter().rev().filter(|l| !l.is_empty()) {
            if !f(line) {
                return Ok(true);
            }
        }
        carry = head.to_vec();
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::super::history::{Journal, Record};
    use super::super::rotate::Retention;
    use super::*;
    use std::collections::BTreeMap;

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

    fn outcome(id: &str, time: f64) -> Record {
        Record::Outcome(OutcomeRecord {
            time,
            id: id.into(),
            started: time,
            return_code: 0,
            comment: "ok".into(),
            outcome: serde_json::json!({"id": "not-this-one"}),
        })
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("disco-page-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn pages_settle_statuses_and_follow_cursors_across_rotations() {
        let dir = tmp("pages");
        let r = Retention {
            segment_bytes: 600,
            ..Retention::default()
        };
        let j = Journal::open(&dir, r).unwrap();
        j.append(&[Record::Start { time: 0.0, pid: 1 }]).unwrap();
        for i in 0..20 {
            let t = f64::from(i);
            j.append(&[fix(&format!("a{i}"), "h1", Decision::Queued, t)])
                .unwrap();
            if i % 3 == 0 {
                j.append(&[outcome(&format!("a{i}"), t + 0.5)]).unwrap();
            }
            j.append(&[fix(&format!("d{i}"), "h2", Decision::Deduplicated, t)])
                .unwrap();
        }
        j.append(&[
            Record::Cancelled {
                time: 30.0,
                id: "a19".into(),
            },
            Record::Start { time: 31.0, pid: 2 },
        ])
        .unwrap();
        assert!(
            rotate::segments(&dir, JOURNAL).unwrap().len() > 3,
            "rotated"
        );
        let q = Query {
            host: Some("h1".into()),
            ..Query::default()
        };
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let p = page(&dir, &q, cursor, 7).unwrap();
            assert!(p.fixes.len() <= 7);
            all.extend(p.fixes);
            match p.next {
                Some(c) => cursor = Some(c.to_string().parse().unwrap()),
                None => break,
            }
        }
        assert_eq!(all.len(), 20);
        for (i, v) in all.iter().enumerate() {
            let want = match i {
                19 => "cancelled",
                i if i % 3 == 0 => "ran",
                _ => "interrupted",
            };
            assert_eq!(v.status, want, "a{i}");
        }
        let since = Query {
            since: Some(15.0),
            ..Query::default()
        };
        let p = page(&dir, &since, None, 100).unwrap();
        assert_eq!(p.fixes.len(), 10, "a15..a19 and d15..d19");
        let recent = recent_fixes(&dir, 17.0).unwrap();
        let ids: Vec<_> = recent.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["a17", "a18", "a19"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cursors_parse() {
        assert_eq!(
            "3.120".parse::<Cursor>().unwrap(),
            Cursor {
                segment: 3,
                offset: 120
            }
        );
        assert!("3".parse::<Cursor>().is_err());
        assert!("a.1".parse::<Cursor>().is_err());
        assert_eq!(
            line_time(b"{\"type\":\"fix\",\"time\":12.5,\"id\":\"x\"}"),
            Some(12.5)
        );
    }
}
