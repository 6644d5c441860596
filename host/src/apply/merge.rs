//! Carrying out a plan: stage, `syncfs`, rename into place in plan order, `syncfs`.
//!
//! Staging writes every new file, link and node into a folder at the top of the live
//! filesystem (same filesystem, so a rename moves it into place atomically), then one
//! `syncfs` makes all their data durable at once — the crash guarantee of an fsync per file,
//! without paying one per file. Only then is the live tree changed, one rename (or deletion)
//! at a time, so a file is always entirely old or entirely new.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::journal::{self, Journal};
use super::{plan, ApplyError, Attrs, Op};

/// What a merge changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Paths written, created or deleted.
    pub paths: usize,
    /// The journal, kept until the caller ran the deferred commands and calls
    /// [`journal::remove`]; `None` when there were none.
    pub journal: Option<PathBuf>,
}

/// What follows a merge: service commands to run, where, for which node.
#[derive(Clone, Debug, Default)]
pub struct After {
    /// The target root.
    pub root: PathBuf,
    /// The node.
    pub node: String,
    /// The deferred service commands, in order.
    pub deferred: Vec<Vec<String>>,
}

fn set_attrs(path: &Path, attrs: &Attrs, link: bool) -> Result<(), ApplyError> {
    let io = |what| move |e| ApplyError::io(what, path, e);
    std::os::unix::fs::lchown(path, Some(attrs.uid), Some(attrs.gid)).map_err(io("chown"))?;
    if link {
        return Ok(());
    }
    // After chown, which clears setuid and setgid.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(attrs.mode))
        .map_err(io("chmod"))?;
    let wanted: std::collections::BTreeMap<&str, &[u8]> = attrs
        .xattrs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    if let Ok(names) = xattr::list(path) {
        for name in names {
            let name = name.to_string_lossy().into_owned();
            if !wanted.contains_key(name.as_str()) && !name.starts_with("trusted.overlay.") {
                let _ = xattr::remove(path, &name);
            }
        }
    }
    for (name, value) in wanted {
        if let Err(e) = xattr::set(path, name, value) {
            // A filesystem without xattrs (or without this namespace) cannot hold it.
            if e.raw_os_error() != Some(nix::libc::EOPNOTSUPP) {
                return Err(ApplyError::io("set xattrs of", path, e));
            }
        }
    }
    set_mtime(path, attrs)
}

fn set_mtime(path: &Path, attrs: &Attrs) -> Result<(), ApplyError> {
    let mtime = TimeSpec::new(attrs.mtime.0, attrs.mtime.1);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| ApplyError::io("set times of", path, e.into()))
}

fn remove_any(path: &Path) -> Result<bool, ApplyError> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(false),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path)
            .map(|_| true)
            .map_err(|e| ApplyError::io("remove", path, e)),
        Ok(_) => std::fs::remove_file(path)
            .map(|_| true)
            .map_err(|e| ApplyError::io("remove", path, e)),
    }
}

fn syncfs(dir: &Path) -> Result<(), ApplyError> {
    let f = std::fs::File::open(dir).map_err(|e| ApplyError::io("open", dir, e))?;
    nix::unistd::syncfs(f.as_fd()).map_err(|e| ApplyError::io("syncfs", dir, e.into()))
}

