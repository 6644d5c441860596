//! Undo records: what a live merge replaced, kept so that `disco rollback` can put it back.
//!
//! The merge moves each entry it replaces or deletes into an undo folder at the top of the
//! entry's filesystem (a rename, or a second link for a file: no copy, no extra space for
//! content that is not rewritten). The folder is made like a staging folder: an unpredictable
//! name, `mkdirat` beneath the top's descriptor, root's, 0700, checked through its own
//! descriptor. Its name is in the journal before the commit begins, and each entry in it is
//! named after the operation that put it there, so a replay of a cut-short commit knows what
//! it already kept.
//!
//! When the merge is done and checked, its journal becomes an undo record in
//! `STATE/undo/DANCE/`: the plan (with the attributes each changed folder had before), which
//! operations kept an entry aside, and the identity (inode and change time) of what the merge
//! left at each path, so that a later change to any of them is noticed before a rollback
//! touches anything.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::{self, Journal};
use super::{at, ApplyError, Op};

/// How every undo folder's name starts.
pub const PREFIX: &str = ".disco-undo-";

/// The record format this disco writes.
pub const VERSION: u32 = 1;

/// How many dances' undo records a live dance keeps by default.
pub const DEFAULT_KEEP: usize = 5;

/// How many bytes of replaced content the kept records may hold by default (1 GiB).
pub const DEFAULT_KEEP_BYTES: u64 = 1 << 30;

/// The name, in its filesystem's undo folder, of what operation `i` replaced.
pub fn aside_name(i: usize) -> std::ffi::OsString {
    std::ffi::OsString::from(i.to_string())
}

/// What a merge left at one path: enough to notice that anything changed it since.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Inode.
    pub ino: u64,
    /// Change time (seconds, nanoseconds): any write, chmod, chown or xattr change moves it,
    /// and no one can set it back.
    pub ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of a stat.
    pub fn of(st: &nix::sys::stat::FileStat) -> Stamp {
        Stamp {
            ino: st.st_ino,
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// How far a rollback of this record went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Progress {
    /// Checked; the newer versions of the forced paths are being moved beside them.
    Moving {
        /// Operations whose paths changed since the dance and were forced.
        forced: Vec<u32>,
    },
    /// Putting back what the merge replaced, in reverse order.
    Restoring {
        /// The forced operations, still forced.
        #[serde(default)]
        forced: Vec<u32>,
    },
    /// Undone; the deferred commands remain.
    Done,
}

/// A merge that can be undone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The format ([`VERSION`]).
    pub version: u32,
    /// The merge's journal: root, filesystems (each with its undo folder), plan, deferred
    /// commands.
    pub journal: Journal,
    /// Operations whose previous entry is in the undo folder.
    pub asides: Vec<u32>,
    /// Operation → what the merge left at its path (pairs in the file).
    #[serde(with = "stamps")]
    pub after: BTreeMap<u32, Stamp>,
    /// Operation → what its path held when the merge kept it aside (before linking or
    /// renaming it moved its change time): when a rollback puts it back, an older dance's
    /// record that names it is brought up to date. Missing after a replay.
    #[serde(with = "stamps", default)]
    pub before: BTreeMap<u32, Stamp>,
    /// Paths whose previous entry could not be kept (a folder overlayfs cannot rename): the
    /// record cannot undo them, and a rollback refuses.
    pub lost: Vec<String>,
    /// Bytes the kept entries hold.
    pub bytes: u64,
    /// When the merge finished (milliseconds since the epoch).
    pub at_ms: u64,
    /// A rollback in progress.
    pub rollback: Option<Progress>,
}

mod stamps {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Stamp;

    pub fn serialize<S: Serializer>(map: &BTreeMap<u32, Stamp>, s: S) -> Result<S::Ok, S::Error> {
        map.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, Stamp>, D::Error> {
        Ok(Vec::<(u32, Stamp)>::deserialize(d)?.into_iter().collect())
    }
}

/// Where undo records live.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("undo")
}

/// The folder of one dance's records.
pub fn dance_dir(state_dir: &Path, dance: &str) -> PathBuf {
    dir(state_dir).join(dance)
}

