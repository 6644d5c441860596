//! Writing documents in the dialect the original Perl module library reads.
//!
//! That library is a line-oriented regex reader, so the layout is part of the protocol: the
//! declaration alone on the first line, one element a line (indented one space a level), ISO-8859-1
//! bytes, characters beyond Latin-1 as numeric references, only `&`, `<`, `>` escaped, and an
//! empty element written as `<X></X>` (it reads `<X/>` as an element that never closes).

use crate::error::WriteError;
use crate::tree::is_xml_char;

/// Builds one document.
pub(crate) struct Writer {
    out: Vec<u8>,
    depth: usize,
}

impl Writer {
    /// Starts a document with the declaration and the root's start tag.
    pub fn new(root: &str, version: &str) -> Writer {
        let mut w = Writer {
            out: b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n".to_vec(),
            depth: 0,
        };
        w.open(root, &[("Version", version)]);
        w
    }

    /// A start tag on a line of its own. Attribute values are names and versions, checked by
    /// the caller to need no escaping.
    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        for (k, v) in attrs {
            self.out
                .extend_from_slice(format!(" {k}=\"{v}\"").as_bytes());
        }
        self.out.extend_from_slice(b">\n");
        self.depth += 1;
    }

    /// An end tag on a line of its own.
    pub fn close(&mut self, name: &str) {
        self.depth -= 1;
        self.indent();
        self.out
            .extend_from_slice(format!("</{name}>\n").as_bytes());
    }

    /// `<name>text</name>` on one line (the text itself may hold newlines).
    pub fn leaf(&mut self, name: &'static str, text: &str) -> Result<(), WriteError> {
        self.indent();
        self.out.extend_from_slice(format!("<{name}>").as_bytes());
        for ch in text.chars() {
            match ch {
                '&' => self.out.extend_from_slice(b"&amp;"),
                '<' => self.out.extend_from_slice(b"&lt;"),
                '>' => self.out.extend_from_slice(b"&gt;"),
                // A raw CR would be folded into LF by any XML reader.
                '\r' => self.out.extend_from_slice(b"&#13;"),
                c if !is_xml_char(c) => return Err(WriteError::IllegalChar { element: name, ch }),
                c => match u8::try_from(u32::from(c)) {
                    Ok(byte) => self.out.push(byte),
                    Err(_) => self
                        .out
                        .extend_from_slice(format!("&#{};", u32::from(c)).as_bytes()),
                },
            }
        }
        self.out
            .extend_from_slice(format!("</{name}>\n").as_bytes());
        Ok(())
    }

    /// Closes the root and returns the bytes.
    pub fn finish(mut self, root: &str) -> Vec<u8> {
        self.close(root);
        // Latin-1 text such as "Ã©" is, byte for byte, valid UTF-8 ("é"), and a reader must
        // take such a document for UTF-8 (modules echo UTF-8 under a Latin-1 declaration). In
        // that rare case write every high byte as a reference, which reads the same either way.
        if !self.out.is_ascii() && std::str::from_utf8(&self.out).is_ok() {
            let mut out = Vec::with_capacity(self.out.len() * 2);
            for &b in &self.out {
                if b.is_ascii() {
                    out.push(b);
                } else {
                    out.extend_from_slice(format!("&#{b};").as_bytes());
                }
            }
            return out;
        }
        self.out
    }

    fn indent(&mut self) {
        self.out.extend(std::iter::repeat_n(b' ', self.depth));
    }
}

/// Writes options as repeated `ModuleOption` elements, one value each.
pub(crate) fn options(w: &mut Writer, options: &crate::Options) -> Result<(), WriteError> {
    for option in options {
        if !crate::options::is_valid_option_name(&option.name) {
            return Err(WriteError::BadOptionName(option.name.clone()));
        }
        if option.values.is_empty() {
            return Err(WriteError::NoValue(option.name.clone()));
        }
        for value in &option.values {
            w.open("ModuleOption", &[("OptionName", &option.name)]);
            w.leaf("OptionValue", value)?;
            w.close("ModuleOption");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_only_markup_and_encodes_latin1() {
        let mut w = Writer::new("R", "1.0");
        w.leaf("Comment", "a<b>&\"'é€\r").unwrap();
        let out = w.finish("R");
        let expected: &[u8] = b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<R Version=\"1.0\">\n <Comment>a&lt;b&gt;&amp;\"'\xE9&#8364;&#13;</Comment>\n</R>\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn latin1_text_that_looks_like_utf8_is_written_as_references() {
        let mut w = Writer::new("R", "1.0");
        w.leaf("Comment", "\u{c3}\u{a9}").unwrap();
        let out = w.finish("R");
        assert!(out.is_ascii());
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("<Comment>&#195;&#169;</Comment>"));
    }

    #[test]
    fn refuses_characters_xml_cannot_carry() {
        let mut w = Writer::new("R", "1.0");
        let e = w.leaf("Comment", "bell\u{7}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "<Comment> contains U+0007, which XML cannot carry"
        );
    }
}
