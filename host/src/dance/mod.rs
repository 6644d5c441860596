//! `disco dance`: the stages of one run, one module each, named after the stage.
//!
//! `fetch` (parameters and modules, local or rsync) → `order` (`requires`, topological) →
//! `layers` (scratch layers per module, the kept modules' folded layer, the disco layer) →
//! `sandbox` (the dance's one sandbox: per module, its templates, then its files and scripts,
//! through the fix-module host (`pieces`, `deliver`) in roots of their own; its diff) →
//! `report`. `exec` builds requests and runs the deferred commands; `run` drives them all.

pub mod deliver;
mod error;
pub mod exec;
pub mod fetch;
mod gather;
pub mod html;
pub mod layers;
mod live;
mod module;
pub mod order;
pub mod pieces;
mod progress;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod schema;

pub use error::DanceError;
pub use gather::client_value;
pub use run::{dance, DanceOptions};
