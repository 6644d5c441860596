//! One dance per root: a lock keyed by the root itself (its device and inode), whatever state
//! directory a dance was given, so two dances onto one root never run at once.
//!
//! The lock files live in a root-owned folder of the machine's `/run` ([`ROOT_LOCKS`]), which
//! no other user may write: a lock folder that someone else could replace would let them take
//! every dance's lock, or redirect its creation.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use super::ApplyError;

/// Where the roots' lock files are.
pub const ROOT_LOCKS: &str = "/run/disco/roots";

/// The lock of one root, held until dropped.
#[derive(Debug)]
pub struct RootLock {
    _file: File,
    /// The lock file.
    pub path: PathBuf,
}

/// A folder of the lock path: made when missing (0755 for `/run/disco`, which the fix locks
/// share; 0700 for the roots'), and refused unless owned by us and writable by no one else.
fn lock_folder(path: &Path, mode: u32) -> Result<(), ApplyError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(ApplyError::io("create", path, e)),
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| ApplyError::io("stat", path, e))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return Err(ApplyError::NotOurs {
            path: path.to_owned(),
            found: format!(
                "owned by uid {}, mode {:o}, {}",
                meta.uid(),
                meta.mode() & 0o7777,
                if meta.is_dir() {
                    "a folder"
                } else {
                    "not a folder"
                }
            ),
        });
    }
    Ok(())
}

/// Takes the lock of the root open as `root` (shown as `shown`): waits for it when `wait`,
/// else fails at once with [`ApplyError::Busy`].
pub fn lock_root(root: BorrowedFd<'_>, shown: &Path, wait: bool) -> Result<RootLock, ApplyError> {
    let dir = Path::new(ROOT_LOCKS);
    if let Some(parent) = dir.parent() {
        lock_folder(parent, 0o755)?;
    }
    lock_folder(dir, 0o700)?;
    let st = nix::sys::stat::fstat(root).map_err(|e| ApplyError::io("stat", shown, e.into()))?;
    let name = format!("root-{:x}-{:x}.lock", st.st_dev, st.st_ino);
    let path = dir.join(&name);
    let folder = File::open(dir).map_err(|e| ApplyError::io("open", dir, e))?;
    let fd = openat(
        folder.as_fd(),
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| ApplyError::io("open", &path, e.into()))?;
    let file = File::from(fd);
    if wait {
        file.lock().map_err(|e| ApplyError::io("lock", &path, e))?;
    } else if file.try_lock().is_err() {
        return Err(ApplyError::Busy {
            root: shown.to_owned(),
            lock: path,
        });
    }
    Ok(RootLock { _file: file, path })
}

/// Takes the lock of the root at `root` (a path), opened without following symlinks.
pub fn lock_root_path(root: &Path, wait: bool) -> Result<RootLock, ApplyError> {
    let fd = super::at::open_root(root)?;
    lock_root(fd.as_fd(), root, wait)
}
