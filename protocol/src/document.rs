//! What every protocol document shares: reading (lenient, with deviations), strict validation,
//! and the content-model walk that both use.

use std::fmt;

use crate::decode::decode;
use crate::error::{Deviation, DeviationKind, ErrorKind, ParseError, Pos, WriteError};
use crate::tree::{self, Element, Limits};
use crate::{Options, ReturnCode};

/// A document read leniently, with what was forgiven.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed<T> {
    /// The document.
    pub doc: T,
    /// Deviations from the DTD and the protocol that did not obscure the meaning.
    pub deviations: Vec<Deviation>,
}

/// A document that strict validation refused: every finding, in document order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    /// The findings, each with its place.
    pub findings: Vec<Deviation>,
    /// The parse error, when the document could not be read at all.
    pub error: Option<ParseError>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = self.lines().into_iter();
        if let Some(first) = lines.next() {
            f.write_str(&first)?;
        }
        for line in lines {
            write!(f, "\n{line}")?;
        }
        Ok(())
    }
}

impl Invalid {
    /// One `line:col: what is wrong` a finding, the parse error (if any) last.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.findings.iter().map(ToString::to_string).collect();
        lines.extend(self.error.iter().map(ToString::to_string));
        lines
    }
}

pub(crate) mod sealed {
    /// Mapping from the element tree; kept private so the tree type stays internal.
    pub trait FromTree: Sized {
        const ROOT: &'static str;
        fn from_tree(
            root: &crate::tree::Element,
            dev: &mut Vec<crate::Deviation>,
        ) -> Result<Self, crate::ParseError>;
    }
}

/// A document of the protocol: read it leniently or strictly, and write it.
pub trait Document: sealed::FromTree {
    /// Reads a document leniently with the default [`Limits`]: the meaning must be clear, and
    /// what was forgiven comes back as deviations.
    fn parse(bytes: &[u8]) -> Result<Parsed<Self>, ParseError> {
        Self::parse_with(bytes, &Limits::default())
    }

    /// Reads a document leniently under `limits`.
    fn parse_with(bytes: &[u8], limits: &Limits) -> Result<Parsed<Self>, ParseError> {
        let mut deviations = Vec::new();
        let root = read_tree(bytes, limits, &mut deviations)?;
        if root.name != Self::ROOT {
            return Err(ParseError {
                pos: root.pos,
                kind: ErrorKind::WrongRoot {
                    found: root.name,
                    expected: Self::ROOT,
                },
            });
        }
        let doc = Self::from_tree(&root, &mut deviations)?;
        deviations.sort_by_key(|d| d.pos);
        Ok(Parsed { doc, deviations })
    }

    /// Validates a document strictly against the DTD and the protocol: any deviation is a
    /// finding.
    fn validate(bytes: &[u8]) -> Result<Self, Invalid> {
        match Self::parse(bytes) {
            Ok(Parsed { doc, deviations }) if deviations.is_empty() => Ok(doc),
            Ok(Parsed { deviations, .. }) => Err(Invalid {
                findings: deviations,
                error: None,
            }),
            Err(error) => Err(Invalid {
                findings: Vec::new(),
                error: Some(error),
            }),
        }
    }

    /// Writes the document in the dialect the original module library reads.
    fn to_xml(&self) -> Result<Vec<u8>, WriteError>;
}

/// Bytes to the root element, within the limits.
fn read_tree(
    bytes: &[u8],
    limits: &Limits,
    dev: &mut Vec<Deviation>,
) -> Result<Element, ParseError> {
    if bytes.len() > limits.max_bytes {
        return Err(ParseError {
            pos: Pos { line: 1, col: 1 },
            kind: ErrorKind::TooLarge {
                size: bytes.len(),
                limit: limits.max_bytes,
            },
        });
    }
    let text = decode(bytes, dev)?;
    tree::parse(&text, limits)
}

/// How often a child may appear.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Exactly once; missing is an error.
    One,
    /// Exactly once by the DTD, but missing is forgiven (taken as empty) with a deviation.
    OneForgiven,
    /// Zero or one.
    Optional,
    /// Zero or more.
    Many,
    /// One or more.
    OneOrMore,
}

