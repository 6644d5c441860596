//! A log kept as segments, so that it never grows without bound: the active file `NAME` and
//! the rotated ones `NAME.N` (N counting up, so a segment keeps its number for life and a
//! cursor into it stays valid). The active file is rotated when it reaches the segment size or
//! age; rotated segments are removed, oldest first, while all of them together are over the
//! size bound or older than the age bound. The journal (`serve.jsonl`) and each target's
//! Survivor `fixhistory` are kept this way.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How much history is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// The active segment is rotated once it holds this many bytes...
    pub segment_bytes: u64,
    /// ...or once its first line is this old.
    pub segment_age: Duration,
    /// All segments together hold at most this many bytes (the active one never removed).
    pub max_bytes: u64,
    /// A rotated segment whose last line is older than this is removed.
    pub max_age: Duration,
}

impl Default for Retention {
    /// A month of a busy site: 10,000 fixes a day at about 2 KiB of journal each is 600 MiB a
    /// month, well within 2 GiB; segments of 64 MiB or a day.
    fn default() -> Retention {
        Retention {
            segment_bytes: 64 << 20,
            segment_age: Duration::from_secs(86_400),
            max_bytes: 2 << 30,
            max_age: Duration::from_secs(31 * 86_400),
        }
    }
}

impl Retention {
    /// The policy for one target's `fixhistory`: its lines are a hundred bytes, so segments of
    /// a MiB and four MiB per target; the same ages as the journal.
    pub fn for_fixhistory(&self) -> Retention {
        Retention {
            segment_bytes: self.segment_bytes.min(1 << 20),
            max_bytes: self.max_bytes.min(4 << 20),
            ..*self
        }
    }

    /// Whether an active segment of `len` bytes, first written at `born`, must be rotated
    /// before `more` bytes are added at `now`.
    pub fn due(&self, len: u64, more: u64, born: Option<f64>, now: f64) -> bool {
        len > 0
            && (len + more > self.segment_bytes
                || born.is_some_and(|b| now - b >= self.segment_age.as_secs_f64()))
    }
}

/// One segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its number: rotated ones count up from 1, the active one is one past the highest.
    pub number: u64,
    /// Its file.
    pub path: PathBuf,
    /// Whether it is the active file.
    pub active: bool,
}

impl Segment {
    /// Opens it for reading; the active file may have been rotated since it was listed, and
    /// is then found under its rotated name (same number).
    pub fn open(&self) -> io::Result<File> {
        match File::open(&self.path) {
            Err(e) if self.active && e.kind() == io::ErrorKind::NotFound => {
                let mut rotated = self.path.clone().into_os_string();
                rotated.push(format!(".{}", self.number));
                File::open(rotated)
            }
            r => r,
        }
    }
}

/// The segments of `name` in `dir`, oldest first, the active file (when it exists) last.
pub fn segments(dir: &Path, name: &str) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    let prefix = format!("{name}.");
    for entry in entries {
        let entry = entry?;
        let file = entry.file_name();
        let Some(n) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(Segment {
            number: n,
            path: entry.path(),
            active: false,
        });
    }
    out.sort_by_key(|s| s.number);
    let active = dir.join(name);
    if active.exists() {
        out.push(Segment {
            number: out.last().map_or(1, |s| s.number + 1),
            path: active,
            active: true,
        });
    }
    Ok(out)
}

/// Renames the active `dir/name` to `dir/name.N`, N one past the highest, and makes the
/// rename durable. The caller opens a new active file.
pub fn rotate(dir: &Path, name: &str) -> io::Result<()> {
    let segs = segments(dir, name)?;
    let Some(active) = segs.iter().find(|s| s.active) else {
        return Ok(());
    };
    std::fs::rename(&active.path, dir.join(format!("{name}.{}", active.number)))?;
    File::open(dir)?.sync_all()
}

/// Removes rotated segments of `name`, oldest first, while all segments together are over
/// `r.max_bytes`, and every rotated one last written more than `r.max_age` before `now`; the
/// newest rotated one is emptied instead, to keep the numbers counting up. Returns how many
/// it removed or emptied.
pub fn prune(dir: &Path, name: &str, r: &Retention, now: SystemTime) -> io::Result<usize> {
    let segs = segments(dir, name)?;
    let mut sizes = Vec::with_capacity(segs.len());
    for s in &segs {
        let meta = std::fs::metadata(&s.path)?;
        sizes.push((meta.len(), meta.modified().ok()));
    }
    let mut total: u64 = sizes.iter().map(|(len, _)| len).sum();
    let newest_rotated = segs.iter().rev().find(|s| !s.active).map(|s| s.number);
    let mut removed = 0;
    for (s, (len, modified)) in segs.iter().zip(sizes) {
        if s.active {
            break;
        }
        let old = modified
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > r.max_age);
        if total <= r.max_bytes && !old {
            break;
        }
        if Some(s.number) == newest_rotated {
            // Emptied, not removed: its number is the highest, and the next rotation must not
            // reuse it (a cursor into it would then point into another segment).
            if len > 0 {
                File::options().write(true).open(&s.path)?.set_len(0)?;
            }
        } else {
            std::fs::remove_file(&s.path)?;
        }
        total -= len;
        removed += 1;
    }
    Ok(removed)
}

/// The first line of `file` (at most 64 KiB of it), for its time.
pub fn first_line(file: File) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    file.take(64 << 10).read_to_end(&mut buf)?;
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    buf.truncate(end);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_the_bound() {
        let dir = std::env::temp_dir().join(format!("disco-rotate-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let r = Retention {
            segment_bytes: 100,
            max_bytes: 250,
            ..Retention::default()
        };
        for i in 0..6 {
            std::fs::write(dir.join("j"), vec![b'x'; 100]).unwrap();
            rotate(&dir, "j").unwrap();
            assert_eq!(segments(&dir, "j").unwrap().last().unwrap().number, i + 1);
            prune(&dir, "j", &r, SystemTime::now()).unwrap();
        }
        std::fs::write(dir.join("j"), b"y\n").unwrap();
        prune(&dir, "j", &r, SystemTime::now()).unwrap();
        let segs = segments(&dir, "j").unwrap();
        let numbers: Vec<_> = segs.iter().map(|s| s.number).collect();
        assert_eq!(numbers, [5, 6, 7], "two of 100 bytes and the active one");
        assert!(segs[2].active);
        // Age: everything rotated goes once it is older than the bound.
        let later = SystemTime::now() + Duration::from_secs(32 * 86_400);
        prune(&dir, "j", &Retention::default(), later).unwrap();
        let segs = segments(&dir, "j").unwrap();
        let numbers: Vec<_> = segs.iter().map(|s| s.number).collect();
        assert_eq!(
            numbers,
            [6, 7],
            "the newest rotated one is kept, empty, for its number"
        );
        assert_eq!(std::fs::metadata(&segs[0].path).unwrap().len(), 0);
        assert!(r.due(100, 1, None, 0.0) && !r.due(0, 1000, None, 0.0));
        assert!(Retention::default().due(1, 1, Some(0.0), 86_400.0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
