//! `SurvivorFixResult`: what a fix module answers on stdout.

use crate::document::{check_root, children, return_code, sealed, text, Document, Need, Slot};
use crate::error::{Deviation, ParseError, WriteError};
use crate::tree::Element;
use crate::write::Writer;
use crate::ReturnCode;

/// The outcome of a fix, as the module reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixResult {
    /// What happened.
    pub return_code: ReturnCode,
    /// A human-readable explanation; may be empty, and may be reformatted or truncated.
    pub comment: String,
}

const SLOTS: &[Slot] = &[
    Slot::new("ReturnCode", Need::One),
    // The C++ writer left empty elements out, so an empty Comment may be missing in the wild.
    Slot::new("Comment", Need::OneForgiven),
];

impl FixResult {
    /// A result with this code and comment.
    pub fn new(return_code: ReturnCode, comment: impl Into<String>) -> FixResult {
        FixResult {
            return_code,
            comment: comment.into(),
        }
    }
}

impl sealed::FromTree for FixResult {
    const ROOT: &'static str = "SurvivorFixResult";

    fn from_tree(root: &Element, dev: &mut Vec<Deviation>) -> Result<Self, ParseError> {
        check_root(root, &["1.0"], "1.0", dev);
        let found = children(root, SLOTS, "ReturnCode, Comment", dev)?;
        let return_code = return_code(found[0][0], "fix", dev)?;
        let comment = found[1].first().map(|el| text(el, dev)).unwrap_or_default();
        Ok(FixResult {
            return_code,
            comment: comment.to_owned(),
        })
    }
}

impl Document for FixResult {
    fn to_xml(&self) -> Result<Vec<u8>, WriteError> {
        let root = <Self as sealed::FromTree>::ROOT;
        let mut w = Writer::new(root, "1.0");
        w.leaf("ReturnCode", &self.return_code.value().to_string())?;
        w.leaf("Comment", &self.comment)?;
        Ok(w.finish(root))
    }
}
