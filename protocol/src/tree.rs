//! Text to a small element tree, with quick-xml, under limits, and with no entity expansion.
//!
//! The protocol's documents are three levels deep and a few elements wide, so a tree is the
//! simplest faithful shape; the document modules map it to types and decide what is lenient.

use quick_xml::events::Event;
use quick_xml::Reader;
use quick_xml::XmlVersion;

use crate::error::{ErrorKind, ParseError, Pos};

/// Limits on what a reader accepts, so a hostile document costs little.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest document in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting.
    pub max_depth: usize,
}

impl Default for Limits {
    /// 4 MiB and 32 levels: generous for a protocol document, small for an attack.
    fn default() -> Self {
        Limits {
            max_bytes: 4 << 20,
            max_depth: 32,
        }
    }
}

/// An element with its attributes, children and concatenated text.
#[derive(Clone, Debug, Default)]
pub struct Element {
    /// Its name.
    pub name: String,
    /// Where its start tag is.
    pub pos: Pos,
    /// Its attributes, in order.
    pub attrs: Vec<(String, String)>,
    /// Its child elements, in order.
    pub children: Vec<Element>,
    /// All character data directly inside this element, in order.
    pub text: String,
}

impl Element {
    /// The value of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Maps byte offsets of the decoded text to line and column.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn pos(&self, offset: u64) -> Pos {
        let mut end = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        let before = &self.0[..end];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Pos {
            line: u32::try_from(before.matches('\n').count() + 1).unwrap_or(u32::MAX),
            col: u32::try_from(before[line_start..].chars().count() + 1).unwrap_or(u32::MAX),
        }
    }
}

/// Parses `text` into its root element.
pub(crate) fn parse(text: &str, limits: &Limits) -> Result<Element, ParseError> {
    let lines = Lines(text);
    // quick-xml does not check XML's Char production; a control character is not well-formed,
    // and a document that has one could not be written back.
    if let Some((at, ch)) = text.char_indices().find(|(_, c)| !is_xml_char(*c)) {
        return Err(ParseError {
            pos: lines.pos(at as u64),
            kind: ErrorKind::IllegalChar(ch),
        });
    }
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let at = lines.pos(reader.buffer_position());
        let err = |kind| ParseError { pos: at, kind };
        let event = reader.read_event().map_err(|e| ParseError {
            pos: lines.pos(reader.error_position()),
            kind: ErrorKind::Malformed(e.to_string()),
        })?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(err(ErrorKind::TrailingContent))
            }
            Event::Start(ref start) | Event::Empty(ref start) => {
                if stack.len() >= limits.max_depth {
                    return Err(err(ErrorKind::TooDeep {
                        limit: limits.max_depth,
                    }));
                }
                let mut element = Element {
                    name: start.name().into_inner().to_owned(),
                    pos: at,
                    ..Element::default()
                };
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| err(ErrorKind::Malformed(e.to_string())))?;
                    let value = attr
                        .normalized_value(XmlVersion::Explicit1_0)
                        .map_err(|e| err(entity_error(&e.to_string())))?;
                    element
                        .attrs
                        .push((attr.key.into_inner().to_owned(), value.into_owned()));
                }
                if matches!(event, Event::Empty(_)) {
                    close(element, &mut stack, &mut root);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                // check_end_names guarantees the stack is not empty and the names match.
                if let Some(element) = stack.pop() {
                    close(element, &mut stack, &mut root);
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(open) => open.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None if root.is_some() => return Err(err(ErrorKind::TrailingContent)),
                    None => {
                        return Err(err(ErrorKind::Malformed(
                            "text before the root element".into(),
                        )))
                    }
                }
            }
            Event::CData(c) => match stack.last_mut() {
                Some(open) => open.text.push_str(&c.xml10_content()),
                None => return Err(err(ErrorKind::Malformed("CDATA outside the root".into()))),
            },
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(ch)) if is_xml_char(ch) => ch,
                        _ => return Err(err(ErrorKind::BadCharRef(r.to_string()))),
                    }
                } else {
                    match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(err(ErrorKind::UnknownEntity(other.to_owned()))),
                    }
                };
                match stack.last_mut() {
                    Some(open) => open.text.push(ch),
                    None => {
                        return Err(err(ErrorKind::Malformed(
                            "reference outside the root".into(),
                        )))
                    }
                }
            }
            // Entities are never expanded, so a DTD that declares any is refused outright:
            // that is what makes a "billion laughs" document fail at once.
            Event::DocType(d) if d.xml10_content().contains("<!ENTITY") => {
                return Err(err(ErrorKind::EntityDeclaration))
            }
            Event::DocType(_) | Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(err(ErrorKind::Malformed(format!(
                        "document ends inside <{}>",
                        open.name
                    ))));
                }
                return root.ok_or(ParseError {
                    pos: at,
                    kind: ErrorKind::Empty,
                });
            }
        }
    }
}

fn close(element: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

/// quick-xml reports an unknown entity in an attribute as an escape error; name it plainly.
fn entity_error(message: &str) -> ErrorKind {
    ErrorKind::Malformed(message.to_owned())
}

/// Whether XML 1.0 allows `ch` in a document at all (its production `Char`).
pub fn is_xml_char(ch: char) -> bool {
    matches!(ch, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(s: &str) -> Result<Element, ParseError> {
        parse(s, &Limits::default())
    }

    #[test]
    fn builds_elements_text_and_attributes() {
        let root =
            tree("<?xml version=\"1.0\"?>\n<a x=\"1 &amp; 2\">\n <b>t&lt;&#233;&#x41;</b><c/></a>")
                .unwrap();
        assert_eq!(root.name, "a");
        assert_eq!(root.attr("x"), Some("1 & 2"));
        assert_eq!(root.children[0].text, "t<éA");
        assert_eq!(root.children[1].name, "c");
        assert_eq!(root.children[0].pos, Pos { line: 3, col: 2 });
    }

    #[test]
    fn refuses_entity_declarations_and_unknown_entities() {
        let bomb = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]>\n<a>&lol2;</a>";
        assert_eq!(tree(bomb).unwrap_err().kind, ErrorKind::EntityDeclaration);
        let e = tree("<a>\n&nbsp;</a>").unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownEntity("nbsp".into()));
        assert_eq!(e.pos, Pos { line: 2, col: 1 });
        assert!(matches!(
            tree("<a>&#1;</a>").unwrap_err().kind,
            ErrorKind::BadCharRef(_)
        ));
    }

    #[test]
    fn limits_depth() {
        let deep = "<a>".repeat(40) + &"</a>".repeat(40);
        assert_eq!(
            tree(&deep).unwrap_err().kind,
            ErrorKind::TooDeep { limit: 32 }
        );
    }

    #[test]
    fn malformed_documents_say_where() {
        let e = tree("<a>\n  <b></c></a>").unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Malformed(_)), "{e}");
        assert_eq!(e.pos.line, 2);
        assert_eq!(tree("").unwrap_err().kind, ErrorKind::Empty);
        assert!(tree("<a></a><b/>").is_err());
        assert!(tree("<a>").is_err());
        assert!(tree("junk<a/>").is_err());
        let e = tree("<a>\n x\u{16}</a>").unwrap_err();
        assert_eq!(e.to_string(), "2:3: character U+0016 is not allowed in XML");
    }
}
