//! Reading one side of a change from disk: `lstat`, extended attributes, owner and group names,
//! the md5 of the contents (streamed), and the contents themselves when they are small enough to
//! diff.

use std::collections::{BTreeMap, HashMap};
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use md5::{Digest, Md5};

use super::entry::{FileType, Meta};
use super::error::DiffError;

/// The xattr that holds a file's SELinux context, reported on its own as `selinux=[…]`.
const SELINUX_XATTR: &str = "security.selinux";

/// overlayfs' own bookkeeping (opaque markers, origins...): never part of what a script changed.
/// `user.overlay.` is the same namespace on `userxattr` (unprivileged) mounts.
const OVERLAY_XATTR_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];

/// How much of a large file is hashed per `read`: big enough that syscalls are noise next to md5.
const HASH_CHUNK: usize = 256 * 1024;

/// From this size on, a file is hashed by its data ([`data_md5`]), so that a sparse file costs
/// what its data costs, not its size (a 1 TB sparse file would take an hour of md5 of zeros).
pub const DATA_HASH_FROM: u64 = 64 * 1024 * 1024;

/// The blocks [`data_md5`] hashes: fixed, aligned, so that where the holes are does not change
/// the hash.
const DATA_BLOCK: u64 = 64 * 1024;

/// uid and gid to name maps of one root, read once per diff rather than once per file (there may
/// be tens of thousands of files, and `getpwuid` would read the host's database, not the target's).
#[derive(Debug, Default)]
pub(crate) struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    /// Reads `root/etc/passwd` and `root/etc/group`. A missing or unreadable file leaves its map
    /// empty, so ids show as numbers: a root without those files is legal (a minimal image).
    pub(crate) fn load(root: &Path) -> Names {
        Names {
            users: parse_id_file(&root.join("etc/passwd")),
            groups: parse_id_file(&root.join("etc/group")),
        }
    }

    fn user(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    fn group(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

/// Parses `name:x:id:...` lines; the first name given to an id wins, as with `getpwuid`.
fn parse_id_file(path: &Path) -> HashMap<u32, String> {
    let mut map = HashMap::new();
    let Ok(text) = std::fs::read(path) else {
        return map;
    };
    for line in String::from_utf8_lossy(&text).lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(id) = id.trim().parse::<u32>() {
            map.entry(id).or_insert_with(|| name.to_string());
        }
    }
    map
}

/// One side of a change as read from disk: its attributes, and its contents if it is a regular
/// file no larger than the content limit.
#[derive(Debug)]
pub(crate) struct Examined {
    pub(crate) meta: Meta,
    pub(crate) data: Option<Vec<u8>>,
}

/// Whether an upper-layer entry is an overlayfs whiteout: a character device 0:0.
pub fn is_whiteout(st: &Metadata) -> bool {
    FileType::from_mode(st.mode()) == Some(FileType::CharDevice) && st.rdev() == 0
}

/// Whether an upper-layer directory is opaque (hides the lower directory of the same name): the
/// xattr `trusted.overlay.opaque` (or `user.overlay.opaque` on `userxattr` mounts) is `y`.
pub fn is_opaque(dir: &Path) -> Result<bool, DiffError> {
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        match xattr::get(dir, name) {
            Ok(Some(value)) if value.as_slice() == b"y" => return Ok(true),
            Ok(_) => {}
            // A filesystem without xattrs cannot hold opaque directories.
            Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => return Ok(false),
            Err(e) => return Err(DiffError::io("read xattrs of", dir, e)),
        }
    }
    Ok(false)
}