/// The position of a merge in its dance, from its journal's name (`DANCE.mK`).
fn position(name: &str) -> u64 {
    name.rsplit_once(".m")
        .and_then(|(_, k)| k.parse().ok())
        .unwrap_or(0)
}

impl Record {
    /// Writes the record durably under its dance's folder and returns its path.
    pub fn write(&self, state_dir: &Path, name: &str) -> Result<PathBuf, ApplyError> {
        let dir = dance_dir(state_dir, &self.journal.run);
        journal::private_dir(&super::undo::dir(state_dir))?;
        journal::private_dir(&dir)?;
        let path = dir.join(format!("m{:05}.json", position(name)));
        journal::write_json_durably(&path, self)?;
        Ok(path)
    }

    /// Reads a record.
    pub fn read(path: &Path) -> Result<Record, ApplyError> {
        let bytes = std::fs::read(path).map_err(|e| ApplyError::io("read", path, e))?;
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| ApplyError::Journal {
            path: path.to_owned(),
            why: format!("unreadable undo record ({e})"),
        })?;
        if record.version != VERSION {
            return Err(ApplyError::Journal {
                path: path.to_owned(),
                why: format!(
                    "undo record format {} (this disco reads {VERSION})",
                    record.version
                ),
            });
        }
        Ok(record)
    }
}

/// One dance's undo records, in merge order.
#[derive(Debug)]
pub struct Dance {
    /// The dance's id.
    pub id: String,
    /// Its records and their files.
    pub records: Vec<(PathBuf, Record)>,
}

impl Dance {
    /// The root its merges changed.
    pub fn root(&self) -> Option<&Path> {
        self.records.first().map(|(_, r)| r.journal.root.as_path())
    }

    /// Bytes its kept entries hold.
    pub fn bytes(&self) -> u64 {
        self.records.iter().map(|(_, r)| r.bytes).sum()
    }

    /// When its first merge finished.
    pub fn at_ms(&self) -> u64 {
        self.records.first().map_or(0, |(_, r)| r.at_ms)
    }

    /// Whether a rollback of it began.
    pub fn rolling_back(&self) -> bool {
        self.records.iter().any(|(_, r)| r.rollback.is_some())
    }
}

/// Every dance with undo records onto `root` (all roots when `None`), oldest first. A record
/// that cannot be read is an error naming it.
pub fn dances(state_dir: &Path, root: Option<&Path>) -> Result<Vec<Dance>, ApplyError> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return Ok(Vec::new());
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    let mut out = Vec::new();
    for id in ids {
        let folder = dance_dir(state_dir, &id);
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&folder)
            .map_err(|e| ApplyError::io("read", &folder, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name()
                        .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        let mut records = Vec::new();
        for p in paths {
            let r = Record::read(&p)?;
            records.push((p, r));
        }
        let dance = Dance { id, records };
        if dance.records.is_empty() {
            // A dance whose last record went: its folder is left over from a rollback.
            let _ = std::fs::remove_dir(&folder);
            continue;
        }
        if root.is_none_or(|root| dance.root() == Some(root)) {
            out.push(dance);
        }
    }
    // By when their merges finished: ids of other shapes (`__apply`'s) sort by time too.
    out.sort_by(|a, b| (a.at_ms(), &a.id).cmp(&(b.at_ms(), &b.id)));
    Ok(out)
}

/// The dance onto `root` whose rollback began and did not finish, if any: what a live dance
/// checks before it starts. Only each record's root and phase are read, not its plan.
pub fn rolling_back(state_dir: &Path, root: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Root {
        #[serde(with = "super::bytes")]
        root: PathBuf,
    }
    #[derive(Deserialize)]
    struct Phase {
        journal: Root,
        rollback: Option<serde::de::IgnoredAny>,
    }
    let mut ids: Vec<String> = std::fs::read_dir(dir(state_dir))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids.into_iter().find(|id| {
        std::fs::read_dir(dance_dir(state_dir, id))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice::<Phase>(&bytes).ok())
            .any(|p| p.journal.root == root && p.rollback.is_some())
    })
}

