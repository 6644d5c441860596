//! The intent journal: a merge's plan, made durable before the live system is touched, and
//! finished by the next command that touches dances (the dance itself, or `disco recover`)
//! when the merge did not finish.
//!
//! A journal names the root and each filesystem it changes by identity (device, inode, mount
//! ID, filesystem ID, boot), so a replay onto anything else (the root unmounted, another disk
//! mounted in its place) refuses instead of writing into it. Its phase says how far the merge
//! went: `planned` (nothing live changed; the staging folders may be partly written), `staged`
//! (everything staged and durable, with each staged inode; the commit may have begun), or
//! `committed` (only the deferred service commands remain).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::deferred::Deferred;
use super::{ApplyError, Op};

/// The journal format this disco writes; others are set aside, never guessed at.
pub const VERSION: u32 = 2;

/// Which folder a journal was written for, as the kernel names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Device number.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Mount ID.
    pub mnt_id: u64,
    /// Filesystem ID (stable across reboots on disk filesystems).
    pub fsid: u64,
    /// The boot it was taken in.
    pub boot: String,
}

impl Identity {
    /// The identity of the folder `fd`.
    pub fn of(fd: BorrowedFd<'_>, shown: &Path) -> Result<Identity, ApplyError> {
        let at = crate::sys::placement(fd).map_err(|e| ApplyError::io("identify", shown, e))?;
        let fsid = crate::sys::fsid(fd).map_err(|e| ApplyError::io("identify", shown, e))?;
        Ok(Identity {
            dev: at.dev,
            ino: at.ino,
            mnt_id: at.mnt_id,
            fsid,
            boot: crate::sys::boot_id(),
        })
    }

    /// Whether `now` is the folder this identity was taken of: within one boot the same device,
    /// inode and mount; after a reboot, which renumbers devices and mounts, the same inode on a
    /// filesystem with the same ID.
    pub fn same(&self, now: &Identity) -> bool {
        if self.boot == now.boot {
            self.dev == now.dev && self.ino == now.ino && self.mnt_id == now.mnt_id
        } else {
            self.ino == now.ino && self.fsid == now.fsid && self.fsid != 0
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "device {}:{}, inode {}, mount {}",
            nix::sys::stat::major(self.dev),
            nix::sys::stat::minor(self.dev),
            self.ino,
            self.mnt_id
        )
    }
}

/// One filesystem a merge changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRecord {
    /// Its top, relative to the root.
    #[serde(with = "super::bytes")]
    pub rel: PathBuf,
    /// Its top's identity.
    pub id: Identity,
    /// Its staging folder's name, when the merge stages something there.
    pub staging: Option<String>,
    /// Its undo folder's name: where the merge keeps what it replaces there (see
    /// [`super::undo`]). `None` in journals of a disco without undo records.
    #[serde(default)]
    pub undo: Option<String>,
}

/// How far a merge went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Planned: nothing of the live tree changed yet.
    Planned,
    /// Everything staged and durable; the commit may have begun. Each staged entry's inode,
    /// which the commit's check (and a replay) finds at its live path afterwards.
    Staged {
        /// Staged entry → inode (a list of pairs in the file: JSON keys are strings, which a
        /// tagged enum cannot read back as numbers).
        #[serde(with = "pairs")]
        inodes: BTreeMap<u32, u64>,
    },
    /// In place; only the deferred commands remain.
    Committed,
}

mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<u32, u64>, s: S) -> Result<S::Ok, S::Error> {
        map.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, u64>, D::Error> {
        Ok(Vec::<(u32, u64)>::deserialize(d)?.into_iter().collect())
    }
}

/// A merge in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The format ([`VERSION`]).
    pub version: u32,
    /// The dance run it belongs to.
    pub run: String,
    /// The module being merged.
    pub module: String,
    /// The node.
    pub node: String,
    /// The target root.
    #[serde(with = "super::bytes")]
    pub root: PathBuf,
    /// The root's identity.
    pub root_id: Identity,
    /// The filesystems the plan changes; each operation names one by its index here.
    pub filesystems: Vec<FsRecord>,
    /// The plan.
    pub ops: Vec<Op>,
    /// How far it went.
    pub phase: Phase,
    /// The service commands to run after it, with what they run with.
    pub deferred: Deferred,
}

/// Where journals live.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("journal")
}

/// Where journals that could not be finished are set aside.
pub fn aside_dir(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("aside")
}

fn fsync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Makes a folder of the state directory, private to root: journals name every path a merge
/// changes, and their scratch layers hold the new contents.
pub fn private_dir(path: &Path) -> Result<(), ApplyError> {
    crate::sys::private_dir(path).map_err(|e| ApplyError::io("create", path, e))
}

impl Journal {
    /// Writes the journal durably (write beside, fsync, rename, fsync the folder) as `name`
    /// and returns its path.
    pub fn write(&self, state_dir: &Path, name: &str) -> Result<PathBuf, ApplyError> {
        let dir = dir(state_dir);
        private_dir(&dir)?;
        let path = dir.join(format!("{name}.json"));
        write_json_durably(&path, self)?;
        Ok(path)
    }

    /// Reads a journal; one of another format is an error naming it.
    pub fn read(path: &Path) -> Result<Journal, ApplyError> {
        let bytes = std::fs::read(path).map_err(|e| ApplyError::io("read", path, e))?;
        let journal: Journal = serde_json::from_slice(&bytes).map_err(|e| ApplyError::Journal {
            path: path.to_owned(),
            why: format!("unreadable ({e}); `disco recover --discard` sets it aside"),
        })?;
        if journal.version != VERSION {
            return Err(ApplyError::Journal {
                path: path.to_owned(),
                why: format!(
                    "format {} (this disco writes {VERSION}); `disco recover --discard` sets it aside",
                    journal.version
                ),
            });
        }
        Ok(journal)
    }

