//! The seam a sandbox's mounts go through: [`Mounts`] is what mounting a root asks of the
//! kernel (mount(2), a folder to mount on, what a path is), [`Kernel`] does it, and a test's
//! [`Recorder`] writes the plan down instead, so that which filesystems a root gets, with which
//! options and in what order, is checked without root (as youki tests its container set-up).
//! The overlays, binds, empty filesystems and views of the live tree below are written once,
//! against the seam; the sandbox's own `/dev`, `/proc` and `/sys` (`pseudofs.rs`) and a dance
//! module's roots (`dance/sandbox/roots.rs`) are built from them.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::enter::{prep, sys};
use super::shims::ShimMode;
use super::{LayerInfo, SandboxError, ShimConfig};

/// What mounting a root asks of the kernel (and of the filesystem it mounts on).
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
    /// Whether anything is at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// An empty file at `path`, to bind a file on.
    fn create_file(&mut self, path: &Path) -> std::io::Result<()>;
    /// A symbolic link at `path` to `target`.
    fn symlink(&mut self, target: &Path, path: &Path) -> std::io::Result<()>;
    /// Makes at `target` a character device like `source` (type, number, mode); false when
    /// it cannot (no `CAP_MKNOD`, a `nodev` filesystem, no such device).
    fn copy_node(&mut self, source: &Path, target: &Path) -> bool;
    /// Writes the shims for `config` into `dir`, in `mode` (see [`super::shims::install`]).
    fn install_shims(
        &mut self,
        config: &ShimConfig,
        dir: &Path,
        mode: ShimMode,
    ) -> std::io::Result<()>;
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

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn create_file(&mut self, path: &Path) -> std::io::Result<()> {
        std::fs::File::create(path).map(drop)
    }

    fn symlink(&mut self, target: &Path, path: &Path) -> std::io::Result<()> {
        std::os::unix::fs::symlink(target, path)
    }

    fn copy_node(&mut self, source: &Path, target: &Path) -> bool {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let Ok(meta) = std::fs::metadata(source) else {
            return false;
        };
        if !meta.file_type().is_char_device() {
            return false;
        }
        let mode = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777);
        nix::sys::stat::mknod(target, nix::sys::stat::SFlag::S_IFCHR, mode, meta.rdev()).is_ok()
            // The umask must not narrow it: /dev/null is 666.
            && nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                target,
                mode,
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .is_ok()
    }

    fn install_shims(
        &mut self,
        config: &ShimConfig,
        dir: &Path,
        mode: ShimMode,
    ) -> std::io::Result<()> {
        super::shims::install(config, dir, mode)
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

/// An empty, read-only tmpfs of 4 KiB at `target`: what hides a folder (the state directory)
/// and the empty top of a read-only view (a filesystem of its own, nested in nothing).
pub fn empty_tmpfs(m: &mut dyn Mounts, target: &Path) -> Result<(), Errno> {
    m.mount(
        Some(Path::new("tmpfs")),
        target,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=755"),
    )
}

/// Whether the live folder beneath `layer` must be stacked as a read-only view of it rather
/// than as itself: when a layer above it lies inside it on the same filesystem. overlayfs
/// refuses lower layers nested in one another ("overlapping lowerdir path"), and a layer on
/// another filesystem (a tmpfs run folder) is nested in nothing it can see. The one decision
/// for every sandbox: `disco shell`'s and each root and diff of a dance.
pub fn needs_live_view(m: &dyn Mounts, layer: &LayerInfo) -> bool {
    let live = m.device(&layer.lower);
    layer
        .lowers_above
        .iter()
        .any(|l| l.starts_with(&layer.lower) && m.device(l) == live)
}

/// The live folder beneath `layer` as a lower layer: itself, or, when
/// [`needs_live_view`], a read-only view of it at `view` (an overlay of it and `empty`, an
/// [`empty_tmpfs`]), a superblock of its own. Mounted afresh each time: a live dance changes
/// the tree.
pub fn live_base(
    m: &mut dyn Mounts,
    layer: &LayerInfo,
    empty: &Path,
    view: &Path,
) -> Result<PathBuf, SandboxError> {
    if !needs_live_view(m, layer) {
        return Ok(layer.lower.clone());
    }
    mkdir(m, view)?;
    overlay_read_only(m, &[&layer.lower, empty], view)
        .map_err(sys("mount a read-only view of", layer.lower.display()))?;
    Ok(view.to_owned())
}

/// A test's kernel: writes each call down, one line each, and answers what a path is from
/// what it was told.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Recorder {
    /// Every call, in order: `mount SOURCE TARGET TYPE FLAGS DATA`, `mkdir PATH`, `file
    /// PATH`, `symlink PATH -> TARGET`, `node PATH like SOURCE`, `shims DIR MODE`.
    pub plan: Vec<String>,
    /// Whether device nodes can be made (else the host's are bound).
    pub nodes: bool,
    /// Files that exist (besides [`Recorder::dirs`]).
    pub files: Vec<PathBuf>,
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

    fn exists(&self, path: &Path) -> bool {
        self.is_dir(path) || self.files.iter().any(|f| f == path)
    }

    fn create_file(&mut self, path: &Path) -> std::io::Result<()> {
        self.plan.push(format!("file {}", path.display()));
        Ok(())
    }

    fn symlink(&mut self, target: &Path, path: &Path) -> std::io::Result<()> {
        self.plan.push(format!(
            "symlink {} -> {}",
            path.display(),
            target.display()
        ));
        Ok(())
    }

    fn copy_node(&mut self, source: &Path, target: &Path) -> bool {
        if self.nodes {
            self.plan.push(format!(
                "node {} like {}",
                target.display(),
                source.display()
            ));
        }
        self.nodes
    }

    fn install_shims(
        &mut self,
        _config: &ShimConfig,
        dir: &Path,
        mode: ShimMode,
    ) -> std::io::Result<()> {
        self.plan.push(format!("shims {} {mode:?}", dir.display()));
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `/` (device 1) with a kept scratch layer `kept` above it and the disco layer (on a tmpfs,
    /// device 2).
    fn layer(kept: &str) -> LayerInfo {
        LayerInfo {
            mount_point: "/".into(),
            lower: "/".into(),
            upper: "/run/d/m2/fs0/upper".into(),
            work: "/run/d/m2/fs0/work".into(),
            lowers_above: vec![kept.into(), "/tmpfs/disco".into()],
        }
    }

    fn kernel() -> Recorder {
        Recorder {
            devices: vec![("/".into(), 1), ("/tmpfs".into(), 2)],
            ..Recorder::default()
        }
    }

    #[test]
    fn the_live_tree_is_a_view_only_under_layers_nested_in_it_on_its_own_filesystem() {
        let m = kernel();
        // Nested in `/` on its filesystem: overlayfs would refuse it beside `/`.
        assert!(needs_live_view(
            &m,
            &layer("/var/lib/disco/runs/1/m1/upper")
        ));
        // Under `/` by path, but on a filesystem of its own: nested in nothing.
        assert!(!needs_live_view(&m, &layer("/tmpfs/m1/upper")));
        // A layer outside a live folder other than `/` is not nested in it.
        let mut var = layer("/var/lib/disco/runs/1/m1/upper");
        var.lower = "/srv".into();
        assert!(!needs_live_view(&m, &var));
    }

    #[test]
    fn a_view_of_the_live_tree_is_a_read_only_overlay_with_an_empty_top() {
        let mut m = kernel();
        let empty = Path::new("/run/d/empty");
        let view = Path::new("/run/d/views/live0");
        let nested = layer("/var/lib/disco/runs/1/m1/upper");
        assert_eq!(live_base(&mut m, &nested, empty, view).unwrap(), view);
        assert_eq!(
            m.plan,
            [
                "mkdir /run/d/views/live0",
                "mount overlay /run/d/views/live0 overlay MS_RDONLY | MS_NODEV lowerdir=/:/run/d/empty,redirect_dir=off,metacopy=off,index=off,xino=off",
            ]
        );
        // Without a nested layer, the live folder itself, and nothing mounted.
        let mut m = kernel();
        let apart = layer("/tmpfs/m1/upper");
        assert_eq!(
            live_base(&mut m, &apart, empty, view).unwrap(),
            Path::new("/")
        );
        assert!(m.plan.is_empty());
    }

    #[test]
    fn an_empty_tmpfs_is_read_only_and_opens_nothing() {
        let mut m = kernel();
        empty_tmpfs(&mut m, Path::new("/x")).unwrap();
        assert_eq!(
            m.plan,
            ["mount tmpfs /x tmpfs MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC size=4k,mode=755"]
        );
    }
}