/// The ids of the dances onto `root` that `disco rollback` can still undo, newest first: the
/// newest can be undone now, each older one after those above it.
pub fn rollbackable(state_dir: &Path, root: Option<&Path>) -> Vec<String> {
    // Newest first, up to the first that cannot be undone: an older one waits behind it.
    dances(state_dir, root)
        .unwrap_or_default()
        .into_iter()
        .rev()
        .take_while(|d| d.records.iter().all(|(_, r)| r.lost.is_empty()))
        .map(|d| d.id)
        .collect()
}

/// Prunes the undo records of dances onto `root`, oldest first, until at most `keep` dances
/// are kept and their kept entries weigh at most `max_bytes`; a dance being rolled back is
/// never touched. Returns one line per dance pruned or kept against the bounds. The caller
/// holds the root's lock (a rollback holds it too).
pub fn prune(state_dir: &Path, root: &Path, keep: usize, max_bytes: u64) -> Vec<String> {
    let dances = match dances(state_dir, Some(root)) {
        Ok(d) => d,
        Err(e) => return vec![format!("cannot read the undo records: {e}")],
    };
    let mut count = dances.len();
    let mut bytes: u64 = dances.iter().map(Dance::bytes).sum();
    let mut lines = Vec::new();
    for dance in &dances {
        if count <= keep && bytes <= max_bytes {
            break;
        }
        if dance.rolling_back() {
            continue;
        }
        match remove_dance(state_dir, dance) {
            Ok(()) => {
                count -= 1;
                bytes = bytes.saturating_sub(dance.bytes());
                lines.push(format!(
                    "dance {} can no longer be rolled back: its undo record was pruned",
                    dance.id
                ));
            }
            Err(e) => {
                // Oldest first or not at all: a newer record never goes before an older one.
                lines.push(format!(
                    "cannot prune the undo record of dance {}: {e}",
                    dance.id
                ));
                break;
            }
        }
    }
    lines
}

/// Removes a dance's records and undo folders, each record first: an interrupted prune
/// leaves a folder no record names, never a record whose folder is half gone.
fn remove_dance(state_dir: &Path, dance: &Dance) -> Result<(), ApplyError> {
    for (path, record) in &dance.records {
        let j = &record.journal;
        let folders = if j.filesystems.iter().any(|f| f.undo.is_some()) {
            let opened = super::merge::open(j)?;
            // Only folders that are ours are emptied.
            let folders = super::merge::reopen(j, &opened, |fs| fs.undo.as_ref())?;
            Some((opened, folders))
        } else {
            None
        };
        journal::remove(path)?;
        if let Some((opened, folders)) = folders {
            for (fs, u) in folders.into_iter().enumerate() {
                if let Some(u) = u {
                    u.remove(opened.tops[fs].as_fd())?;
                }
            }
        }
    }
    let _ = std::fs::remove_dir(dance_dir(state_dir, &dance.id));
    Ok(())
}

/// Bytes held by what is at `name` in `dir` (a folder with everything in it), by blocks.
pub(super) fn usage(dir: BorrowedFd<'_>, name: &std::ffi::OsStr, shown: &Path) -> u64 {
    let Ok(Some(st)) = at::stat(dir, name, shown) else {
        return 0;
    };
    let own = u64::try_from(st.st_blocks).unwrap_or(0) * 512;
    if !at::is_dir(&st) {
        return own;
    }
    let Ok(sub) = at::open_dir(dir, name, shown) else {
        return own;
    };
    let Ok(list) = at::names(sub.as_fd(), shown) else {
        return own;
    };
    own + list
        .iter()
        .map(|n| usage(sub.as_fd(), n, &shown.join(n)))
        .sum::<u64>()
}

/// Which operations of a plan are the last on their path (what a path holds after the merge).
pub fn last_ops(ops: &[Op]) -> BTreeMap<(usize, &Path), usize> {
    let mut last = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        last.insert(op.target(), i);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_is_placed_by_its_journal_name_in_dance_order() {
        assert_eq!(position("1765000000.000001-42.m3"), 3);
        assert_eq!(position("1765000000.000001-42.m12"), 12);
        assert_eq!(position("odd"), 0);
        // Record files sort in merge order, past nine modules too.
        assert!(format!("m{:05}", 9) < format!("m{:05}", 10));
    }
}
