//! Key paths: `disco/client/cmds/rsync`, checked once so that nothing else can reach outside
//! the tree.
//!
//! A component is one or more of `[A-Za-z0-9_.-]`, components are joined by `/`. `.` and `..`,
//! empty components (`a//b`, a leading or trailing `/`, hence absolute paths) are refused: a key
//! path is always a walk *down* from the root of the tree.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::ParamError;

/// A validated key path, possibly the root (no components).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct KeyPath {
    components: Vec<String>,
}

impl KeyPath {
    /// The root of the tree (the whole tree).
    pub fn root() -> KeyPath {
        KeyPath::default()
    }

    /// Parses and checks a key path such as `disco/server/uri`. The empty string is refused: the
    /// root is only reachable through [`KeyPath::root`], so that a typo cannot address the
    /// whole tree.
    pub fn parse(path: &str) -> Result<KeyPath, ParamError> {
        let invalid = |why| ParamError::InvalidPath {
            path: path.to_owned(),
            why,
        };
        if path.is_empty() {
            return Err(invalid("it is empty"));
        }
        if path.starts_with('/') {
            return Err(invalid("absolute paths are not allowed"));
        }
        let mut components = Vec::new();
        for part in path.split('/') {
            match part {
                "" => return Err(invalid("empty path component")),
                "." | ".." => return Err(invalid("'.' and '..' are not allowed")),
                _ if !is_valid_component(part) => {
                    return Err(invalid(
                        "names may hold only letters, digits, '_', '-' and '.'",
                    ))
                }
                _ => components.push(part.to_owned()),
            }
        }
        Ok(KeyPath { components })
    }

    /// Whether this is the root of the tree.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The components, root first.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// The last component (`None` for the root).
    pub fn name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    /// The parent key path (`None` for the root).
    pub fn parent(&self) -> Option<KeyPath> {
        let (_, rest) = self.components.split_last()?;
        Some(KeyPath {
            components: rest.to_vec(),
        })
    }

    /// This path with one more component, which must be a valid name.
    pub fn child(&self, name: &str) -> Result<KeyPath, ParamError> {
        if !is_valid_component(name) || name == "." || name == ".." {
            return Err(ParamError::InvalidPath {
                path: format!("{self}/{name}"),
                why: "names may hold only letters, digits, '_', '-' and '.'",
            });
        }
        let mut components = self.components.clone();
        components.push(name.to_owned());
        Ok(KeyPath { components })
    }

    /// The path relative to the tree's root directory (empty for the root).
    pub fn to_relative_path(&self) -> PathBuf {
        self.components.iter().collect()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.components.join("/"))
    }
}

impl FromStr for KeyPath {
    type Err = ParamError;

    fn from_str(s: &str) -> Result<KeyPath, ParamError> {
        KeyPath::parse(s)
    }
}

/// Whether `name` may be one component of a key path: `[A-Za-z0-9_.-]+`, not `.` or `..`.
pub fn is_valid_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        let p = KeyPath::parse("disco/client/cmds/rsync").unwrap();
        assert_eq!(p.components().len(), 4);
        assert_eq!(p.to_string(), "disco/client/cmds/rsync");
        assert_eq!(p.name(), Some("rsync"));
        assert_eq!(p.parent().unwrap().to_string(), "disco/client/cmds");
        assert!(KeyPath::parse("localhost.localdomain/othermodule-3.2").is_ok());
        assert!(KeyPath::parse(".hidden").is_ok());
    }

    #[test]
    fn refuses_escapes_and_bad_names() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            ".",
            "a//b",
            "a/",
            "a b",
            "a=b",
            "a\\b",
        ] {
            let err = KeyPath::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid parameter path '"), "{bad}: {err}");
        }
        assert!(KeyPath::root().child("..").is_err());
    }
}
