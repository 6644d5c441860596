//! Delivering a module's `files/` (and its rendered templates) relative to `/`, inside the
//! module's sandbox, as `rsync -aHAX` would: files and links replaced whole with their
//! source's mode, owner and extended attributes (file capabilities and ACLs included); names
//! that are hard links of each other within the tree delivered as hard links; folders created
//! when missing (empty ones too), but an existing folder (`/etc`) keeps its own mode and
//! owner, so a module cannot loosen `/etc` by shipping `files/etc` with another mode.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The first delivered name of each source inode with more than one link.
type Links = HashMap<(u64, u64), PathBuf>;

/// Copies the tree `src` onto `dst`; returns how many files, links and new folders were
/// written.
pub fn deliver(src: &Path, dst: &Path) -> std::io::Result<usize> {
    deliver_tree(src, dst, &mut Links::new())
}

fn named(path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error {
    let path = path.to_owned();
    move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn deliver_tree(src: &Path, dst: &Path, links: &mut Links) -> std::io::Result<usize> {
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(named(src))?
        .collect::<Result<_, _>>()
        .map_err(named(src))?;
    entries.sort_by_key(|e| e.file_name());
    let mut written = 0;
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from).map_err(named(&from))?;
        // No look before creating: in the module's root, each lookup of a missing name is a
        // walk through every layer; creation says whether something is there.
        if meta.file_type().is_dir() {
            match std::fs::create_dir(&to) {
                Ok(()) => {
                    std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))
                        .map_err(named(&to))?;
                    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode()))
                        .map_err(named(&to))?;
                    let dir = std::fs::File::open(&to).map_err(named(&to))?;
                    copy_xattrs(&from, &dir).map_err(named(&to))?;
                    written += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(named(&to)(e)),
            }
            written += deliver_tree(&from, &to, links)?;
            continue;
        }
        let first = (meta.is_file() && meta.nlink() > 1)
            .then(|| links.get(&(meta.dev(), meta.ino())).cloned())
            .flatten();
        // Nothing there yet, and nothing runs in the module's root before its files are
        // delivered: written in place, no reader can see half of it.
        match write_entry(&from, &to, &meta, first.as_deref()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Written beside and renamed: a reader never sees half a file.
                let mut tmp_name = std::ffi::OsString::from(".");
                tmp_name.push(entry.file_name());
                tmp_name.push(".disco-new");
                let tmp = dst.join(tmp_name);
                let _ = std::fs::remove_file(&tmp);
                write_entry(&from, &tmp, &meta, first.as_deref()).map_err(named(&to))?;
                std::fs::rename(&tmp, &to).map_err(named(&to))?;
            }
            Err(e) => return Err(named(&to)(e)),
        }
        if meta.is_file() && meta.nlink() > 1 && first.is_none() {
            links.insert((meta.dev(), meta.ino()), to);
        }
        written += 1;
    }
    Ok(written)
}

/// Writes `from` (a file or a symlink) at `to`, where nothing is, with its mode, owner and
/// extended attributes; a second name of a file delivered at `first` is linked to it.
fn write_entry(
    from: &Path,
    to: &Path,
    meta: &std::fs::Metadata,
    first: Option<&Path>,
) -> std::io::Result<()> {
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
        return std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()));
    }
    if let Some(first) = first {
        return std::fs::hard_link(first, to);
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
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
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
