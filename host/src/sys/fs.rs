//! Files and filesystems: where a file lives (device, inode, mount), a filesystem's ID, private
//! folders, random names.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use nix::libc;

/// Where a file or folder lives, as the kernel names it: its device, inode and the ID of the
/// mount it was reached through (statx(2), `STATX_MNT_ID`, zero on kernels before 5.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// The mount's ID, as in `/proc/self/mountinfo`.
    pub mnt_id: u64,
}

/// The [`Placement`] of what `fd` refers to (any kind of descriptor, `O_PATH` included).
pub fn placement(fd: BorrowedFd<'_>) -> io::Result<Placement> {
    // SAFETY: statx writes one `struct statx` into the zeroed buffer we own; the empty path
    // with AT_EMPTY_PATH makes it describe `fd` itself.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_INO | libc::STATX_MNT_ID,
            &mut st,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    let mnt_id = if st.stx_mask & libc::STATX_MNT_ID != 0 {
        st.stx_mnt_id
    } else {
        0
    };
    Ok(Placement {
        dev: nix::sys::stat::makedev(u64::from(st.stx_dev_major), u64::from(st.stx_dev_minor)),
        ino: st.stx_ino,
        mnt_id,
    })
}

/// The filesystem's ID (statfs(2) `f_fsid`): derived from the filesystem's UUID on disk
/// filesystems, so it names the same filesystem after a reboot, when device numbers and mount
/// IDs may have changed.
pub fn fsid(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let st = nix::sys::statfs::fstatfs(fd)?;
    // SAFETY: fsid_t is two ints; reading them as one u64 copies plain bytes.
    let raw: [i32; 2] = unsafe { std::mem::transmute(st.filesystem_id()) };
    Ok((u64::from(raw[0] as u32) << 32) | u64::from(raw[1] as u32))
}

/// `len` random bytes from the kernel (getrandom(2)), for names no one can predict.
pub fn random_bytes(len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        // SAFETY: getrandom writes at most `len - filled` bytes into our buffer from `filled`.
        let rc = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), len - filled, 0) };
        if rc == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += rc as usize;
    }
    Ok(buf)
}

/// Makes the folder `path` (and its missing parents) and leaves it 0700: state that names
/// every path a dance changes, and holds parameters, is root's alone.
pub fn private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

/// Whether `path` is on a cgroup2 filesystem (statfs(2), `CGROUP2_SUPER_MAGIC`).
pub fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}
