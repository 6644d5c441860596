//! The two shapes of a diff: text in the original disco's `disco-fs-diff` format, and JSON lines.
//!
//! Text, one block per path:
//! ```text
//! info: File: file: /etc/othermodule/stuff.cfg : Created : type=[regular file] device=[fd00] mode=[81a4] selinux=[?] md5=[77b2…] perms=[root:root 644]
//! 0a1,2
//! > HOST=localhost.localdomain
//! > KEY_VALUE=LOLTHISKEYMEANSNOTHING
//! info: File: file: /etc/shadow : Modified : md5=[8b02… => 336d…] perms=[root:root 0 => root:root 644] mode=[8000 => 81a4]
//! info: File: file: /etc/passwd : Deleted
//! 1,35d0
//! < root:x:0:0:root:/root:/bin/bash
//! ```

use std::fmt::Write;
use std::path::Path;

use super::entry::{Change, ChangeKind, Content, Meta};
use super::error::DiffError;

/// What an absent value (no SELinux context, no md5, no xattr) shows as.
const NONE: &str = "?";

/// The whole diff as text: for each change its [`header`] prefixed `info: `, then its content
/// lines ([`content_text`]). Every line ends with a newline.
pub fn render_text(changes: &[Change]) -> String {
    let mut out = String::new();
    for change in changes {
        out.push_str("info: ");
        out.push_str(&header(change));
        out.push('\n');
        out.push_str(&content_text(change));
    }
    out
}

/// The whole diff as JSON lines: one JSON object per change, one a line, in order (fields: `path`,
/// `kind`, `old`, `new`, `content` as in [`Change`]). Paths are JSON strings, so they need no
/// escaping beyond JSON's own.
pub fn render_json(changes: &[Change]) -> Result<String, DiffError> {
    let mut out = String::new();
    for change in changes {
        out.push_str(&serde_json::to_string(change).map_err(DiffError::Json)?);
        out.push('\n');
    }
    Ok(out)
}

/// The first line of a change's block, without the `info: ` prefix (so that a caller can print it
/// through its own `info` channel), e.g. `File: file: /etc/passwd : Deleted`.
///
/// Created lists `type device mode selinux md5 perms` (md5 for regular files only), then
/// `target` for a symlink and one `xattr.NAME` per extended attribute. Modified lists only what
/// differs, as `name=[old => new]`, in the order `md5 perms selinux type mode device`, then
/// `target` and `xattr.NAME`; `?` stands for an absent value. Deleted lists nothing. The path is
/// escaped as [`escape`] describes.
pub fn header(change: &Change) -> String {
    let mut line = format!(
        "File: {}: {} : {}",
        change.file_type().kind_word(),
        escape(&change.path),
        change.kind.as_str()
    );
    let fields = match (change.kind, &change.old, &change.new) {
        (ChangeKind::Created, _, Some(new)) => created_fields(new),
        (ChangeKind::Modified, Some(old), Some(new)) => modified_fields(old, new),
        _ => Vec::new(),
    };
    if !fields.is_empty() {
        line.push_str(" : ");
        line.push_str(&fields.join(" "));
    }
    line
}

/// The lines after a change's header: the normal diff of a text file, or one line naming a
/// binary or too large file; empty when there is no content change.
pub fn content_text(change: &Change) -> String {
    match (&change.content, change.kind) {
        (Content::None, _) => String::new(),
        (Content::Text(diff), _) => diff.clone(),
        (Content::Binary, ChangeKind::Created) => "Binary file created\n".to_string(),
        (Content::Binary, ChangeKind::Deleted) => "Binary file deleted\n".to_string(),
        (Content::Binary, ChangeKind::Modified) => "Binary files differ\n".to_string(),
        (Content::TooLarge(size), _) => {
            format!("Contents not compared: {size} bytes is over the content diff limit\n")
        }
        (Content::Private(mode), _) => {
            format!("Contents not shown: other users may not read it (mode {mode:o})\n")
        }
    }
}

/// A path (or symlink target) made safe for one line of text: a backslash becomes `\\`, a newline
/// `\n` (the two characters backslash and n), a carriage return `\r`, a tab `\t`, any other
/// control character and any byte that is not UTF-8 `\xHH`. A name with spaces is left as it is:
/// the fields around it are separated by ` : `, never split on whitespace.
pub fn escape(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    escape_bytes(path.as_os_str().as_bytes())
}

fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn created_fields(new: &Meta) -> Vec<String> {
    let mut f = vec![
        format!("type=[{}]", new.type_name()),
        format!("device=[{:x}]", new.device),
        format!("mode=[{:x}]", new.mode),
        format!("selinux=[{}]", new.selinux.as_deref().unwrap_or(NONE)),
    ];
    if let Some(md5) = &new.md5 {
        f.push(format!("md5=[{md5}]"));
    }
    f.push(format!("perms=[{}]", new.perms()));
    if let Some(target) = &new.target {
        f.push(format!("target=[{}]", escape(Path::new(target))));
    }
    for (name, value) in &new.xattrs {
        f.push(format!("xattr.{name}=[{value}]"));
    }
    f
}

fn modified_fields(old: &Meta, new: &Meta) -> Vec<String> {
    let mut f = Vec::new();
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            f.push(format!("{name}=[{a} => {b}]"));
        }
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| NONE.to_string());
    field("md5", opt(&old.md5), opt(&new.md5));
    field("perms", old.perms(), new.perms());
    field("selinux", opt(&old.selinux), opt(&new.selinux));
    if old.file_type != new.file_type {
        field("type", old.type_name().into(), new.type_name().into());
    }
    field("mode", format!("{:x}", old.mode), format!("{:x}", new.mode));
    field(
        "device",
        format!("{:x}", old.device),
        format!("{:x}", new.device),
    );
    let target = |m: &Meta| {
        m.target
            .as_deref()
            .map_or(NONE.to_string(), |t| escape(Path::new(t)))
    };
    field("target", target(old), target(new));
    let names: std::collections::BTreeSet<&String> =
        old.xattrs.keys().chain(new.xattrs.keys()).collect();
    for name in names {
        let value = |m: &Meta| {
            m.xattrs
                .get(name)
                .cloned()
                .unwrap_or_else(|| NONE.to_string())
        };
        field(&format!("xattr.{name}"), value(old), value(new));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_makes_one_visible_line() {
        assert_eq!(escape(Path::new("/a b/c\nd")), "/a b/c\\nd");
        assert_eq!(escape(Path::new("/back\\slash\t")), "/back\\\\slash\\t");
        use std::os::unix::ffi::OsStrExt;
        let odd = std::ffi::OsStr::from_bytes(b"/x\xff\x01");
        assert_eq!(escape(Path::new(odd)), "/x\\xff\\x01");
    }
}