/// One child in a content model, in DTD order.
pub(crate) struct Slot {
    pub name: &'static str,
    /// Another spelling accepted with a deviation (the C++ scheduler's `TimeOut`).
    pub alias: Option<&'static str>,
    pub need: Need,
}

impl Slot {
    pub const fn new(name: &'static str, need: Need) -> Slot {
        Slot {
            name,
            alias: None,
            need,
        }
    }
}

/// Checks the root's attributes: `Version` in `versions`, nothing else; returns the version.
pub(crate) fn check_root<'a>(
    root: &'a Element,
    versions: &'static [&'static str],
    expected: &'static str,
    dev: &mut Vec<Deviation>,
) -> Option<&'a str> {
    let version = root.attr("Version");
    match version {
        None => dev.push(Deviation {
            pos: root.pos,
            kind: DeviationKind::MissingVersion(root.name.clone()),
        }),
        Some(v) if !versions.contains(&v) => dev.push(Deviation {
            pos: root.pos,
            kind: DeviationKind::UnknownVersion {
                element: root.name.clone(),
                found: v.to_owned(),
                expected,
            },
        }),
        Some(_) => {}
    }
    unexpected_attrs(root, &["Version"], dev);
    version
}

fn unexpected_attrs(el: &Element, allowed: &[&str], dev: &mut Vec<Deviation>) {
    for (k, _) in &el.attrs {
        if !allowed.contains(&k.as_str()) {
            dev.push(Deviation {
                pos: el.pos,
                kind: DeviationKind::UnexpectedAttribute {
                    element: el.name.clone(),
                    attr: k.clone(),
                },
            });
        }
    }
}

/// Walks `parent`'s children against `slots` (the DTD's sequence): one list per slot.
pub(crate) fn children<'a>(
    parent: &'a Element,
    slots: &[Slot],
    order: &'static str,
    dev: &mut Vec<Deviation>,
) -> Result<Vec<Vec<&'a Element>>, ParseError> {
    let mut found: Vec<Vec<&Element>> = slots.iter().map(|_| Vec::new()).collect();
    let mut last = 0;
    if !parent.text.trim().is_empty() {
        dev.push(Deviation {
            pos: parent.pos,
            kind: DeviationKind::UnexpectedText(parent.name.clone()),
        });
    }
    for child in &parent.children {
        let index = slots.iter().position(|s| s.name == child.name);
        let index = index.or_else(|| {
            let i = slots.iter().position(|s| s.alias == Some(&child.name))?;
            dev.push(Deviation {
                pos: child.pos,
                kind: DeviationKind::TimeOutSpelling,
            });
            Some(i)
        });
        let Some(index) = index else {
            dev.push(Deviation {
                pos: child.pos,
                kind: DeviationKind::UnexpectedElement {
                    parent: parent.name.clone(),
                    child: child.name.clone(),
                },
            });
            continue;
        };
        if index < last {
            dev.push(Deviation {
                pos: child.pos,
                kind: DeviationKind::OutOfOrder {
                    parent: parent.name.clone(),
                    child: child.name.clone(),
                    expected: order,
                },
            });
        }
        last = last.max(index);
        found[index].push(child);
    }
    for (slot, els) in slots.iter().zip(&found) {
        let repeatable = matches!(slot.need, Need::Many | Need::OneOrMore);
        if els.len() > 1 && !repeatable {
            return Err(ParseError {
                pos: els[1].pos,
                kind: ErrorKind::Duplicate {
                    parent: parent.name.clone(),
                    child: slot.name.to_owned(),
                },
            });
        }
        if els.is_empty() {
            match slot.need {
                Need::One | Need::OneOrMore => {
                    return Err(ParseError {
                        pos: parent.pos,
                        kind: ErrorKind::MissingElement {
                            parent: parent.name.clone(),
                            child: slot.name,
                        },
                    })
                }
                Need::OneForgiven => dev.push(Deviation {
                    pos: parent.pos,
                    kind: DeviationKind::MissingElement {
                        parent: parent.name.clone(),
                        child: slot.name,
                    },
                }),
                Need::Optional | Need::Many => {}
            }
        }
    }
    Ok(found)
}

