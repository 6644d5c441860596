//! Content changes in normal `diff` format (`0a1,2`, `> line`, `1,35d0`, `3c3` with `---`), the
//! format the original disco printed, computed with `similar` and laid out as GNU diff does.

use std::fmt::Write;
use std::time::{Duration, Instant};

use similar::{Algorithm, DiffOp};

/// How long one file's line diff may search for the smallest edit script before settling for a
/// larger (still correct) one: a pathological pair of files must not stall the whole report.
const DIFF_DEADLINE: Duration = Duration::from_secs(2);

/// The marker GNU diff prints after a last line without its newline.
const NO_NEWLINE: &str = "\\ No newline at end of file";

/// Whether `data` is binary as GNU diff decides it: it holds a NUL byte.
pub fn is_binary(data: &[u8]) -> bool {
    data.contains(&0)
}

/// The change from `old` to `new` in normal diff format, one hunk per run of changed lines, each
/// line newline-terminated; empty when the two are equal. Lines compare with their newline, so a
/// last line that gains or loses its newline is a change, as in GNU diff. Bytes that are not
/// UTF-8 are shown as U+FFFD (the diff itself is computed on the raw bytes).
///
/// The edit script is minimal (Myers), as GNU diff's is, and GNU `patch --normal` applies it; where
/// several equally short scripts exist (repeated lines), a hunk may sit a line away from where GNU
/// diff would put it.
pub fn normal_diff(old: &[u8], new: &[u8]) -> String {
    let old_lines: Vec<&[u8]> = old.split_inclusive(|&b| b == b'\n').collect();
    let new_lines: Vec<&[u8]> = new.split_inclusive(|&b| b == b'\n').collect();
    let ops = similar::capture_diff_slices_deadline(
        Algorithm::Myers,
        &old_lines,
        &new_lines,
        Some(Instant::now() + DIFF_DEADLINE),
    );
    let mut out = String::new();
    // A hunk is a maximal run of non-equal ops: similar may emit a delete next to an insert,
    // which GNU diff prints as one `c` hunk.
    let mut hunk: Option<(usize, usize, usize, usize)> = None;
    for op in &ops {
        if let DiffOp::Equal { .. } = op {
            if let Some(h) = hunk.take() {
                write_hunk(&mut out, h, &old_lines, &new_lines);
            }
            continue;
        }
        let (o, n) = (op.old_range(), op.new_range());
        hunk = Some(match hunk {
            None => (o.start, o.end, n.start, n.end),
            Some((os, _, ns, _)) => (os, o.end, ns, n.end),
        });
    }
    if let Some(h) = hunk {
        write_hunk(&mut out, h, &old_lines, &new_lines);
    }
    out
}

/// Writes one hunk: old lines `os..oe` replaced by new lines `ns..ne` (0-based, end exclusive).
fn write_hunk(
    out: &mut String,
    (os, oe, ns, ne): (usize, usize, usize, usize),
    old: &[&[u8]],
    new: &[&[u8]],
) {
    // GNU numbering: a range is 1-based and inclusive; the side without lines names the line
    // after which the change happens (0 for "before the first line").
    let header = match (os == oe, ns == ne) {
        (true, _) => format!("{os}a{}", range(ns, ne)),
        (_, true) => format!("{}d{ns}", range(os, oe)),
        _ => format!("{}c{}", range(os, oe), range(ns, ne)),
    };
    out.push_str(&header);
    out.push('\n');
    write_lines(out, "< ", &old[os..oe]);
    if os != oe && ns != ne {
        out.push_str("---\n");
    }
    write_lines(out, "> ", &new[ns..ne]);
}

/// `a` for one line, `a,b` for several (1-based, inclusive).
fn range(start: usize, end: usize) -> String {
    if end == start + 1 {
        format!("{end}")
    } else {
        format!("{},{end}", start + 1)
    }
}

fn write_lines(out: &mut String, prefix: &str, lines: &[&[u8]]) {
    for line in lines {
        let (text, newline) = match line.strip_suffix(b"\n") {
            Some(text) => (text, true),
            None => (*line, false),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{prefix}{}", String::from_utf8_lossy(text));
        if !newline {
            out.push_str(NO_NEWLINE);
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_file_is_one_append_hunk() {
        assert_eq!(normal_diff(b"", b"a\nb\n"), "0a1,2\n> a\n> b\n");
    }

    #[test]
    fn deleted_file_is_one_delete_hunk() {
        assert_eq!(normal_diff(b"a\nb\nc\n", b""), "1,3d0\n< a\n< b\n< c\n");
    }

    #[test]
    fn change_has_separator_and_ranges() {
        assert_eq!(
            normal_diff(b"a\nb\nc\n", b"a\nB\nc\nd\n"),
            "2c2\n< b\n---\n> B\n3a4\n> d\n"
        );
    }

    #[test]
    fn missing_newline_is_marked_and_is_a_change() {
        assert_eq!(
            normal_diff(b"a\nb", b"a\nb\n"),
            "2c2\n< b\n\\ No newline at end of file\n---\n> b\n"
        );
        assert_eq!(normal_diff(b"same", b"same"), "");
    }

    #[test]
    fn nul_means_binary() {
        assert!(is_binary(b"a\0b"));
        assert!(!is_binary(b"plain text\n"));
    }
}
