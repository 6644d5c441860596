//! The vocabulary of a diff: what a layer is, what changed at one path, and the attributes
//! compared on each side.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

/// One overlay filesystem of a sandbox: its upper (scratch) directory, the read-only lower view
/// it was laid over, and where it is mounted inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The overlay's `upperdir`, e.g. `/var/lib/disco/runs/7/layers/0/upper`. It must come from a
    /// mount with `redirect_dir=off,metacopy=off,index=off`, so that it holds only full copies,
    /// directories, links, special files, whiteouts and opaque directories.
    pub upper: PathBuf,
    /// The overlay's `lowerdir`: the live filesystem the upper layer was laid over (for `/`, the
    /// target root itself).
    pub lower: PathBuf,
    /// Where the overlay is mounted inside the sandbox (`/`, `/var`...): the prefix of every path
    /// reported for this layer.
    pub mount_point: PathBuf,
}

/// What [`compute`](super::compute) looks at, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// Files larger than this (on either side) are named with their size, and their contents are
    /// not diffed ([`Content::TooLarge`]); their md5 is still computed, by streaming.
    pub max_content_bytes: u64,
    /// The root whose `etc/passwd` and `etc/group` turn uids and gids into names (usually the
    /// target root, i.e. the lower layer of `/`). A missing file or id falls back to the number.
    pub names_root: PathBuf,
    /// When the diff must have finished (a dance gives it the module's timeout): past it, the
    /// diff stops with [`DiffError::TimedOut`](super::DiffError::TimedOut), naming the file it
    /// was reading. `None`: no bound (`disco diff`, asked for by a person).
    pub deadline: Option<std::time::Instant>,
}

impl Default for DiffOptions {
    /// 1 MiB of content, names from the running system's `/`.
    fn default() -> Self {
        DiffOptions {
            max_content_bytes: 1024 * 1024,
            names_root: PathBuf::from("/"),
            deadline: None,
        }
    }
}

/// What happened at one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// In the upper layer, not in the lower one.
    Created,
    /// In both, differing in content or in an attribute (a change of type included).
    Modified,
    /// In the lower layer, hidden by a whiteout or an opaque directory. A deleted directory is
    /// one change, not one per file in it.
    Deleted,
}

impl ChangeKind {
    /// The word used in text output: `Created`, `Modified`, `Deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "Created",
            ChangeKind::Modified => "Modified",
            ChangeKind::Deleted => "Deleted",
        }
    }
}

/// The type of a file, as the diff names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
}

impl FileType {
    /// The file type bits of a raw `st_mode`; `None` for a type Linux does not have.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        // The S_IFMT values are fixed by POSIX and identical on every Linux architecture.
        match mode & 0o170000 {
            0o100000 => Some(FileType::Regular),
            0o040000 => Some(FileType::Directory),
            0o120000 => Some(FileType::Symlink),
            0o020000 => Some(FileType::CharDevice),
            0o060000 => Some(FileType::BlockDevice),
            0o010000 => Some(FileType::Fifo),
            0o140000 => Some(FileType::Socket),
            _ => None,
        }
    }

    /// The word after `File:` in text output: `file`, `directory`, `symlink`, `device`, `fifo`
    /// or `socket`.
    pub fn kind_word(self) -> &'static str {
        match self {
            FileType::Regular => "file",
            FileType::Directory => "directory",
            FileType::Symlink => "symlink",
            FileType::CharDevice | FileType::BlockDevice => "device",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
        }
    }

    /// The name GNU `stat --format=%F` gives, without the empty-file case (see
    /// [`Meta::type_name`]).
    pub fn stat_name(self) -> &'static str {
        match self {
            FileType::Regular => "regular file",
            FileType::Directory => "directory",
            FileType::Symlink => "symbolic link",
            FileType::CharDevice => "character special file",
            FileType::BlockDevice => "block special file",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
        }
    }
}

/// The attributes of one side of a change, everything the diff compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The type of the file.
    pub file_type: FileType,
    /// The raw `st_mode` (type and permission bits), shown in hex as `mode=[81a4]`.
    pub mode: u32,
    /// The owner's uid.
    pub uid: u32,
    /// The owner's gid.
    pub gid: u32,
    /// The owner's name in the names root's `/etc/passwd`, or the uid as a number.
    pub owner: String,
    /// The group's name in the names root's `/etc/group`, or the gid as a number.
    pub group: String,
    /// The md5 of the contents, lowercase hex: regular files only.
    pub md5: Option<String>,
    /// `st_size`: bytes for a regular file, the target's length for a symlink.
    pub size: u64,
    /// Where a symbolic link points (lossy UTF-8).
    pub target: Option<String>,
    /// `st_rdev` of a device node.
    pub rdev: Option<u64>,
    /// What `device=[…]` shows: `st_dev` of the lower filesystem (the same for both sides, since
    /// the upper layer lives elsewhere but the change lands there), or `st_rdev` for a device node.
    pub device: u64,
    /// The `security.selinux` context, `None` (shown `?`) where there is none.
    pub selinux: Option<String>,
    /// Every other extended attribute but overlayfs' own (`trusted.overlay.*`,
    /// `user.overlay.*`): the value as UTF-8 text, or `0x…` hex when it is not text.
    pub xattrs: BTreeMap<String, String>,
}

impl Meta {
    /// The type as GNU `stat --format=%F` names it: `regular empty file` for an empty regular
    /// file, else [`FileType::stat_name`]. Only shown for created files: a file that became empty
    /// is reported by its md5, not as a change of type.
    pub fn type_name(&self) -> &'static str {
        if self.file_type == FileType::Regular && self.size == 0 {
            "regular empty file"
        } else {
            self.file_type.stat_name()
        }
    }

    /// `owner:group octal-permissions`, e.g. `root:root 644`, `root:root 0`, `root:root 4755`.
    pub fn perms(&self) -> String {
        format!("{}:{} {:o}", self.owner, self.group, self.mode & 0o7777)
    }
}

/// The content part of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Content {
    /// Nothing to show: not a regular file on both sides, contents equal, or empty.
    None,
    /// A text change in normal `diff` format (`0a1,2`, `> line`...), newline-terminated.
    Text(String),
    /// At least one side holds binary data (a NUL byte, as GNU diff decides): named, never
    /// printed.
    Binary,
    /// At least one side is larger than [`DiffOptions::max_content_bytes`]: the larger size.
    TooLarge(u64),
    /// At least one side is a file other users may not read (a key, a password): its content
    /// is never copied into a diff, which goes to terminals, logs, mail and reports. The mode
    /// of the side that hides it.
    Private(u32),
}

/// One path that differs between the sandbox and the live system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The path as seen inside the sandbox (mount point + path in the layer), absolute.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// What happened.
    pub kind: ChangeKind,
    /// The live file's attributes: `None` for [`ChangeKind::Created`].
    pub old: Option<Meta>,
    /// The sandbox file's attributes: `None` for [`ChangeKind::Deleted`].
    pub new: Option<Meta>,
    /// The content change.
    pub content: Content,
}

impl Change {
    /// The type that names this change after `File:`: the new file's, or the deleted one's.
    pub fn file_type(&self) -> FileType {
        match (&self.new, &self.old) {
            (Some(m), _) | (None, Some(m)) => m.file_type,
            // Never built by compute; a regular file is the least surprising guess.
            (None, None) => FileType::Regular,
        }
    }
}

/// Paths are almost always UTF-8; a name that is not is shown with U+FFFD rather than failing
/// the whole report.
fn lossy_path<S: Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}