/// Reads everything the diff compares about `path`, whose `lstat` is `st`. `layer_dev` is the
/// lower filesystem's `st_dev`, reported for every non-device file of the layer. Contents up to
/// `max_content` bytes are kept for the content diff; larger files are only streamed through md5.
pub(crate) fn examine(
    path: &Path,
    st: &Metadata,
    layer_dev: u64,
    names: &Names,
    max_content: u64,
    deadline: Option<Instant>,
) -> Result<Examined, DiffError> {
    let mode = st.mode();
    let file_type = FileType::from_mode(mode).ok_or_else(|| DiffError::Io {
        op: "classify",
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("unknown file type in mode {mode:o}")),
    })?;
    let (selinux, xattrs) = read_xattrs(path)?;
    let mut meta = Meta {
        file_type,
        mode,
        uid: st.uid(),
        gid: st.gid(),
        owner: names.user(st.uid()),
        group: names.group(st.gid()),
        md5: None,
        // Only sizes that mean something are kept, so that a copied-up directory (whose st_size
        // depends on the filesystem) compares equal to its original.
        size: 0,
        target: None,
        rdev: None,
        device: layer_dev,
        selinux,
        xattrs,
    };
    let mut data = None;
    match file_type {
        FileType::Regular => {
            meta.size = st.len();
            if st.len() <= max_content {
                let bytes = read_small(path, st.len())?;
                meta.md5 = Some(hex(&Md5::digest(&bytes)));
                meta.size = bytes.len() as u64;
                data = Some(bytes);
            } else if st.len() < DATA_HASH_FROM {
                meta.md5 = Some(md5_stream(path, deadline)?);
            } else {
                meta.md5 = Some(data_md5(path, st.len(), deadline)?);
            }
        }
        FileType::Symlink => {
            let target =
                std::fs::read_link(path).map_err(|e| DiffError::io("read link", path, e))?;
            meta.size = st.len();
            meta.target = Some(target.to_string_lossy().into_owned());
        }
        FileType::CharDevice | FileType::BlockDevice => {
            meta.rdev = Some(st.rdev());
            meta.device = st.rdev();
        }
        FileType::Directory | FileType::Fifo | FileType::Socket => {}
    }
    Ok(Examined { meta, data })
}

/// Reads a whole small file; `size` is only a capacity hint (the file may have changed size).
fn read_small(path: &Path, size: u64) -> Result<Vec<u8>, DiffError> {
    let mut file = std::fs::File::open(path).map_err(|e| DiffError::io("open", path, e))?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(|e| DiffError::io("read", path, e))?;
    Ok(bytes)
}

