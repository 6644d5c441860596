//! The staging folder of one filesystem: where a merge writes every new file, link and node
//! before renaming it into place (same filesystem, so the rename is atomic).
//!
//! The folder sits at the top of the filesystem, which may be world-writable (`/tmp`), so it is
//! made so that no one else can choose, predict, enter or replace it: a random name (nothing
//! visible derives it), `mkdirat` beneath a descriptor of the top, mode 0700, and a check
//! through its own descriptor that it is a folder owned by us on the top's device. Everything
//! staged is written relative to that descriptor, never by path.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fchmodat, fstat, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, linkat, symlinkat, Gid, Uid};

use super::{at, ApplyError, Attrs};

/// How every staging folder's name starts.
pub const PREFIX: &str = ".disco-staging-";

/// An open, checked staging folder.
#[derive(Debug)]
pub struct Staging {
    fd: OwnedFd,
    /// Its name at the top of its filesystem.
    pub name: String,
    /// Its path, for messages only.
    pub shown: PathBuf,
}

fn err<'a>(what: &'static str, shown: &'a Path) -> impl FnOnce(Errno) -> ApplyError + 'a {
    move |e| ApplyError::io(what, shown, e.into())
}

/// A staging folder's name that no one can predict: nothing visible derives it.
pub fn new_name() -> std::io::Result<String> {
    new_name_with(PREFIX)
}

/// A name that starts with `prefix` and that no one can predict.
pub fn new_name_with(prefix: &str) -> std::io::Result<String> {
    let random = crate::sys::random_bytes(16)?;
    Ok(std::iter::once(prefix.to_owned())
        .chain(random.iter().map(|b| format!("{b:02x}")))
        .collect())
}

/// The name staged entry `n` has in its folder.
pub fn entry_name(n: u32) -> OsString {
    OsString::from(n.to_string())
}

impl Staging {
    /// Makes the staging folder `name` (from [`new_name`]) at the top `top` (shown as
    /// `top_shown`) of a filesystem, and checks it through its own descriptor.
    pub fn create(
        top: BorrowedFd<'_>,
        top_shown: &Path,
        name: &str,
    ) -> Result<Staging, ApplyError> {
        let shown = top_shown.join(name);
        mkdirat(top, name, Mode::from_bits_truncate(0o700)).map_err(err("create", &shown))?;
        let staging = Staging::open_unchecked(top, name, top_shown)?;
        // The mode asked for passed through the umask; the check wants exactly 0700.
        fchmod(staging.fd(), Mode::from_bits_truncate(0o700)).map_err(err("chmod", &shown))?;
        staging.check(top)?;
        Ok(staging)
    }

    /// Opens an existing staging folder `name` (a replay's) and checks it.
    pub fn open(top: BorrowedFd<'_>, name: &str, top_shown: &Path) -> Result<Staging, ApplyError> {
        let staging = Staging::open_unchecked(top, name, top_shown)?;
        staging.check(top)?;
        Ok(staging)
    }

    fn open_unchecked(
        top: BorrowedFd<'_>,
        name: &str,
        top_shown: &Path,
    ) -> Result<Staging, ApplyError> {
        let shown = top_shown.join(name);
        let fd = at::open_dir(top, OsStr::new(name), &shown)?;
        Ok(Staging {
            fd,
            name: name.to_owned(),
            shown,
        })
    }

    /// A folder owned by us, 0700, on the top's device: anything else was not made by us.
    fn check(&self, top: BorrowedFd<'_>) -> Result<(), ApplyError> {
        let st = fstat(self.fd.as_fd()).map_err(err("stat", &self.shown))?;
        let top_dev = fstat(top).map_err(err("stat", &self.shown))?.st_dev;
        let ours = at::is_dir(&st)
            && st.st_uid == nix::unistd::geteuid().as_raw()
            && st.st_mode & 0o7777 == 0o700
            && st.st_dev == top_dev;
        if !ours {
            return Err(ApplyError::NotOurs {
                path: self.shown.clone(),
                found: describe(&st),
            });
        }
        Ok(())
    }

