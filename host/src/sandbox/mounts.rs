//! The seam a sandbox's mounts go through: [`Mounts`] is what mounting a root asks of the
//! kernel (mount(2), a folder to mount on, what a path is), [`Kernel`] does it, and a test's
//! [`Recorder`] writes the plan down instead, so that which filesystems a root gets, with which
//! options and in what order, is checked without root (as youki tests its container set-up).
//! The overlays and binds below are written once, against the seam.

use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::enter::{prep, sys};
use super::SandboxError;

/// What mounting a root asks of the kernel.
pub trait Mounts {
    /// mount(2).
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    /// A folder to mount on, with its parents.
    fn mkdir_all(&mut self, path: &Path) -> std::io::Result<()>;
    /// Whether `path` is a folder.
    fn is_dir(&self, path: &Path) -> bool;
    /// Whether the filesystem holding `path` is mounted read-only.
    fn read_only(&self, path: &Path) -> bool;
    /// The device `path` is on.
    fn device(&self, path: &Path) -> Option<u64>;
    /// The `lowerdir=` value for `lowers`, topmost first (see [`crate::sys::overlay_lowerdir`]:
    /// it may move the process into the folder that holds them).
    fn lowerdir(&mut self, lowers: &[&Path]) -> Result<String, Errno>;
    /// Forgets that a `volatile` overlay used `work` (overlayfs refuses it until then).
    fn clear_volatile(&mut self, work: &Path);
}

/// The real kernel.
#[derive(Debug, Default)]
pub struct Kernel;

impl Mounts for Kernel {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn mkdir_all(&mut self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn read_only(&self, path: &Path) -> bool {
        nix::sys::statvfs::statvfs(path)
            .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
    }

    fn device(&self, path: &Path) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).map(|m| m.dev()).ok()
    }

    fn lowerdir(&mut self, lowers: &[&Path]) -> Result<String, Errno> {
        crate::sys::overlay_lowerdir(lowers)
    }

    fn clear_volatile(&mut self, work: &Path) {
        let _ = std::fs::remove_dir_all(work.join("work/incompat/volatile"));
    }
}

/// The options every overlay of disco gets: no redirects, no metadata-only copies, no index
/// (a layer's entries are plain files a diff and a merge read as they are), no xino.
const OVERLAY_OPTIONS: &str = "redirect_dir=off,metacopy=off,index=off,xino=off";

/// A writable overlay of `upper` on `lowers` (topmost first) at `target`, `nodev`; `volatile`
/// (no syncs while scripts write: a merge makes what it needs durable itself) where the
/// kernel knows it (5.10).
pub fn overlay(
    m: &mut dyn Mounts,
    target: &Path,
    lowers: &[&Path],
    (upper, work): (&Path, &Path),
    volatile: bool,
) -> Result<(), SandboxError> {
    // overlayfs marks a volatile layer's work folder, and refuses it until the mark is
    // removed; the sandbox that used it last has ended, so it goes.
    if volatile {
        m.clear_volatile(work);
    }
    let lowerdir = m
        .lowerdir(lowers)
        .map_err(sys("enter the layers' folder for", target.display()))?;
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={},{OVERLAY_OPTIONS}",
        crate::sys::overlay_escape(upper),
        crate::sys::overlay_escape(work)
    );
    let overlay = "overlay";
    let mut mount = |data: &str| {
        m.mount(
            Some(Path::new(overlay)),
            target,
            Some(overlay),
            MsFlags::MS_NODEV,
            Some(data),
        )
    };
    if !volatile {
        return mount(&data).map_err(sys("mount overlay", format!("on {}", target.display())));
    }
    mount(&format!("{data},volatile"))
        .or_else(|e| match e {
            // Kernels before 5.10 know no `volatile`: the same layer, with syncs.
            Errno::EINVAL => mount(&data),
            e => Err(e),
        })
        .map_err(sys(
            "mount overlay",
            format!(
                "on {} (lower {})",
                target.display(),
                lowers.last().map_or(Path::new("?"), |p| p).display()
            ),
        ))
}