/// The text of a leaf, with a deviation for any element inside it.
pub(crate) fn text<'a>(el: &'a Element, dev: &mut Vec<Deviation>) -> &'a str {
    for child in &el.children {
        dev.push(Deviation {
            pos: child.pos,
            kind: DeviationKind::UnexpectedElement {
                parent: el.name.clone(),
                child: child.name.clone(),
            },
        });
    }
    unexpected_attrs(el, &[], dev);
    &el.text
}

/// A non-negative integer leaf (Timeout, Duration).
pub(crate) fn number(
    el: &Element,
    name: &'static str,
    dev: &mut Vec<Deviation>,
) -> Result<u64, ParseError> {
    let raw = text(el, dev);
    let trimmed = raw.trim();
    if trimmed.len() != raw.len() && !trimmed.is_empty() {
        dev.push(Deviation {
            pos: el.pos,
            kind: DeviationKind::PaddedNumber(name),
        });
    }
    trimmed.parse().map_err(|_| ParseError {
        pos: el.pos,
        kind: ErrorKind::BadNumber {
            element: name,
            text: raw.to_owned(),
        },
    })
}

/// A ReturnCode leaf, checked against what `who` ("fix" or "check") may return.
pub(crate) fn return_code(
    el: &Element,
    who: &'static str,
    dev: &mut Vec<Deviation>,
) -> Result<ReturnCode, ParseError> {
    let raw = text(el, dev);
    let trimmed = raw.trim();
    if trimmed.len() != raw.len() && !trimmed.is_empty() {
        dev.push(Deviation {
            pos: el.pos,
            kind: DeviationKind::PaddedNumber("ReturnCode"),
        });
    }
    let value: i64 = trimmed.parse().map_err(|_| ParseError {
        pos: el.pos,
        kind: ErrorKind::ReturnCodeNotInteger(raw.to_owned()),
    })?;
    let code = ReturnCode::new(value).map_err(|_| ParseError {
        pos: el.pos,
        kind: ErrorKind::ReturnCodeOutOfRange(value),
    })?;
    let allowed = match who {
        "fix" => code.fix_module_may_return(),
        _ => code.check_module_may_return(),
    };
    if !allowed {
        dev.push(Deviation {
            pos: el.pos,
            kind: DeviationKind::ReturnCodeNotForModule { code, who },
        });
    }
    Ok(code)
}

/// `ModuleOption` elements to options; repeated names collect their values.
pub(crate) fn options(els: &[&Element], dev: &mut Vec<Deviation>) -> Result<Options, ParseError> {
    const SLOTS: &[Slot] = &[Slot::new("OptionValue", Need::Many)];
    let mut options = Options::new();
    for el in els {
        let name = el.attr("OptionName").ok_or_else(|| ParseError {
            pos: el.pos,
            kind: ErrorKind::MissingAttribute {
                element: el.name.clone(),
                attr: "OptionName",
            },
        })?;
        unexpected_attrs(el, &["OptionName"], dev);
        if !crate::options::is_valid_option_name(name) {
            dev.push(Deviation {
                pos: el.pos,
                kind: DeviationKind::BadOptionName(name.to_owned()),
            });
        } else if crate::options::is_reserved_option_name(name) {
            dev.push(Deviation {
                pos: el.pos,
                kind: DeviationKind::ReservedOptionName(name.to_owned()),
            });
        }
        let values = children(el, SLOTS, "OptionValue", dev)?.remove(0);
        if values.len() != 1 {
            dev.push(Deviation {
                pos: el.pos,
                kind: DeviationKind::OptionValueCount {
                    name: name.to_owned(),
                    count: values.len(),
                },
            });
        }
        if values.is_empty() {
            // The Perl library skipped an option with no value; there is nothing to pass on.
            continue;
        }
        for value in values {
            options.push(name, text(value, dev));
        }
    }
    Ok(options)
}