    /// Its descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn shown_entry(&self, n: u32) -> PathBuf {
        self.shown.join(n.to_string())
    }

    fn clear(&self, n: u32) -> Result<(), ApplyError> {
        at::remove(self.fd(), entry_name(n).as_os_str(), &self.shown_entry(n)).map(|_| ())
    }

    /// The inode of staged entry `n`, if it is there.
    pub fn inode(&self, n: u32) -> Result<Option<u64>, ApplyError> {
        Ok(
            at::stat(self.fd(), entry_name(n).as_os_str(), &self.shown_entry(n))?
                .map(|st| st.st_ino),
        )
    }

    /// Stages a copy of the file `source` as entry `n`, with its attributes; returns its inode.
    pub fn file(&self, n: u32, source: &Path, attrs: &Attrs) -> Result<u64, ApplyError> {
        let shown = self.shown_entry(n);
        self.clear(n)?;
        let mut from = std::fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut from, nix::libc::O_NOFOLLOW);
        let mut from = from
            .read(true)
            .open(source)
            .map_err(|e| ApplyError::io("read", source, e))?;
        let fd = openat(
            self.fd(),
            entry_name(n).as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(err("stage", &shown))?;
        let mut to = std::fs::File::from(fd);
        std::io::copy(&mut from, &mut to).map_err(|e| ApplyError::io("stage", &shown, e))?;
        to.flush().map_err(|e| ApplyError::io("stage", &shown, e))?;
        set_attrs_fd(&to, attrs, &shown)?;
        let st = fstat(to.as_fd()).map_err(err("stat", &shown))?;
        Ok(st.st_ino)
    }

    /// Stages a symbolic link to `target` as entry `n`; returns its inode.
    pub fn symlink(&self, n: u32, target: &Path, attrs: &Attrs) -> Result<u64, ApplyError> {
        let shown = self.shown_entry(n);
        self.clear(n)?;
        let name = entry_name(n);
        symlinkat(target, self.fd(), name.as_os_str()).map_err(err("stage", &shown))?;
        self.chown(&name, attrs, &shown)?;
        self.mtime(&name, attrs, &shown)?;
        Ok(self.inode(n)?.unwrap_or(0))
    }

    /// Stages a device node or fifo as entry `n`; returns its inode.
    pub fn node(&self, n: u32, mode: u32, rdev: u64, attrs: &Attrs) -> Result<u64, ApplyError> {
        let shown = self.shown_entry(n);
        self.clear(n)?;
        let name = entry_name(n);
        mknodat(
            self.fd(),
            name.as_os_str(),
            SFlag::from_bits_truncate(mode & nix::libc::S_IFMT),
            Mode::from_bits_truncate(0o600),
            rdev,
        )
        .map_err(err("stage", &shown))?;
        self.chown(&name, attrs, &shown)?;
        // No one else can enter the folder: the name is ours until it is renamed.
        fchmodat(
            self.fd(),
            name.as_os_str(),
            Mode::from_bits_truncate(attrs.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(err("chmod", &shown))?;
        let through = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd())).join(&name);
        set_xattrs(&through, attrs, &shown)?;
        self.mtime(&name, attrs, &shown)?;
        Ok(self.inode(n)?.unwrap_or(0))
    }

    /// Stages entry `n` as a second name of entry `to`; returns their inode.
    pub fn hard_link(&self, n: u32, to: u32) -> Result<u64, ApplyError> {
        let shown = self.shown_entry(n);
        self.clear(n)?;
        linkat(
            self.fd(),
            entry_name(to).as_os_str(),
            self.fd(),
            entry_name(n).as_os_str(),
            AtFlags::empty(),
        )
        .map_err(err("link", &shown))?;
        Ok(self.inode(n)?.unwrap_or(0))
    }

    /// Gives staged entry `name` (never followed: it may be a link) its owner.
    fn chown(&self, name: &OsStr, attrs: &Attrs, shown: &Path) -> Result<(), ApplyError> {
        fchownat(
            self.fd(),
            name,
            Some(Uid::from_raw(attrs.uid)),
            Some(Gid::from_raw(attrs.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(err("chown", shown))
    }

    fn mtime(&self, name: &OsStr, attrs: &Attrs, shown: &Path) -> Result<(), ApplyError> {
        nix::sys::stat::utimensat(
            self.fd(),
            name,
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::new(attrs.mtime.0, attrs.mtime.1),
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(err("set times of", shown))
    }

    /// Makes everything staged durable (one `syncfs` for the whole filesystem).
    pub fn sync(&self) -> Result<(), ApplyError> {
        nix::unistd::syncfs(self.fd()).map_err(err("syncfs", &self.shown))
    }

    /// Removes the folder and what is left in it.
    pub fn remove(self, top: BorrowedFd<'_>) -> Result<(), ApplyError> {
        at::remove(top, OsStr::new(&self.name), &self.shown).map(|_| ())
    }
}

/// Entries at the top of a filesystem that look like staging folders but are not among
/// `ours`: planted by someone, or left by a merge that was set aside. They are never used;
/// the caller reports them.
pub fn strangers(top: BorrowedFd<'_>, top_shown: &Path, ours: &[String]) -> Vec<String> {
    let Ok(fd) = top.try_clone_to_owned() else {
        return Vec::new();
    };
    let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.iter().flatten() {
        let name = entry.file_name().to_bytes();
        if !name.starts_with(PREFIX.as_bytes()) {
            continue;
        }
        let name = OsStr::from_bytes(name);
        if ours.iter().any(|o| OsStr::new(o) == name) {
            continue;
        }
        let shown = top_shown.join(name);
        let what = at::stat(top, name, &shown)
            .ok()
            .flatten()
            .map_or_else(|| "gone".to_owned(), |st| describe(&st));
        found.push(format!(
            "{} ({what}) is not a staging folder of this merge: left alone, never used",
            shown.display()
        ));
    }
    found.sort();
    found
}

fn describe(st: &nix::sys::stat::FileStat) -> String {
    let kind = match SFlag::from_bits_truncate(st.st_mode & nix::libc::S_IFMT) {
        SFlag::S_IFDIR => "folder",
        SFlag::S_IFLNK => "symbolic link",
        SFlag::S_IFREG => "file",
        _ => "special file",
    };
    format!(
        "a {kind} owned by uid {}, mode {:o}",
        st.st_uid,
        st.st_mode & 0o7777
    )
}

/// A staged file's owner, mode, extended attributes and times, through its descriptor.
fn set_attrs_fd(file: &std::fs::File, attrs: &Attrs, shown: &Path) -> Result<(), ApplyError> {
    owner_mode_xattrs(file, attrs, shown)?;
    nix::sys::stat::futimens(
        file.as_fd(),
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(attrs.mtime.0, attrs.mtime.1),
    )
    .map_err(err("set times of", shown))
}

/// Owner, then mode (chown clears setuid and setgid), then extended attributes (chown also
/// clears a file capability, and chmod rewrites an ACL's mask), all through `file`.
fn owner_mode_xattrs(file: &std::fs::File, attrs: &Attrs, shown: &Path) -> Result<(), ApplyError> {
    use xattr::FileExt;
    std::os::unix::fs::fchown(file, Some(attrs.uid), Some(attrs.gid))
        .map_err(|e| ApplyError::io("chown", shown, e))?;
    fchmod(file.as_fd(), Mode::from_bits_truncate(attrs.mode)).map_err(err("chmod", shown))?;
    let wanted: std::collections::BTreeMap<&str, &[u8]> = attrs
        .xattrs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    if let Ok(names) = file.list_xattr() {
        for name in names {
            let name = name.to_string_lossy().into_owned();
            if !wanted.contains_key(name.as_str()) && !name.starts_with("trusted.overlay.") {
                let _ = file.remove_xattr(&name);
            }
        }
    }
    for (name, value) in wanted {
        if let Err(e) = file.set_xattr(name, value) {
            // A filesystem without xattrs (or without this namespace) cannot hold it.
            if e.raw_os_error() != Some(nix::libc::EOPNOTSUPP) {
                return Err(ApplyError::io("set xattrs of", shown, e));
            }
        }
    }
    Ok(())
}

/// Extended attributes of a node, through a path that goes through the staging descriptor.
fn set_xattrs(through: &Path, attrs: &Attrs, shown: &Path) -> Result<(), ApplyError> {
    for (name, value) in &attrs.xattrs {
        if let Err(e) = xattr::set(through, name, value) {
            if e.raw_os_error() != Some(nix::libc::EOPNOTSUPP) {
                return Err(ApplyError::io("set xattrs of", shown, e));
            }
        }
    }
    Ok(())
}

/// A live folder's attributes, through its descriptor: nothing swapped in after the check can
/// receive them.
pub fn set_dir_attrs(dir: &OwnedFd, attrs: &Attrs, shown: &Path) -> Result<(), ApplyError> {
    let file = std::fs::File::from(
        dir.try_clone()
            .map_err(|e| ApplyError::io("open", shown, e))?,
    );
    owner_mode_xattrs(&file, attrs, shown)
}
