//! `SurvivorFixData`: the request a runner writes on a fix module's stdin.

use crate::document::{check_root, children, number, options, sealed, Document, Need, Slot};
use crate::error::{Deviation, ParseError, WriteError};
use crate::tree::Element;
use crate::write::{self, Writer};
use crate::Options;

/// The request for one fix: an optional timeout and the module's options.
///
/// There is no Host element (unlike `SurvivorCheckData`): host and service reach a module as the
/// environment variables `DISCO_HOST` and `DISCO_SERVICE`, so that original Perl modules, which
/// reject options they do not declare, keep working.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FixData {
    /// Seconds the module has to finish, if the runner says.
    pub timeout: Option<u64>,
    /// The module's options.
    pub options: Options,
}

const SLOTS: &[Slot] = &[
    Slot {
        name: "Timeout",
        alias: Some("TimeOut"),
        need: Need::Optional,
    },
    Slot::new("ModuleOption", Need::Many),
];

impl sealed::FromTree for FixData {
    const ROOT: &'static str = "SurvivorFixData";

    fn from_tree(root: &Element, dev: &mut Vec<Deviation>) -> Result<Self, ParseError> {
        check_root(root, &["1.0"], "1.0", dev);
        let found = children(root, SLOTS, "Timeout, ModuleOption*", dev)?;
        let timeout = match found[0].first() {
            Some(el) => Some(number(el, "Timeout", dev)?),
            None => None,
        };
        Ok(FixData {
            timeout,
            options: options(&found[1], dev)?,
        })
    }
}

impl Document for FixData {
    fn to_xml(&self) -> Result<Vec<u8>, WriteError> {
        let mut w = Writer::new(<Self as sealed::FromTree>::ROOT, "1.0");
        if let Some(t) = self.timeout {
            w.leaf("Timeout", &t.to_string())?;
        }
        write::options(&mut w, &self.options)?;
        Ok(w.finish(<Self as sealed::FromTree>::ROOT))
    }
}
