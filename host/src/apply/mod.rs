//! The live merge: a module's scratch layers applied onto the live system, exactly as its diff
//! reported them, atomically per file and crash-safely for the whole.
//!
//! `plan` turns a scratch layer into a list of operations (deletions, directories, files, links,
//! device nodes, hard links) against the live tree. `journal` writes that plan under the state
//! directory before anything is touched. `merge` carries it out in two phases: stage every new
//! file beside the live tree (in a staging folder on the same filesystem) and `syncfs`, then
//! rename each into place in plan order and `syncfs` again. Every operation can be repeated, so
//! a merge interrupted anywhere (SIGKILL, power loss) is finished by replaying its journal from
//! the start: the next `disco` command does that before anything else ([`recover`]).

pub mod deferred;
mod error;
pub mod journal;
pub mod merge;
pub mod plan;

pub use error::ApplyError;
pub use journal::{pending, recover, replay_pending, Journal};
pub use merge::{apply, After, Applied};
pub use plan::{plan, Attrs, Op};
