//! The parameter tree on disk: a directory whose file names are keys, whose files are values
//! and whose subdirectories are objects; and [`merge`], which stacks trees into one.
//!
//! Reads trim exactly one trailing newline (what `echo` and editors add); writes add it back.
//! Every write goes to a temporary file beside its target (`.#NAME.PID.N`: `#` cannot appear in
//! a key, so it never collides with one, and listings skip it) and is renamed into place, so a
//! template reading the tree never sees half a value.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{KeyPath, ParamError};

/// What a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A value: the file's content with one trailing newline trimmed.
    Text(String),
    /// A directory (an object); printed as `{}`.
    Dir,
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Text(text) => f.write_str(text),
            Value::Dir => f.write_str("{}"),
        }
    }
}

/// What a key is on disk, without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Dir,
}

/// A parameter tree rooted at a directory. The directory need not exist yet: a missing root is
/// an empty tree, created by the first write.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The tree's root directory.
    pub root: PathBuf,
}

impl Tree {
    /// Opens the tree at `root`; refuses a root that exists but is not a directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Tree, ParamError> {
        let root = root.into();
        match fs::metadata(&root) {
            Ok(meta) if !meta.is_dir() => Err(ParamError::NotATree { path: root }),
            Ok(_) => Ok(Tree { root }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Tree { root }),
            Err(e) => Err(ParamError::io("open", root)(e)),
        }
    }

    /// The file or directory that holds `key`.
    pub fn path_of(&self, key: &KeyPath) -> PathBuf {
        self.root.join(key.to_relative_path())
    }

    /// Reads `key`: its text, or [`Value::Dir`] for a directory (and for the root).
    pub fn get(&self, key: &KeyPath) -> Result<Value, ParamError> {
        match self.kind(key)? {
            Some(Kind::Dir) => Ok(Value::Dir),
            Some(Kind::Text) => read_value(&self.path_of(key)).map(Value::Text),
            None if key.is_root() => Ok(Value::Dir),
            None => Err(self.not_found(key)),
        }
    }

    /// Sets `key` to `value` (stored with one trailing newline), creating parent directories.
    /// A key that is a directory is not silently replaced by a value: that is an error.
    pub fn set(&self, key: &KeyPath, value: &str) -> Result<(), ParamError> {
        let Some(parent) = key.parent() else {
            return Err(ParamError::Root {
                action: "set",
                tree: self.root.clone(),
            });
        };
        self.ensure_dir(&parent)?;
        if self.kind(key)? == Some(Kind::Dir) {
            return Err(ParamError::IsADirectory {
                key: key.to_string(),
                tree: self.root.clone(),
            });
        }
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(b'\n');
        write_atomic(&self.path_of(key), &bytes)
    }

    /// Makes `key` a directory (and its parents); an existing directory is left as it is, a
    /// value is an error.
    pub fn set_dir(&self, key: &KeyPath) -> Result<(), ParamError> {
        self.ensure_dir(key)
    }

    /// The names directly under the directory `key`, sorted. The root of a tree that does not
    /// exist yet has none.
    pub fn keys(&self, key: &KeyPath) -> Result<Vec<String>, ParamError> {
        match self.kind(key)? {
            Some(Kind::Dir) => Ok(list_dir(&self.root, &self.path_of(key))?
                .into_iter()
                .map(|(name, _)| name)
                .collect()),
            Some(Kind::Text) => Err(ParamError::NotADirectory {
                key: key.to_string(),
                tree: self.root.clone(),
            }),
            None if key.is_root() => Ok(Vec::new()),
            None => Err(self.not_found(key)),
        }
    }

    /// Deletes `key`. A directory that is not empty needs `recursive`.
    pub fn delete(&self, key: &KeyPath, recursive: bool) -> Result<(), ParamError> {
        if key.is_root() {
            return Err(ParamError::Root {
                action: "deleted",
                tree: self.root.clone(),
            });
        }
        let path = self.path_of(key);
        match self.kind(key)? {
            None => Err(self.not_found(key)),
            Some(Kind::Text) => fs::remove_file(&path).map_err(ParamError::io("delete", path)),
            Some(Kind::Dir) if recursive => {
                fs::remove_dir_all(&path).map_err(ParamError::io("delete", path))
            }
            Some(Kind::Dir) => match fs::remove_dir(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => Err(ParamError::NotEmpty {
                    key: key.to_string(),
                    tree: self.root.clone(),
                }),
                Err(e) => Err(ParamError::io("delete", path)(e)),
            },
        }
    }

    /// What `key` is, or `None` when it does not exist. Symbolic links are followed while
    /// they stay inside the tree (a tree fetched with `rsync -a` may hold them); one that
    /// leads out of it is an error naming it, never read (see [`inside`]).
    pub(crate) fn kind(&self, key: &KeyPath) -> Result<Option<Kind>, ParamError> {
        let path = self.path_of(key);
        inside(&self.root, &path)?;
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => Ok(Some(Kind::Dir)),
            Ok(_) => Ok(Some(Kind::Text)),
            // `a/b` where `a` is a value: `b` simply does not exist.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(ParamError::io("read", path)(e)),
        }
    }

    pub(crate) fn not_found(&self, key: &KeyPath) -> ParamError {
        ParamError::NotFound {
            key: key.to_string(),
            tree: self.root.clone(),
        }
    }

    /// Makes every directory from the root down to `key`, refusing to go through a value.
    fn ensure_dir(&self, key: &KeyPath) -> Result<(), ParamError> {
        fs::create_dir_all(&self.root).map_err(ParamError::io("create", &self.root))?;
        let mut prefix = KeyPath::root();
        for name in key.components() {
            prefix = prefix.child(name)?;
            match self.kind(&prefix)? {
                Some(Kind::Dir) => {}
                Some(Kind::Text) => {
                    return Err(ParamError::NotADirectory {
                        key: prefix.to_string(),
                        tree: self.root.clone(),
                    })
                }
                None => {
                    let path = self.path_of(&prefix);
                    match fs::create_dir(&path) {
                        // Another writer made it in the meantime: just as good.
                        Err(e) if e.kind() != ErrorKind::AlreadyExists => {
                            return Err(ParamError::io("create", path)(e))
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// Copies the trees `layers` on top of each other into `dest`, later layers winning: a value
/// replaces a value or a whole directory, a directory replaces a value and merges into a
/// directory. Whatever `dest` already holds is the bottom layer (pass an empty or missing
/// directory for a fresh merge). A layer that does not exist is skipped, because a module's
/// `parameters/` is optional. Value files are copied byte for byte.
///
/// The dance builds its tree with this: every module's `parameters/`, then the source's
/// `parameters/` on top.
///
/// A value keeps its source file's permission bits (a 0600 `password` stays 0600), and a
/// symbolic link is followed only while it stays inside its layer.
pub fn merge(layers: &[&Path], dest: &Path) -> Result<(), ParamError> {
    fs::create_dir_all(dest).map_err(ParamError::io("create", dest))?;
    for layer in layers {
        match fs::metadata(layer) {
            Ok(meta) if meta.is_dir() => merge_dir(layer, layer, dest)?,
            Ok(_) => {
                return Err(ParamError::NotATree {
                    path: layer.to_path_buf(),
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(ParamError::io("read", *layer)(e)),
        }
    }
    Ok(())
}

fn merge_dir(root: &Path, src: &Path, dst: &Path) -> Result<(), ParamError> {
    for (name, from) in list_dir(root, src)? {
        let to = dst.join(&name);
        let is_dir = fs::metadata(&from)
            .map_err(ParamError::io("read", &from))?
            .is_dir();
        // Not following links here: whatever sits at `to` is replaced, never written through.
        let existing = match fs::symlink_metadata(&to) {
            Ok(meta) => Some(meta.is_dir()),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(ParamError::io("read", to)(e)),
        };
        if is_dir {
            match existing {
                Some(true) => {}
                Some(false) => {
                    fs::remove_file(&to).map_err(ParamError::io("replace", &to))?;
                    fs::create_dir(&to).map_err(ParamError::io("create", &to))?;
                }
                None => fs::create_dir(&to).map_err(ParamError::io("create", &to))?,
            }
            merge_dir(root, &from, &to)?;
        } else {
            if existing == Some(true) {
                fs::remove_dir_all(&to).map_err(ParamError::io("replace", &to))?;
            }
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&from)
                .map_err(ParamError::io("read", &from))?
                .permissions()
                .mode();
            let bytes = fs::read(&from).map_err(ParamError::io("read", &from))?;
            write_atomic_mode(&to, &bytes, mode & 0o777)?;
        }
    }
    Ok(())
}

/// Refuses `path` when it resolves (through symbolic links) to somewhere outside the tree at
/// `root`: root reading a tree must not be led to `/etc/shadow` and copy it into places other
/// users read. A path that does not resolve is left to the caller (it does not exist).
pub(crate) fn inside(root: &Path, path: &Path) -> Result<(), ParamError> {
    let (Ok(real), Ok(top)) = (path.canonicalize(), root.canonicalize()) else {
        return Ok(());
    };
    if real.starts_with(&top) {
        Ok(())
    } else {
        Err(ParamError::OutsideTree {
            path: path.to_owned(),
            target: real,
        })
    }
}

/// The entries of a tree directory (in the tree at `root`), sorted by name, without
/// in-progress temporary files; a symbolic link that leads out of the tree is an error.
pub(crate) fn list_dir(root: &Path, dir: &Path) -> Result<Vec<(String, PathBuf)>, ParamError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(ParamError::io("list", dir))? {
        let entry = entry.map_err(ParamError::io("list", dir))?;
        let path = entry.path();
        let Ok(name) = entry.file_name().into_string() else {
            return Err(ParamError::BadFileName { path });
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            inside(root, &path)?;
        }
        entries.push((name, path));
    }
    entries.sort();
    Ok(entries)
}

/// Reads a value file: UTF-8 text with one trailing newline trimmed.
pub(crate) fn read_value(path: &Path) -> Result<String, ParamError> {
    let bytes = fs::read(path).map_err(ParamError::io("read", path))?;
    let mut text = String::from_utf8(bytes).map_err(|_| ParamError::NotText {
        path: path.to_path_buf(),
    })?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

/// How temporary files start; `#` is not allowed in a key, so no key starts like this.
const TEMP_PREFIX: &str = ".#";

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`; a value that
/// replaces another keeps the old one's permission bits (new ones get 0644 less the umask).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ParamError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map_or(0o644, |m| m.permissions().mode() & 0o777);
    write_atomic_mode(path, bytes, mode)
}

/// [`write_atomic`] with the file created with `mode` (never wider: the umask still applies).
fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ParamError> {
    use std::os::unix::fs::OpenOptionsExt;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TEMP_PREFIX}{name}.{}.{n}", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(ParamError::io("write", &tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(ParamError::io("write", path)));
    if written.is_err() {
        // Leave no half-written temporary behind; the error above is the one that matters.
        let _ = fs::remove_file(&tmp);
    }
    written
}
