//! Delivering a module's `files/` (and its rendered templates) relative to `/`, inside the
//! module's sandbox, as `rsync -aHAX` would: files and links replaced whole with their
//! source's mode, owner and extended attributes (file capabilities and ACLs included); names
//! that are hard links of each other within the tree delivered as hard links; folders created
//! when missing (empty ones too), but an existing folder (`/etc`) keeps its own mode and
//! owner, so a module cannot loosen `/etc` by shipping `files/etc` with another mode.
//!
//! Every folder of the destination is reached through a descriptor, never followed through a
//! symbolic link: live, the root shows the live tree, where a local user may have made
//! `~/.ssh` a link to `/root/.ssh`. A link where the module has a folder is replaced by the
//! folder, as rsync does; nothing is ever written through it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// The first delivered name of each source inode with more than one link: its folder and name.
type Links = HashMap<(u64, u64), (OwnedFd, OsString)>;

/// Copies the tree `src` onto `dst`; returns how many files, links and new folders were
/// written.
pub fn deliver(src: &Path, dst: &Path) -> std::io::Result<usize> {
    let top = open_dir(AT_FDCWD, dst.as_os_str()).map_err(named(dst))?;
    deliver_tree(src, &top, dst, &mut Links::new())
}

fn named(path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error {
    let path = path.to_owned();
    move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn errno(path: &Path) -> impl FnOnce(Errno) -> std::io::Error {
    let path = path.to_owned();
    move |e: Errno| named(&path)(e.into())
}

/// Opens a folder for `*at` calls, never through a symbolic link.
fn open_dir<Fd: AsFd>(dir: Fd, name: &OsStr) -> std::io::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(Into::into)
}

/// The folder `name` in `dir`: made when missing (with the source's owner, mode and xattrs),
/// kept when it is a folder, and made in place of anything else (a symbolic link above all).
fn folder(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    from: &Path,
    meta: &std::fs::Metadata,
    shown: &Path,
) -> std::io::Result<(OwnedFd, bool)> {
    match mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => {}
        Err(Errno::EEXIST) => match open_dir(dir, name) {
            Ok(fd) => return Ok((fd, false)),
            // Not a folder: replaced by one, as rsync replaces a link to a folder.
            Err(_) => {
                unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(errno(shown))?;
                mkdirat(dir, name, Mode::from_bits_truncate(0o700)).map_err(errno(shown))?;
            }
        },
        Err(e) => return Err(errno(shown)(e)),
    }
    let fd = open_dir(dir, name).map_err(named(shown))?;
    let file = std::fs::File::from(fd.try_clone()?);
    std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid())).map_err(named(shown))?;
    file.set_permissions(std::fs::Permissions::from_mode(meta.mode()))
        .map_err(named(shown))?;
    copy_xattrs(from, &file).map_err(named(shown))?;
    Ok((fd, true))
}

fn deliver_tree(
    src: &Path,
    dst: &OwnedFd,
    shown: &Path,
    links: &mut Links,
) -> std::io::Result<usize> {
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(named(src))?
        .collect::<Result<_, _>>()
        .map_err(named(src))?;
    entries.sort_by_key(|e| e.file_name());
    let mut written = 0;
    for entry in entries {
        let from = entry.path();
        let name = entry.file_name();
        let to: PathBuf = shown.join(&name);
        let meta = std::fs::symlink_metadata(&from).map_err(named(&from))?;
        if meta.file_type().is_dir() {
            let (sub, made) = folder(dst.as_fd(), &name, &from, &meta, &to)?;
            written += usize::from(made);
            written += deliver_tree(&from, &sub, &to, links)?;
            continue;
        }
        let key = (meta.dev(), meta.ino());
        let first = (meta.is_file() && meta.nlink() > 1)
            .then(|| links.get(&key))
            .flatten();
        // No look before creating: in the module's root, each lookup of a missing name is a
        // walk through every layer; creation says whether something is there.
        match write_entry(&from, dst.as_fd(), &name, &meta, first) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Written beside and renamed: a reader never sees half a file.
                let mut tmp = OsString::from(".");
                tmp.push(&name);
                tmp.push(".disco-new");
                let _ = unlinkat(dst.as_fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
                write_entry(&from, dst.as_fd(), &tmp, &meta, first).map_err(named(&to))?;
                // A folder where the module has a file goes: the rename cannot replace it.
                if fstatat(dst.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(
                    |st| {
                        SFlag::from_bits_truncate(st.st_mode & nix::libc::S_IFMT) == SFlag::S_IFDIR
                    },
                ) {
                    crate::apply::at::remove(dst.as_fd(), &name, &to)
                        .map_err(std::io::Error::other)?;
                }
                nix::fcntl::renameat(dst.as_fd(), tmp.as_os_str(), dst.as_fd(), name.as_os_str())
                    .map_err(errno(&to))?;
            }
            Err(e) => return Err(named(&to)(e)),
        }
        if meta.is_file() && meta.nlink() > 1 && first.is_none() {
            links.insert(key, (dst.try_clone()?, name));
        }
        written += 1;
    }
    Ok(written)
}

/// Writes `from` (a file or a symlink) as `name` in `dir`, where nothing is, with its mode,
/// owner and extended attributes; a second name of a file delivered as `first` is linked to it.
fn write_entry(
    from: &Path,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    meta: &std::fs::Metadata,
    first: Option<&(OwnedFd, OsString)>,
) -> std::io::Result<()> {
    if meta.file_type().is_symlink() {
        symlinkat(&std::fs::read_link(from)?, dir, name)?;
        return fchownat(
            dir,
            name,
            Some(Uid::from_raw(meta.uid())),
            Some(Gid::from_raw(meta.gid())),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(Into::into);
    }
    if let Some((first_dir, first_name)) = first {
        return linkat(
            first_dir.as_fd(),
            first_name.as_os_str(),
            dir,
            name,
            AtFlags::empty(),
        )
        .map_err(Into::into);
    }
    use std::os::unix::fs::OpenOptionsExt;
    // Only files, folders and links are delivered: a fifo would block, a device never ends.
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(from)?;
    if !src.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file, folder or symbolic link",
        ));
    }
    // Private until it is whole and has its owner; through the descriptor from then on (each
    // path lookup is a walk through every layer of the root).
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut dst = std::fs::File::from(fd);
    std::io::copy(&mut src, &mut dst)?;
    // chown clears setuid, setgid and a file capability: the mode and the xattrs come after.
    std::os::unix::fs::fchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
    dst.set_permissions(std::fs::Permissions::from_mode(meta.mode()))?;
    copy_xattrs(from, &dst)
}

/// Copies the extended attributes of `from` onto `to` (through its descriptor). A filesystem
/// that cannot hold one (`EOPNOTSUPP`) is no error; anything else is.
fn copy_xattrs(from: &Path, to: &std::fs::File) -> std::io::Result<()> {
    use xattr::FileExt;
    let names = match xattr::list(from) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        // overlayfs's own attributes describe the module's folder, not what it delivers.
        let shown = name.to_string_lossy();
        if shown.starts_with("trusted.overlay.") || shown.starts_with("user.overlay.") {
            continue;
        }
        if let Some(value) = xattr::get(from, &name)? {
            match to.set_xattr(&name, &value) {
                Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {}
                other => other?,
            }
        }
    }
    Ok(())
}
