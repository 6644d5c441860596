//! The Survivor fix-module protocol: its documents, return codes and option schema.
//!
//! A runner writes a [`FixData`] request on a fix module's stdin and reads a [`FixResult`] from
//! its stdout; [`CheckData`] and [`CheckResult`] are the same for check modules. Every document
//! can be read leniently ([`Document::parse`]: the meaning must be clear, deviations are
//! listed), validated strictly against the DTD ([`Document::validate`]), and written
//! ([`Document::to_xml`]) in the dialect the original Perl module library reads.
//!
//! This crate does no I/O beyond parsing.
#![warn(missing_docs)]

pub mod argspec;
mod check;
mod decode;
mod document;
mod error;
mod fix_data;
mod fix_result;
pub mod options;
mod return_code;
mod tree;
mod write;

pub use check::{CheckData, CheckResult, CheckResultVersion};
pub use document::{Document, Invalid, Parsed};
pub use error::{Deviation, DeviationKind, ErrorKind, ParseError, Pos, WriteError};
pub use fix_data::FixData;
pub use fix_result::FixResult;
pub use options::{ModuleOption, Options};
pub use return_code::{OutOfRange, ReturnCode};
pub use tree::{is_xml_char, Limits};