/// Phase one: every new file, link and node written in the staging folders, and durable.
fn stage(j: &Journal) -> Result<(), ApplyError> {
    for dir in &j.staging {
        std::fs::create_dir_all(dir).map_err(|e| ApplyError::io("create", dir, e))?;
        // Staged files carry their final owner and setuid bits before they are in place: no
        // one else may reach them meanwhile.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ApplyError::io("chmod", dir, e))?;
    }
    for op in &j.ops {
        match op {
            Op::File {
                source,
                staged,
                attrs,
                ..
            } => {
                let _ = std::fs::remove_file(staged);
                std::fs::copy(source, staged).map_err(|e| ApplyError::io("stage", staged, e))?;
                set_attrs(staged, attrs, false)?;
            }
            Op::Symlink {
                target,
                staged,
                attrs,
                ..
            } => {
                let _ = std::fs::remove_file(staged);
                std::os::unix::fs::symlink(target, staged)
                    .map_err(|e| ApplyError::io("stage", staged, e))?;
                set_attrs(staged, attrs, true)?;
            }
            Op::Node {
                mode,
                rdev,
                staged,
                attrs,
                ..
            } => {
                let _ = std::fs::remove_file(staged);
                nix::sys::stat::mknod(
                    staged.as_path(),
                    SFlag::from_bits_truncate(*mode & nix::libc::S_IFMT),
                    Mode::from_bits_truncate(*mode & 0o7777),
                    *rdev,
                )
                .map_err(|e| ApplyError::io("stage", staged, e.into()))?;
                set_attrs(staged, attrs, false)?;
            }
            _ => {}
        }
    }
    for dir in &j.staging {
        syncfs(dir)?;
    }
    Ok(())
}

/// A live path reached without following any symlink on the way: its folder, opened from `/`
/// with `RESOLVE_NO_SYMLINKS` (plans never cross one: the root is canonical and the layer
/// mirrors real paths), and the path through that open folder. A folder swapped for a symlink
/// between two operations makes the operation fail instead of writing elsewhere.
struct Beneath {
    _parent: std::os::fd::OwnedFd,
    path: PathBuf,
}

fn beneath(path: &Path) -> Result<Beneath, ApplyError> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::os::fd::AsRawFd;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(ApplyError::io(
            "resolve",
            path,
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = openat2(nix::fcntl::AT_FDCWD, parent, how)
        .map_err(|e| ApplyError::io("resolve without symlinks", parent, e.into()))?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name);
    Ok(Beneath { _parent: fd, path })
}

/// Phase two: the live tree changed in plan order, one atomic step at a time.
fn commit(j: &Journal) -> Result<Applied, ApplyError> {
    let mut applied = Applied::default();
    for op in &j.ops {
        match op {
            Op::Delete { path } => {
                remove_any(&beneath(path)?.path)?;
            }
            Op::Dir { path, attrs } => {
                let at = beneath(path)?;
                match std::fs::symlink_metadata(&at.path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&at.path)?;
                        std::fs::create_dir(&at.path)
                            .map_err(|e| ApplyError::io("create", path, e))?;
                    }
                    Err(_) => std::fs::create_dir(&at.path)
                        .map_err(|e| ApplyError::io("create", path, e))?,
                }
                set_dir_attrs(&at.path, path, attrs)?;
            }
            Op::File { path, staged, .. }
            | Op::Symlink { path, staged, .. }
            | Op::Node { path, staged, .. } => {
                let at = beneath(path)?;
                if std::fs::symlink_metadata(&at.path).is_ok_and(|m| m.is_dir()) {
                    remove_any(&at.path)?;
                }
                std::fs::rename(staged, &at.path)
                    .map_err(|e| ApplyError::io("rename into", path, e))?;
            }
            Op::HardLink { path, to, staged } => {
                let from = beneath(to)?;
                let _ = std::fs::remove_file(staged);
                std::fs::hard_link(&from.path, staged)
                    .map_err(|e| ApplyError::io("link", staged, e))?;
                let at = beneath(path)?;
                std::fs::rename(staged, &at.path)
                    .map_err(|e| ApplyError::io("rename into", path, e))?;
            }
        }
        applied.paths += 1;
    }
    // Folder times last: every rename above touched its folder's.
    for op in j.ops.iter().rev() {
        if let Op::Dir { path, attrs } = op {
            let dir = open_dir(&beneath(path)?.path, path)?;
            nix::sys::stat::futimens(
                dir.as_fd(),
                &TimeSpec::UTIME_OMIT,
                &TimeSpec::new(attrs.mtime.0, attrs.mtime.1),
            )
            .map_err(|e| ApplyError::io("set times of", path, e.into()))?;
        }
    }
    for dir in &j.staging {
        syncfs(dir)?;
    }
    Ok(applied)
}

