//! The parameter tree: a directory of keys and values that templates and scripts read with
//! `disco-param`, and that a dance builds by merging module defaults under the source's tree.
//!
//! - `path.rs`: key paths, validated so that nothing reaches outside the tree;
//! - `tree.rs`: reading and writing one tree, and merging several into one;
//! - `dump.rs`: the `dump` lines and the JSON document;
//! - `error.rs`: [`ParamError`].

mod dump;
mod error;
mod path;
mod tree;

pub use dump::{render_dump, DumpEntry};
pub use error::ParamError;
pub use path::{is_valid_component, KeyPath};
pub use tree::{merge, Tree, Value};