/// Fails with [`DiffError::TimedOut`] (naming `path`, which the caller turns into the path
/// inside) once `deadline` has passed.
fn in_time(deadline: Option<Instant>, path: &Path) -> Result<(), DiffError> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(DiffError::TimedOut {
            path: path.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// The md5 of a file, read in fixed chunks so that memory stays flat; by the deadline.
fn md5_stream(path: &Path, deadline: Option<Instant>) -> Result<String, DiffError> {
    let mut file = std::fs::File::open(path).map_err(|e| DiffError::io("open", path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    loop {
        in_time(deadline, path)?;
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DiffError::io("read", path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The hash of a large file by its data: the md5 of each [`DATA_BLOCK`]-aligned block that is
/// not all zeros, after its offset, then of the size. Holes are skipped without reading them
/// (`SEEK_DATA`/`SEEK_HOLE`, lseek(2)), and a block of zeros counts as a hole, so two files of the
/// same contents hash the same however they are laid out on disk (an overlay's copy-up may
/// keep, or fill, the holes). It is not `md5sum`'s value; ARCHITECTURE.md says so.
fn data_md5(path: &Path, size: u64, deadline: Option<Instant>) -> Result<String, DiffError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).map_err(|e| DiffError::io("open", path, e))?;
    let mut hasher = Md5::new();
    hasher.update(b"disco data md5\0");
    let mut block = vec![0u8; DATA_BLOCK as usize];
    let mut pos = 0;
    while pos < size {
        in_time(deadline, path)?;
        // The next data at or after `pos`, and where it ends; none left: done.
        let Some(data) = seek(&file, pos, nix::unistd::Whence::SeekData, path)? else {
            break;
        };
        let end = seek(&file, data, nix::unistd::Whence::SeekHole, path)?.unwrap_or(size);
        let mut start = data - data % DATA_BLOCK;
        while start < end.min(size) {
            in_time(deadline, path)?;
            let len = DATA_BLOCK.min(size - start) as usize;
            let buf = &mut block[..len];
            file.read_exact_at(buf, start)
                .map_err(|e| DiffError::io("read", path, e))?;
            if buf.iter().any(|&b| b != 0) {
                hasher.update(start.to_le_bytes());
                hasher.update(&*buf);
            }
            start += DATA_BLOCK;
        }
        pos = start;
    }
    hasher.update(size.to_le_bytes());
    Ok(hex(&hasher.finalize()))
}

/// lseek(2) with `SEEK_DATA` or `SEEK_HOLE` from `from`; `None` when there is no more data
/// (ENXIO). A filesystem without them answers as if the whole file were data.
fn seek(
    file: &std::fs::File,
    from: u64,
    whence: nix::unistd::Whence,
    path: &Path,
) -> Result<Option<u64>, DiffError> {
    let offset = i64::try_from(from).unwrap_or(i64::MAX);
    match nix::unistd::lseek(file, offset, whence) {
        Ok(at) => Ok(Some(at as u64)),
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        Err(e) => Err(DiffError::io("seek in", path, e.into())),
    }
}

/// Lowercase hex, as `md5sum` prints it.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The SELinux context and the other xattrs of `path` (not following a symlink), without
/// overlayfs' own.
fn read_xattrs(path: &Path) -> Result<(Option<String>, BTreeMap<String, String>), DiffError> {
    let mut selinux = None;
    let mut others = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        // No xattr support (tmpfs without it, some FUSE filesystems): nothing to report.
        Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => return Ok((None, others)),
        Err(e) => return Err(DiffError::io("list xattrs of", path, e)),
    };
    for name in names {
        let name = name.to_string_lossy().into_owned();
        if OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let value = match xattr::get(path, &name) {
            Ok(Some(value)) => value,
            // Removed between list and get: the attribute is gone, so is its change.
            Ok(None) => continue,
            Err(e) => return Err(DiffError::io("read xattrs of", path, e)),
        };
        let value = xattr_text(&value);
        if name == SELINUX_XATTR {
            selinux = Some(value);
        } else {
            others.insert(name, value);
        }
    }
    Ok((selinux, others))
}

/// Gives `meta` the attributes a rollback restores: mode bits, owner, extended attributes.
pub(crate) fn restore(meta: &mut Meta, attrs: super::compare::Restored<'_>, names: &Names) {
    meta.mode = (meta.mode & 0o170000) | (attrs.mode & 0o7777);
    meta.uid = attrs.uid;
    meta.gid = attrs.gid;
    meta.owner = names.user(attrs.uid);
    meta.group = names.group(attrs.gid);
    meta.selinux = None;
    meta.xattrs.clear();
    for (name, value) in attrs.xattrs {
        if OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        if name == SELINUX_XATTR {
            meta.selinux = Some(xattr_text(value));
        } else {
            meta.xattrs.insert(name.clone(), xattr_text(value));
        }
    }
}

/// An xattr value as text: the string without its C terminator when it is printable UTF-8 (as
/// SELinux contexts are), else `0x` and hex, as `getfattr -e hex` shows it.
fn xattr_text(value: &[u8]) -> String {
    let trimmed = value.strip_suffix(b"\0").unwrap_or(value);
    match std::str::from_utf8(trimmed) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => format!("0x{}", hex(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_values_are_text_or_hex() {
        assert_eq!(
            xattr_text(b"system_u:object_r:etc_t:s0\0"),
            "system_u:object_r:etc_t:s0"
        );
        assert_eq!(xattr_text(b"\x01\x02"), "0x0102");
        assert_eq!(hex(&[0xde, 0xad, 0x01]), "dead01");
    }

    #[test]
    fn id_files_map_first_name_and_skip_junk() {
        let dir = std::env::temp_dir().join(format!("disco-diff-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("passwd");
        std::fs::write(
            &file,
            "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\njunk\nbob:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        let map = parse_id_file(&file);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(map.get(&0).map(String::as_str), Some("root"));
        assert_eq!(map.get(&1000).map(String::as_str), Some("bob"));
        assert_eq!(map.len(), 2);
    }
}
