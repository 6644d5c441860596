//! The live merge: a module's scratch layers applied onto the live system, exactly as its diff
//! reported them, atomically per file and crash-safely for the whole, through descriptors that
//! no local user can redirect.
//!
//! - `plan`: a scratch layer as operations, per filesystem, paths relative to its top, in bytes;
//! - `journal`: the plan made durable first, with the identity of the root and of each
//!   filesystem, and the phase the merge reached;
//! - `at`: live paths reached only through descriptors (openat2, no symlinks, no mount crossing);
//! - `staging`: the unpredictable, checked staging folder of each changed filesystem;
//! - `merge`: stage, `syncfs`, rename into place, check every path, `syncfs`; and its replay;
//! - `undo`: what each merge replaced, kept aside, and the record that lets it be undone;
//! - `rollback`: undoing a dance's merges, newest first, through the same discipline;
//! - `recover`: finishing (or setting aside) what a killed dance left, with bounds;
//! - `deferred`: the service commands a live module recorded, run after its merge;
//! - `lock`: one dance per root, whatever the state directory;
//! - `bytes`: paths as bytes in the journal.

pub(crate) mod at;
mod bytes;
pub mod deferred;
mod error;
pub mod journal;
pub mod lock;
pub mod merge;
pub mod plan;
pub mod recover;
pub mod rollback;
pub mod staging;
pub mod undo;

pub use error::ApplyError;
pub use journal::{pending, Journal};
pub use merge::{apply, After, Applied};
pub use plan::{plan, Attrs, Op};
pub use recover::{recover, Mode as RecoverMode};