    /// Whether a journal of run `run` is pending (its scratch layers must be kept).
    pub fn pending_for(state_dir: &Path, run: &str) -> bool {
        pending_paths(&dir(state_dir)).iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(run))
        })
    }

    /// A live path of the plan, for messages.
    pub fn shown(&self, fs: usize, rel: &Path) -> PathBuf {
        let top = self
            .filesystems
            .get(fs)
            .map_or_else(PathBuf::new, |f| self.root.join(&f.rel));
        if rel.as_os_str().is_empty() {
            top
        } else {
            top.join(rel)
        }
    }
}

/// `value` as JSON, written durably to `path` ([`write_durably`]): journals, undo records and
/// their rollback phases.
pub fn write_json_durably<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), ApplyError> {
    let json = serde_json::to_vec(value).map_err(|e| ApplyError::Journal {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    write_durably(path, &json)
}

/// Writes `bytes` to `path` durably: beside it, fsync, rename over it, fsync the folder.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), ApplyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(path.file_name().unwrap_or_default());
    tmp.push(".tmp");
    let tmp = dir.join(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        fsync_dir(dir)
    };
    write().map_err(|e| ApplyError::io("write", path, e))
}

/// Removes a finished journal, durably.
pub fn remove(path: &Path) -> Result<(), ApplyError> {
    std::fs::remove_file(path).map_err(|e| ApplyError::io("remove", path, e))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir).map_err(|e| ApplyError::io("sync", dir, e))?;
    }
    Ok(())
}

/// Moves a journal that cannot be finished out of the way, durably, so that it no longer stops
/// dances; it stays readable in the aside folder.
pub fn set_aside(state_dir: &Path, path: &Path) -> Result<PathBuf, ApplyError> {
    let aside = aside_dir(state_dir);
    private_dir(&aside)?;
    let to = aside.join(path.file_name().unwrap_or_default());
    std::fs::rename(path, &to).map_err(|e| ApplyError::io("set aside", path, e))?;
    fsync_dir(&aside).map_err(|e| ApplyError::io("sync", &aside, e))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir).map_err(|e| ApplyError::io("sync", dir, e))?;
    }
    Ok(to)
}

/// Whether a merge is pending (a journal not yet finished).
pub fn pending(state_dir: &Path) -> Option<PathBuf> {
    pending_paths(&dir(state_dir)).into_iter().next()
}

/// A pending journal that stops live dances onto `root`: one written for that root, or one
/// that cannot be read (it might be).
pub fn pending_for_root(state_dir: &Path, root: &Path) -> Option<PathBuf> {
    pending_paths(&dir(state_dir))
        .into_iter()
        .find(|p| Journal::read(p).map_or(true, |j| j.root == root))
}

/// Every pending journal, oldest first.
pub fn pending_paths(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(dev: u64, ino: u64, mnt: u64, fsid: u64, boot: &str) -> Identity {
        Identity {
            dev,
            ino,
            mnt_id: mnt,
            fsid,
            boot: boot.into(),
        }
    }

    #[test]
    fn every_phase_reads_back_as_written() {
        let dir = std::env::temp_dir().join(format!("disco-journal-{}", std::process::id()));
        let staged = Phase::Staged {
            inodes: [(1, 77), (2, 78)].into_iter().collect(),
        };
        for phase in [Phase::Planned, staged, Phase::Committed] {
            let j = Journal {
                version: VERSION,
                run: "r".into(),
                module: "m".into(),
                node: "n".into(),
                root: PathBuf::from(std::ffi::OsString::from(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"/srv/caf\xe9"),
                )),
                root_id: id(1, 2, 3, 4, "b"),
                filesystems: Vec::new(),
                ops: vec![Op::File {
                    fs: 0,
                    path: PathBuf::from(std::ffi::OsString::from(
                        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"etc/\xff"),
                    )),
                    source: "/run/x".into(),
                    staged: 3,
                    attrs: super::super::Attrs {
                        mode: 0o4755,
                        uid: 0,
                        gid: 0,
                        xattrs: vec![("security.capability".into(), vec![1, 0, 0, 2])],
                        mtime: (1, 2),
                    },
                }],
                phase,
                deferred: Default::default(),
            };
            let path = j.write(&dir, "x").unwrap();
            assert_eq!(Journal::read(&path).unwrap(), j);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_root_is_the_same_by_device_inode_and_mount_within_a_boot_and_by_filesystem_after() {
        let then = id(64, 2, 30, 77, "b1");
        assert!(then.same(&id(64, 2, 30, 77, "b1")));
        assert!(!then.same(&id(64, 2, 31, 77, "b1")), "remounted");
        assert!(!then.same(&id(65, 2, 30, 77, "b1")), "another device");
        assert!(!then.same(&id(64, 9, 30, 77, "b1")), "the bare mount point");
        assert!(then.same(&id(99, 2, 5, 77, "b2")), "rebooted: renumbered");
        assert!(
            !then.same(&id(99, 2, 5, 78, "b2")),
            "rebooted: another disk"
        );
        assert!(
            !id(64, 2, 30, 0, "b1").same(&id(64, 2, 30, 0, "b2")),
            "no fsid"
        );
    }
}
