//! Which filesystems a sandbox must cover: every real filesystem mounted under the target root.
//!
//! An overlay's lower layer is one filesystem; it does not show the mounts beneath it. So each
//! real filesystem under the root (a separate `/var`, `/home`, `/boot`...) gets an overlay of
//! its own, or writes to it would reach the live system.

use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`, the fields the sandbox needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type (`ext4`, `tmpfs`, `proc`...).
    pub fstype: String,
    /// Per-mount options (`rw,nosuid,...`).
    pub options: String,
}

/// Kernel filesystems that hold no files of the system: the sandbox mounts its own `/proc`,
/// `/sys` and `/dev`, and leaves the rest out.
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "pstore",
    "bpf",
    "mqueue",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "autofs",
    "efivarfs",
    "rpc_pipefs",
    "nsfs",
    "selinuxfs",
];

/// Trees the sandbox replaces with its own, so nothing mounted beneath them is overlaid.
const REPLACED: &[&str] = &["proc", "sys", "dev"];

/// Undoes mountinfo's octal escapes (`\040` for a space, `\012` for a newline...).
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                // Three octal digits are at most 0o777; mountinfo only escapes bytes below 0o200.
                let v = d.iter().fold(0u16, |acc, b| acc * 8 + u16::from(b - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Parses the text of `/proc/self/mountinfo`; lines it cannot read are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            Some(Mount {
                mount_point: unescape(left.get(4)?),
                options: (*left.get(5)?).to_owned(),
                fstype: right.next()?.to_owned(),
            })
        })
        .collect()
}

/// The filesystems to overlay under `root`, as paths relative to it (`""` is the root itself),
/// shallowest first. The last mount on a mount point is the visible one; `skip` (the state
/// directory) and anything under `/proc`, `/sys` and `/dev` of the root are left out.
pub fn filesystems_under(mounts: &[Mount], root: &Path, skip: &[PathBuf]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for m in mounts {
        let Ok(rel) = m.mount_point.strip_prefix(root) else {
            continue;
        };
        let replaced = rel
            .components()
            .next()
            .is_some_and(|c| REPLACED.iter().any(|r| c.as_os_str() == *r));
        if PSEUDO.contains(&m.fstype.as_str())
            || replaced
            || skip.iter().any(|s| m.mount_point.starts_with(s))
        {
            // A pseudo filesystem mounted over an earlier real one hides it: drop that too.
            found.retain(|f| f != rel);
            continue;
        }
        if !found.iter().any(|f| f == rel) {
            found.push(rel.to_path_buf());
        }
    }
    if !found.iter().any(|f| f.as_os_str().is_empty()) {
        // The root itself is always overlaid, even when it is a plain directory.
        found.push(PathBuf::new());
    }
    found.sort_by_key(|p| p.components().count());
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
28 27 0:25 / /mnt/with\\040space ro,nosuid - tmpfs tmpfs ro
29 27 8:1 / /var rw - xfs /dev/sda1 rw
30 29 8:2 / /var/lib/disco rw - ext4 /dev/sda2 rw
31 27 0:40 / /tmp rw - tmpfs tmpfs rw
";

    #[test]
    fn reads_mountinfo_with_escapes() {
        let mounts = parse(SAMPLE);
        assert_eq!(mounts.len(), 8);
        assert_eq!(mounts[4].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(mounts[4].options, "ro,nosuid");
        assert_eq!(mounts[5].fstype, "xfs");
    }

    #[test]
    fn chooses_real_filesystems_shallowest_first() {
        let fs = filesystems_under(
            &parse(SAMPLE),
            Path::new("/"),
            &[PathBuf::from("/var/lib/disco")],
        );
        let fs: Vec<&str> = fs.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(fs, ["", "var", "tmp", "mnt/with space"]);
    }

    #[test]
    fn a_tree_root_gets_an_overlay_of_its_own() {
        let fs = filesystems_under(&parse(SAMPLE), Path::new("/srv/root"), &[]);
        assert_eq!(fs, [PathBuf::new()]);
        let fs = filesystems_under(&parse(SAMPLE), Path::new("/var"), &[]);
        assert_eq!(fs, [PathBuf::new(), PathBuf::from("lib/disco")]);
    }
}
