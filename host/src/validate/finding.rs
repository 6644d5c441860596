//! One thing a module gets wrong: the rule it breaks, what is wrong, and where.

use std::fmt;

/// A rule broken, `RULE N: what is wrong (where)` when printed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The rule of the Survivor fix module specification (`1`...`9`, `4.2`, `4.3`), or `ball`
    /// for the layout of a disco ball.
    pub rule: &'static str,
    /// What is wrong, one line.
    pub what: String,
    /// The file (and, where it helps, the line) at fault.
    #[serde(rename = "where")]
    pub place: String,
}

impl Finding {
    /// A finding of `rule` at `place`.
    pub fn new(rule: &'static str, what: impl Into<String>, place: impl fmt::Display) -> Finding {
        Finding {
            rule,
            what: what.into(),
            place: place.to_string(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever a module wrote into a comment.
        let what = self.what.replace(['\n', '\r'], " ");
        write!(f, "RULE {}: {what} ({})", self.rule, self.place)
    }
}
