//! Delivering a module's `files/` (and its rendered templates) relative to `/`, inside the
//! module's sandbox, as rsync would: files and links replaced whole with their source's mode
//! and owner; folders created when missing, but an existing folder (`/etc`) keeps its own
//! mode and owner, so a module cannot loosen `/etc` by shipping `files/etc` with another mode.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Copies the tree `src` onto `dst`; returns how many files and links were written.
pub fn deliver(src: &Path, dst: &Path) -> std::io::Result<usize> {
    let named = |path: &Path| {
        let path = path.to_owned();
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    };
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
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(named(&to)(e)),
            }
            written += deliver(&from, &to)?;
            continue;
        }
        // Nothing there yet, and nothing runs in the module's root before its files are
        // delivered: written in place, no reader can see half of it.
        match write_entry(&from, &to, &meta) {
            Ok(()) => {
                written += 1;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(named(&to)(e)),
        }
        // Written beside and renamed: a reader never sees half a file.
        let tmp = dst.join(format!(
            ".{}.disco-new",
            entry.file_name().to_string_lossy()
        ));
        let _ = std::fs::remove_file(&tmp);
        write_entry(&from, &tmp, &meta).map_err(named(&to))?;
        std::fs::rename(&tmp, &to).map_err(named(&to))?;
        written += 1;
    }
    Ok(written)
}

/// Writes `from` (a file or a symlink) at `to`, where nothing is, with its mode and owner.
fn write_entry(from: &Path, to: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
        return std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()));
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
    // chown clears setuid and setgid: the mode comes after it.
    std::os::unix::fs::fchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
    dst.set_permissions(std::fs::Permissions::from_mode(meta.mode()))
}
