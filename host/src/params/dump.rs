//! The tree as lines (`disco param dump`) and as one JSON document (`disco param json`).
//!
//! The dump lists keys in a depth-first walk with each directory's names sorted, so a
//! directory's keys follow it directly (`disco`, `disco/client`, `disco/client/cmds`, ...), as
//! in the seed's example: `path = {}` for a directory and `path = value` for a value.

use std::path::Path;

use super::tree::{list_dir, read_value, Kind};
use super::{KeyPath, ParamError, Tree};

/// One dumped key: its path and its value (`None` for a directory).
pub type DumpEntry = (String, Option<String>);

impl Tree {
    /// Every key under `key` (the whole tree for `None` or the root), `key` itself included, in
    /// the dump's order.
    pub fn dump(&self, key: Option<&KeyPath>) -> Result<Vec<DumpEntry>, ParamError> {
        let mut out = Vec::new();
        let key = match key {
            Some(key) if !key.is_root() => key,
            _ => {
                if self.kind(&KeyPath::root())? == Some(Kind::Dir) {
                    walk(&self.root, &self.root, "", &mut out)?;
                }
                return Ok(out);
            }
        };
        let path = self.path_of(key);
        match self.kind(key)? {
            None => return Err(self.not_found(key)),
            Some(Kind::Text) => out.push((key.to_string(), Some(read_value(&path)?))),
            Some(Kind::Dir) => {
                out.push((key.to_string(), None));
                walk(&self.root, &path, &key.to_string(), &mut out)?;
            }
        }
        Ok(out)
    }

    /// The whole tree as JSON: directories are objects, values are strings; a tree that does
    /// not exist yet is `{}`.
    pub fn to_json(&self) -> Result<serde_json::Value, ParamError> {
        if self.kind(&KeyPath::root())? == Some(Kind::Dir) {
            json_of(&self.root, &self.root)
        } else {
            Ok(serde_json::Value::Object(serde_json::Map::new()))
        }
    }
}

/// Renders dump entries as the seed prints them, one `path = value` line each.
pub fn render_dump(entries: &[DumpEntry]) -> String {
    let mut out = String::new();
    for (path, value) in entries {
        out.push_str(path);
        out.push_str(" = ");
        out.push_str(value.as_deref().unwrap_or("{}"));
        out.push('\n');
    }
    out
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<DumpEntry>) -> Result<(), ParamError> {
    for (name, path) in list_dir(root, dir)? {
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if is_dir(&path)? {
            out.push((key.clone(), None));
            walk(root, &path, &key, out)?;
        } else {
            out.push((key, Some(read_value(&path)?)));
        }
    }
    Ok(())
}

fn json_of(root: &Path, dir: &Path) -> Result<serde_json::Value, ParamError> {
    let mut map = serde_json::Map::new();
    for (name, path) in list_dir(root, dir)? {
        let value = if is_dir(&path)? {
            json_of(root, &path)?
        } else {
            serde_json::Value::String(read_value(&path)?)
        };
        map.insert(name, value);
    }
    Ok(serde_json::Value::Object(map))
}

fn is_dir(path: &Path) -> Result<bool, ParamError> {
    Ok(std::fs::metadata(path)
        .map_err(ParamError::io("read", path))?
        .is_dir())
}
