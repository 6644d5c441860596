//! `SurvivorCheckData` and `SurvivorCheckResult`, so that check modules can be added.

use crate::document::{
    check_root, children, number, options, return_code, sealed, text, Document, Need, Slot,
};
use crate::error::{Deviation, ParseError, WriteError};
use crate::tree::Element;
use crate::write::{self, Writer};
use crate::{Options, ReturnCode};

/// The request for one check: the hosts to check, an optional timeout, the module's options.
/// Its DTD has one version, 1.0: `(Host+, Timeout?, ModuleOption*)`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CheckData {
    /// Hosts to check, at least one in a valid document.
    pub hosts: Vec<String>,
    /// Seconds the module has to finish.
    pub timeout: Option<u64>,
    /// The module's options.
    pub options: Options,
}

/// The version of a `SurvivorCheckResult`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CheckResultVersion {
    /// 1.0 (deprecated): `(Host?, ReturnCode, Scalar, Comment)`.
    V1_0,
    /// 1.1: `(Host?, ReturnCode, Scalar, Comment, Duration?)`.
    #[default]
    V1_1,
}

impl CheckResultVersion {
    fn as_str(self) -> &'static str {
        match self {
            CheckResultVersion::V1_0 => "1.0",
            CheckResultVersion::V1_1 => "1.1",
        }
    }
}

/// The outcome of a check of one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The document's version.
    pub version: CheckResultVersion,
    /// The host checked, if the module says.
    pub host: Option<String>,
    /// What the check found.
    pub return_code: ReturnCode,
    /// A measured value for graphs and thresholds, kept as written.
    pub scalar: String,
    /// A human-readable explanation.
    pub comment: String,
    /// How long the check took, in milliseconds (1.1 only).
    pub duration_ms: Option<u64>,
}

const DATA_SLOTS: &[Slot] = &[
    Slot::new("Host", Need::OneOrMore),
    Slot {
        name: "Timeout",
        alias: Some("TimeOut"),
        need: Need::Optional,
    },
    Slot::new("ModuleOption", Need::Many),
];

impl sealed::FromTree for CheckData {
    const ROOT: &'static str = "SurvivorCheckData";

    fn from_tree(root: &Element, dev: &mut Vec<Deviation>) -> Result<Self, ParseError> {
        check_root(root, &["1.0"], "1.0", dev);
        let found = children(root, DATA_SLOTS, "Host+, Timeout?, ModuleOption*", dev)?;
        let hosts = found[0].iter().map(|h| text(h, dev).to_owned()).collect();
        let timeout = match found[1].first() {
            Some(el) => Some(number(el, "Timeout", dev)?),
            None => None,
        };
        Ok(CheckData {
            hosts,
            timeout,
            options: options(&found[2], dev)?,
        })
    }
}

impl Document for CheckData {
    fn to_xml(&self) -> Result<Vec<u8>, WriteError> {
        let root = <Self as sealed::FromTree>::ROOT;
        let mut w = Writer::new(root, "1.0");
        for host in &self.hosts {
            w.leaf("Host", host)?;
        }
        if let Some(t) = self.timeout {
            w.leaf("Timeout", &t.to_string())?;
        }
        write::options(&mut w, &self.options)?;
        Ok(w.finish(root))
    }
}

const RESULT_SLOTS: &[Slot] = &[
    Slot::new("Host", Need::Optional),
    Slot::new("ReturnCode", Need::One),
    Slot::new("Scalar", Need::OneForgiven),
    Slot::new("Comment", Need::OneForgiven),
    Slot::new("Duration", Need::Optional),
];

impl sealed::FromTree for CheckResult {
    const ROOT: &'static str = "SurvivorCheckResult";

    fn from_tree(root: &Element, dev: &mut Vec<Deviation>) -> Result<Self, ParseError> {
        let version = match check_root(root, &["1.0", "1.1"], "1.0 or 1.1", dev) {
            Some("1.0") => CheckResultVersion::V1_0,
            _ => CheckResultVersion::V1_1,
        };
        let found = children(
            root,
            RESULT_SLOTS,
            "Host?, ReturnCode, Scalar, Comment, Duration?",
            dev,
        )?;
        let leaf = |i: usize, dev: &mut Vec<Deviation>| {
            found[i].first().map(|el| text(el, dev).to_owned())
        };
        let host = leaf(0, dev);
        let return_code = return_code(found[1][0], "check", dev)?;
        // The C++ reader took a missing Scalar as 0.
        let scalar = leaf(2, dev).unwrap_or_else(|| "0".to_owned());
        let comment = leaf(3, dev).unwrap_or_default();
        let duration_ms = match found[4].first() {
            Some(el) => {
                if version == CheckResultVersion::V1_0 {
                    dev.push(Deviation {
                        pos: el.pos,
                        kind: crate::DeviationKind::UnexpectedElement {
                            parent: format!("{} Version=\"1.0\"", root.name),
                            child: el.name.clone(),
                        },
                    });
                }
                Some(number(el, "Duration", dev)?)
            }
            None => None,
        };
        Ok(CheckResult {
            version,
            host,
            return_code,
            scalar,
            comment,
            duration_ms,
        })
    }
}

impl Document for CheckResult {
    fn to_xml(&self) -> Result<Vec<u8>, WriteError> {
        let root = <Self as sealed::FromTree>::ROOT;
        let mut w = Writer::new(root, self.version.as_str());
        if let Some(host) = &self.host {
            w.leaf("Host", host)?;
        }
        w.leaf("ReturnCode", &self.return_code.value().to_string())?;
        w.leaf("Scalar", &self.scalar)?;
        w.leaf("Comment", &self.comment)?;
        // Version 1.0 has no Duration; writing one would make an invalid document.
        if let (Some(d), CheckResultVersion::V1_1) = (self.duration_ms, self.version) {
            w.leaf("Duration", &d.to_string())?;
        }
        Ok(w.finish(root))
    }
}
