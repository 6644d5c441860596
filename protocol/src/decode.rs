//! Bytes to text: the document's declared encoding, checked against its bytes.
//!
//! Decoding happens before XML parsing, by hand, because quick-xml's decoding reader fails on
//! non-ASCII bytes near the start and maps iso-8859-1 to windows-1252 (WHATWG), whereas true
//! ISO-8859-1 maps every byte to the code point of the same value.

use crate::error::{Deviation, DeviationKind, ErrorKind, ParseError, Pos};

/// The two encodings the protocol meets in the wild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Utf8,
    Latin1,
}

impl Encoding {
    fn label(self) -> &'static str {
        match self {
            Encoding::Utf8 => "UTF-8",
            Encoding::Latin1 => "ISO-8859-1",
        }
    }
}

/// Decodes `bytes` by its declaration (UTF-8 when there is none). When the bytes contradict the
/// declaration (modules that echo their input produce both), decodes them the other way and
/// reports the deviation.
pub(crate) fn decode(bytes: &[u8], deviations: &mut Vec<Deviation>) -> Result<String, ParseError> {
    let start = Pos { line: 1, col: 1 };
    if bytes.starts_with(&[0xFE, 0xFF]) || bytes.starts_with(&[0xFF, 0xFE]) {
        return Err(ParseError {
            pos: start,
            kind: ErrorKind::UnsupportedEncoding("UTF-16".into()),
        });
    }
    let (bytes, bom) = match bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        Some(rest) => (rest, true),
        None => (bytes, false),
    };
    let declared = match declared_encoding(bytes) {
        None => Encoding::Utf8,
        Some(label) => match label.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" | "us-ascii" | "ascii" => Encoding::Utf8,
            "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "latin1" | "latin-1" | "l1" => {
                Encoding::Latin1
            }
            _ => {
                return Err(ParseError {
                    pos: start,
                    kind: ErrorKind::UnsupportedEncoding(label),
                })
            }
        },
    };
    // A byte-order mark is stronger evidence than a declaration.
    let declared = if bom { Encoding::Utf8 } else { declared };
    let utf8 = std::str::from_utf8(bytes).ok();
    let used = match (declared, utf8) {
        (Encoding::Utf8, Some(_)) => Encoding::Utf8,
        (Encoding::Utf8, None) => Encoding::Latin1,
        // Valid UTF-8 with multi-byte sequences is almost never meant as Latin-1 mojibake.
        (Encoding::Latin1, Some(s)) if !s.is_ascii() => Encoding::Utf8,
        (Encoding::Latin1, _) => Encoding::Latin1,
    };
    if used != declared {
        deviations.push(Deviation {
            pos: start,
            kind: DeviationKind::EncodingMismatch {
                declared: declared.label(),
                used: used.label(),
            },
        });
    }
    Ok(match (used, utf8) {
        (Encoding::Utf8, Some(s)) => s.to_owned(),
        _ => bytes.iter().map(|&b| char::from(b)).collect(),
    })
}

/// The `encoding` pseudo-attribute of a leading `<?xml ...?>` declaration, read as ASCII.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(b"<?xml")?;
    let end = rest.windows(2).take(512).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&rest[..end]).ok()?;
    let at = decl.find("encoding")?;
    let after = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?;
    let after = after.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &after[1..];
    Some(value[..value.find(quote)?].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> (String, Vec<Deviation>) {
        let mut dev = Vec::new();
        let text = decode(bytes, &mut dev).unwrap();
        (text, dev)
    }

    #[test]
    fn latin1_is_true_iso_8859_1() {
        // 0xE9 is é; 0x80 is U+0080 (a C1 control), not the euro sign of windows-1252.
        let doc = b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<a>\xE9\x80</a>";
        let (text, dev) = run(doc);
        assert!(text.ends_with("<a>\u{e9}\u{80}</a>"));
        assert!(dev.is_empty());
    }

    #[test]
    fn non_ascii_at_the_very_start_is_fine() {
        let (text, _) = run(b"<?xml version='1.0' encoding='ISO-8859-1'?><\xE9/>");
        assert!(text.ends_with("<\u{e9}/>"));
    }

    #[test]
    fn utf8_declared_latin1_falls_back() {
        let (text, dev) = run("<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><a>é</a>".as_bytes());
        assert!(text.ends_with("<a>é</a>"));
        assert_eq!(dev.len(), 1);
        assert!(dev[0].to_string().contains("read as UTF-8"), "{}", dev[0]);
    }

    #[test]
    fn latin1_bytes_without_declaration_fall_back() {
        let (text, dev) = run(b"<a>caf\xE9</a>");
        assert_eq!(text, "<a>café</a>");
        assert_eq!(dev.len(), 1);
    }

    #[test]
    fn unknown_and_utf16_encodings_are_errors() {
        let mut dev = Vec::new();
        let err = decode(b"<?xml version=\"1.0\" encoding=\"koi8-r\"?><a/>", &mut dev).unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnsupportedEncoding("koi8-r".into()));
        assert!(decode(b"\xFF\xFE<\0a\0/\0>\0", &mut dev).is_err());
    }

    #[test]
    fn bom_is_stripped() {
        let (text, dev) = run(b"\xEF\xBB\xBF<a/>");
        assert_eq!(text, "<a/>");
        assert!(dev.is_empty());
    }
}
