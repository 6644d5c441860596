//! What a sandboxed run changed: walk each overlay upper layer against its lower layer and report
//! every created, modified and deleted path, with attributes and a normal-`diff` of contents, in
//! the original disco's `disco-fs-diff` format or as JSON lines.
//!
//! [`compute`] does the work; [`render_text`] and [`render_json`] print it. The upper layers must
//! come from overlays mounted with `redirect_dir=off,metacopy=off,index=off`, so they hold only
//! full copies, directories, links, special files, whiteouts and opaque directories.

mod compare;
mod content;
mod entry;
mod error;
mod meta;
mod render;
mod walk;

pub use compare::{between, compute, summary, Restored};
pub use content::{is_binary, normal_diff};
pub use entry::{Change, ChangeKind, Content, DiffOptions, FileType, Layer, Meta};
pub use error::DiffError;
pub use meta::{is_opaque, is_whiteout};
pub use render::{content_text, escape, header, render_json, render_text};
