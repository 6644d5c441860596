//! What can go wrong reading or writing a document, and what a lenient read forgave.

use std::fmt;

/// A place in a document: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A document that could not be read: where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {kind}")]
pub struct ParseError {
    /// Where the problem was found.
    pub pos: Pos,
    /// What the problem is.
    pub kind: ErrorKind,
}

/// Why a document could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The document is larger than the limit.
    #[error("document is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Size of the document.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// Elements nest deeper than the limit.
    #[error("elements nest deeper than {limit}")]
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// No root element at all.
    #[error("empty document: no root element")]
    Empty,
    /// An encoding this reader does not know.
    #[error("unsupported encoding '{0}' (UTF-8 and ISO-8859-1 are read)")]
    UnsupportedEncoding(String),
    /// The XML is not well-formed.
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// A DTD declares entities; they are never expanded, so the document is refused.
    #[error("entity declarations are not allowed")]
    EntityDeclaration,
    /// A reference to an entity other than the five predefined ones.
    #[error("unknown entity '&{0};'")]
    UnknownEntity(String),
    /// A character reference to a character XML does not allow.
    #[error("character reference '&{0};' is not a legal XML character")]
    BadCharRef(String),
    /// A character XML 1.0 does not allow anywhere (most C0 controls).
    #[error("character U+{:04X} is not allowed in XML", u32::from(*.0))]
    IllegalChar(char),
    /// Text or elements after the root element closed.
    #[error("content after the root element")]
    TrailingContent,
    /// The root element is not the expected one.
    #[error("root element is <{found}>, expected <{expected}>")]
    WrongRoot {
        /// What the document has.
        found: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A required element is missing.
    #[error("<{parent}> has no <{child}>")]
    MissingElement {
        /// The enclosing element.
        parent: String,
        /// The missing child.
        child: &'static str,
    },
    /// An element appears more often than it may, and the meaning is not clear.
    #[error("<{parent}> has more than one <{child}>")]
    Duplicate {
        /// The enclosing element.
        parent: String,
        /// The repeated child.
        child: String,
    },
    /// A required attribute is missing.
    #[error("<{element}> has no {attr} attribute")]
    MissingAttribute {
        /// The element.
        element: String,
        /// The attribute.
        attr: &'static str,
    },
    /// A ReturnCode that is not an integer.
    #[error("ReturnCode '{0}' is not an integer")]
    ReturnCodeNotInteger(String),
    /// A ReturnCode outside 0..=7 and 20..=1000.
    #[error("ReturnCode {0} is out of range (0..=7 or 20..=1000)")]
    ReturnCodeOutOfRange(i64),
    /// A number field (Timeout, Duration...) that is not a number.
    #[error("<{element}> '{text}' is not a non-negative number")]
    BadNumber {
        /// The element.
        element: &'static str,
        /// Its text.
        text: String,
    },
}

/// Something a lenient read forgave, and a strict validation reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deviation {
    /// Where it was seen.
    pub pos: Pos,
    /// What it is.
    pub kind: DeviationKind,
}

impl fmt::Display for Deviation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.kind)
    }
}

/// The kinds of deviation from the DTD and the protocol that a lenient read forgives.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviationKind {
    /// The bytes contradict the declared encoding; they were read as `used`.
    #[error("declared encoding {declared} but the bytes are {used}; read as {used}")]
    EncodingMismatch {
        /// What the declaration says (or UTF-8 by default).
        declared: &'static str,
        /// How the bytes were read.
        used: &'static str,
    },
    /// No `Version` attribute on the root.
    #[error("<{0}> has no Version attribute")]
    MissingVersion(String),
    /// A `Version` this reader does not know.
    #[error("<{element}> Version is '{found}', expected {expected}")]
    UnknownVersion {
        /// The root element.
        element: String,
        /// The version found.
        found: String,
        /// The versions known.
        expected: &'static str,
    },
    /// The C++ scheduler's `<TimeOut>` spelling.
    #[error("<TimeOut> should be spelled <Timeout>")]
    TimeOutSpelling,
    /// An element the DTD does not allow here; it was ignored.
    #[error("unexpected element <{child}> in <{parent}>, ignored")]
    UnexpectedElement {
        /// The enclosing element.
        parent: String,
        /// The stray child.
        child: String,
    },
    /// An attribute the DTD does not allow; it was ignored.
    #[error("unexpected attribute {attr} on <{element}>, ignored")]
    UnexpectedAttribute {
        /// The element.
        element: String,
        /// The attribute.
        attr: String,
    },
    /// Text where only elements are allowed; it was ignored.
    #[error("unexpected text in <{0}>, ignored")]
    UnexpectedText(String),
    /// Children in another order than the DTD's.
    #[error("<{child}> is out of order in <{parent}> (expected {expected})")]
    OutOfOrder {
        /// The enclosing element.
        parent: String,
        /// The misplaced child.
        child: String,
        /// The DTD's order.
        expected: &'static str,
    },
    /// An optional-in-practice element that the DTD requires is missing (an empty Comment).
    #[error("<{parent}> has no <{child}> (taken as empty)")]
    MissingElement {
        /// The enclosing element.
        parent: String,
        /// The missing child.
        child: &'static str,
    },
    /// A ModuleOption with no OptionValue, or several.
    #[error("ModuleOption '{name}' has {count} OptionValue elements, expected exactly one")]
    OptionValueCount {
        /// The option name.
        name: String,
        /// How many OptionValue children it has.
        count: usize,
    },
    /// An option name outside `[A-Za-z0-9_.-]+`.
    #[error("option name '{0}' is not letters, digits, '_', '-' and '.'")]
    BadOptionName(String),
    /// A reserved option name (`module`, names starting with `_`).
    #[error("option name '{0}' is reserved")]
    ReservedOptionName(String),
    /// A ReturnCode this kind of module may not return itself.
    #[error("ReturnCode {code} is not one a {who} module may return itself")]
    ReturnCodeNotForModule {
        /// The code.
        code: crate::ReturnCode,
        /// "fix" or "check".
        who: &'static str,
    },
    /// Whitespace around a number.
    #[error("<{0}> has whitespace around its number")]
    PaddedNumber(&'static str),
}

/// A value that cannot be written as a protocol document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A character that XML 1.0 cannot carry, even as a reference.
    #[error("<{element}> contains U+{:04X}, which XML cannot carry", u32::from(*.ch))]
    IllegalChar {
        /// The element whose text holds it.
        element: &'static str,
        /// The character.
        ch: char,
    },
    /// An option name outside `[A-Za-z0-9_.-]+`, or empty.
    #[error("option name '{0}' is not letters, digits, '_', '-' and '.'")]
    BadOptionName(String),
    /// A ModuleOption with no value.
    #[error("option '{0}' has no value")]
    NoValue(String),
}