/// A read-only overlay of `lowers` (topmost first) at `target`, `nodev`: the files as they
/// are, with no way to write, and unix sockets on it that lead nowhere.
pub fn overlay_read_only(m: &mut dyn Mounts, lowers: &[&Path], target: &Path) -> Result<(), Errno> {
    let data = format!("lowerdir={},{OVERLAY_OPTIONS}", m.lowerdir(lowers)?);
    m.mount(
        Some(Path::new("overlay")),
        target,
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        Some(&data),
    )
}

/// Binds `source` at `target` (with what is mounted below it, when `recursive`).
pub fn bind(
    m: &mut dyn Mounts,
    source: &Path,
    target: &Path,
    recursive: bool,
) -> Result<(), SandboxError> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    m.mount(Some(source), target, None, flags, None)
        .map_err(sys("bind", target.display()))
}

/// Binds `source` at `target` read-only, `nosuid`, and `nodev` unless it is a `device` itself:
/// a device node that came with what is bound (a module's folder, a read-only filesystem)
/// must not open, read-only or not.
pub fn bind_read_only(
    m: &mut dyn Mounts,
    source: &Path,
    target: &Path,
    device: bool,
) -> Result<(), SandboxError> {
    bind(m, source, target, false)?;
    let mut flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
    if !device {
        flags |= MsFlags::MS_NODEV;
    }
    m.mount(None, target, None, flags, None)
        .map_err(sys("remount read-only", target.display()))
}

/// A folder to mount on, with its parents.
pub fn mkdir(m: &mut dyn Mounts, path: &Path) -> Result<(), SandboxError> {
    m.mkdir_all(path).map_err(prep(path))
}

/// A test's kernel: writes each call down, one line each, and answers what a path is from
/// what it was told.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Recorder {
    /// Every call, in order: `mount SOURCE TARGET TYPE FLAGS DATA` or `mkdir PATH`.
    pub plan: Vec<String>,
    /// Paths on read-only filesystems.
    pub read_only: Vec<PathBuf>,
    /// Folders that exist.
    pub dirs: Vec<PathBuf>,
    /// The device of each path that has one (prefixes: the longest wins).
    pub devices: Vec<(PathBuf, u64)>,
}

#[cfg(test)]
impl Mounts for Recorder {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        let source = source.map_or("-".into(), |s| s.display().to_string());
        // `MS_BIND | MS_REC`, without the type's name around it.
        let flags = format!("{flags:?}");
        let flags = flags
            .strip_prefix("MsFlags(")
            .and_then(|f| f.strip_suffix(')'))
            .unwrap_or(&flags);
        self.plan.push(format!(
            "mount {source} {} {} {flags} {}",
            target.display(),
            fstype.unwrap_or("-"),
            data.unwrap_or("-")
        ));
        Ok(())
    }

    fn mkdir_all(&mut self, path: &Path) -> std::io::Result<()> {
        self.plan.push(format!("mkdir {}", path.display()));
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.dirs.iter().any(|d| d == path)
    }

    fn read_only(&self, path: &Path) -> bool {
        self.read_only.iter().any(|p| path.starts_with(p))
    }

    fn device(&self, path: &Path) -> Option<u64> {
        self.devices
            .iter()
            .filter(|(p, _)| path.starts_with(p))
            .max_by_key(|(p, _)| p.components().count())
            .map(|(_, dev)| *dev)
    }

    fn lowerdir(&mut self, lowers: &[&Path]) -> Result<String, Errno> {
        let dirs: Vec<String> = lowers
            .iter()
            .map(|p| crate::sys::overlay_escape(p))
            .collect();
        Ok(dirs.join(":"))
    }

    fn clear_volatile(&mut self, work: &Path) {
        self.plan.push(format!("clear volatile {}", work.display()));
    }
}
