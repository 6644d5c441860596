//! Live paths reached only through descriptors: the target root opened without following a
//! symlink, each filesystem's top opened beneath it, and every folder a merge changes opened
//! beneath its filesystem's top with `RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV` (openat2(2)). A
//! folder swapped for a symlink, or a mount slid under a path, between two operations makes the
//! operation fail instead of reaching elsewhere; nothing here ever resolves an absolute path
//! twice.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::ApplyError;

fn err<'a>(what: &'static str, shown: &'a Path) -> impl FnOnce(Errno) -> ApplyError + 'a {
    move |e| ApplyError::io(what, shown, e.into())
}

/// Opens the folder `path` (absolute) for reading, following no symlink anywhere on the way.
pub fn open_root(path: &Path) -> Result<OwnedFd, ApplyError> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(AT_FDCWD, path, how).map_err(err("open without symlinks", path))
}

/// Opens the folder `rel` beneath `root` (a filesystem's top: crossing into its mount is the
/// point), following no symlink. `shown` names it in errors.
pub fn open_top(root: BorrowedFd<'_>, rel: &Path, shown: &Path) -> Result<OwnedFd, ApplyError> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(root, rel, how).map_err(err("open without symlinks", shown))
}

/// The folder holding `rel` (a path relative to the filesystem's top `top`), opened beneath
/// the top without following a symlink or crossing a mount, and `rel`'s last name.
pub fn parent<'p>(
    top: BorrowedFd<'_>,
    rel: &'p Path,
    shown: &Path,
) -> Result<(OwnedFd, &'p OsStr), ApplyError> {
    let name = rel.file_name().ok_or_else(|| {
        ApplyError::io(
            "resolve",
            shown,
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    let dir = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd = openat2(top, dir, how).map_err(err("resolve without symlinks", shown))?;
    Ok((fd, name))
}

/// What is at `name` in `dir`, not following a symlink; `None` when nothing is.
pub fn stat(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    shown: &Path,
) -> Result<Option<FileStat>, ApplyError> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(err("stat", shown)(e)),
    }
}

/// Whether a stat is of a folder.
pub fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & nix::libc::S_IFMT) == SFlag::S_IFDIR
}

/// Opens the folder `name` in `dir` for reading, not following a symlink in its place.
pub fn open_dir(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<OwnedFd, ApplyError> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open", shown))
}

/// Removes whatever is at `name` in `dir` (a folder with everything in it, never crossing into
/// another filesystem); returns whether something was there.
pub fn remove(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<bool, ApplyError> {
    let Some(st) = stat(dir, name, shown)? else {
        return Ok(false);
    };
    if is_dir(&st) {
        // A folder on another device than the one holding it is a mount point: what is mounted
        // there is never emptied (a filesystem mounted since the plan was made included).
        let parent = nix::sys::stat::fstat(dir).map_err(err("stat", shown))?;
        if st.st_dev != parent.st_dev {
            return Err(ApplyError::OtherFilesystem(shown.to_owned()));
        }
        let sub = open_dir(dir, name, shown)?;
        empty(sub, st.st_dev, shown)?;
        unlinkat(dir, name, UnlinkatFlags::RemoveDir).map_err(err("remove", shown))?;
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(err("remove", shown))?;
    }
    Ok(true)
}

/// Removes everything in the folder `fd`, which is on device `dev`.
fn empty(fd: OwnedFd, dev: u64, shown: &Path) -> Result<(), ApplyError> {
    let keep = fd;
    let names = names(keep.as_fd(), shown)?;
    for name in names {
        let path: PathBuf = shown.join(&name);
        let Some(st) = stat(keep.as_fd(), &name, &path)? else {
            continue;
        };
        // Only a folder's device tells a mount point: overlayfs (without `xino`) reports the
        // device of the layer a file lives in.
        if is_dir(&st) && st.st_dev != dev {
            return Err(ApplyError::OtherFilesystem(path));
        }
        remove(keep.as_fd(), &name, &path)?;
    }
    Ok(())
}

/// The first folder under the folder `name` in `dir` that is on another device than it (a
/// mount point), if any: what is mounted there must not move with its folder.
pub fn mount_beneath(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    shown: &Path,
) -> Result<Option<PathBuf>, ApplyError> {
    let Some(st) = stat(dir, name, shown)? else {
        return Ok(None);
    };
    if !is_dir(&st) {
        return Ok(None);
    }
    let sub = open_dir(dir, name, shown)?;
    let keep = sub
        .try_clone()
        .map_err(|e| ApplyError::io("open", shown, e))?;
    let mut listing = nix::dir::Dir::from_fd(sub).map_err(err("read", shown))?;
    let mut folders = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(err("read", shown))?;
        let n = entry.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        // Only folders can be mount points worth refusing; the type from the listing saves a
        // stat of every file.
        if matches!(entry.file_type(), Some(nix::dir::Type::Directory) | None) {
            folders.push(std::ffi::OsString::from(
                <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(n),
            ));
        }
    }
    for n in folders {
        let path = shown.join(&n);
        let Some(child) = stat(keep.as_fd(), &n, &path)? else {
            continue;
        };
        if !is_dir(&child) {
            continue;
        }
        if child.st_dev != st.st_dev {
            return Ok(Some(path));
        }
        if let Some(found) = mount_beneath(keep.as_fd(), &n, &path)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Lists the names in a folder, by descriptor.
pub fn names(fd: BorrowedFd<'_>, shown: &Path) -> Result<Vec<std::ffi::OsString>, ApplyError> {
    use std::os::unix::ffi::OsStrExt;
    let owned = fd
        .try_clone_to_owned()
        .map_err(|e| ApplyError::io("open", shown, e))?;
    let mut listing =
        nix::dir::Dir::from_fd(owned).map_err(|e| ApplyError::io("read", shown, e.into()))?;
    let mut out = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(|e| ApplyError::io("read", shown, e.into()))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(std::ffi::OsStr::from_bytes(name).to_owned());
        }
    }
    // Reading a directory stream moves its offset, which the clone shares.
    nix::unistd::lseek(fd.as_fd(), 0, nix::unistd::Whence::SeekSet)
        .map_err(|e| ApplyError::io("read", shown, e.into()))?;
    Ok(out)
}