/// Opens a folder without following a symlink in its last component.
fn open_dir(at: &Path, shown: &Path) -> Result<std::fs::File, ApplyError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(at)
        .map_err(|e| ApplyError::io("open", shown, e))
}

/// A live folder's attributes, through a descriptor: nothing swapped in after the check can
/// receive them.
fn set_dir_attrs(at: &Path, shown: &Path, attrs: &Attrs) -> Result<(), ApplyError> {
    use std::os::unix::fs::fchown;
    use xattr::FileExt;
    let dir = open_dir(at, shown)?;
    fchown(&dir, Some(attrs.uid), Some(attrs.gid))
        .map_err(|e| ApplyError::io("chown", shown, e))?;
    dir.set_permissions(std::fs::Permissions::from_mode(attrs.mode))
        .map_err(|e| ApplyError::io("chmod", shown, e))?;
    let wanted: std::collections::BTreeMap<&str, &[u8]> = attrs
        .xattrs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    if let Ok(names) = dir.list_xattr() {
        for name in names {
            let name = name.to_string_lossy().into_owned();
            if !wanted.contains_key(name.as_str()) && !name.starts_with("trusted.overlay.") {
                let _ = dir.remove_xattr(&name);
            }
        }
    }
    for (name, value) in wanted {
        if let Err(e) = dir.set_xattr(name, value) {
            if e.raw_os_error() != Some(nix::libc::EOPNOTSUPP) {
                return Err(ApplyError::io("set xattrs of", shown, e));
            }
        }
    }
    Ok(())
}

/// Stages and commits a journal's plan. Repeatable: a replay after a crash does it again.
pub fn execute(j: &Journal) -> Result<Applied, ApplyError> {
    stage(j)?;
    commit(j)
}

/// Removes the staging folders of a finished (or abandoned) merge.
pub fn clean_staging(j: &Journal) {
    for dir in &j.staging {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Merges a module's scratch layers onto the live tree: `layers` pairs each scratch layer with
/// the live folder beneath it. The plan is journaled first; on a staging failure (no space,
/// typically) nothing of the live tree was changed and the journal is dropped; on a commit
/// failure the journal is kept, so that the next command finishes the merge.
pub fn apply(
    state_dir: &Path,
    run: &str,
    module: &str,
    name: &str,
    layers: &[(PathBuf, PathBuf, PathBuf)],
    after: After,
) -> Result<Applied, ApplyError> {
    if let Some(journal) = journal::pending(state_dir) {
        return Err(ApplyError::Pending(journal));
    }
    let mut ops = Vec::new();
    let mut staging = Vec::new();
    for (upper, live, fs_root) in layers {
        let dir = fs_root.join(format!(".disco-staging-{name}"));
        ops.extend(plan::plan(upper, live, &dir)?);
        staging.push(dir);
    }
    if ops.is_empty() && after.deferred.is_empty() {
        return Ok(Applied::default());
    }
    // The scratch layers were written without syncs (`volatile`); the journal will point at
    // them, so they must be on disk before it exists.
    for (upper, _, _) in layers {
        syncfs(upper)?;
    }
    let mut journal = Journal {
        run: run.to_owned(),
        module: module.to_owned(),
        committed: ops.is_empty(),
        staging,
        ops,
        root: after.root,
        node: after.node,
        deferred: after.deferred,
    };
    let path = journal.write(state_dir, name)?;
    let mut applied = Applied::default();
    if !journal.committed {
        if let Err(e) = stage(&journal) {
            clean_staging(&journal);
            journal::remove(&path)?;
            return Err(ApplyError::Staging(Box::new(e)));
        }
        applied = commit(&journal).map_err(|e| ApplyError::Commit {
            journal: path.clone(),
            source: Box::new(e),
        })?;
        clean_staging(&journal);
    }
    if journal.deferred.is_empty() {
        journal::remove(&path)?;
    } else {
        // Merged: only the deferred commands remain, and the journal says so until they ran.
        journal.committed = true;
        journal.write(state_dir, name)?;
        applied.journal = Some(path);
    }
    Ok(applied)
}
