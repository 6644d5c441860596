//! `disco dance`: the stages of one run, one module each, named after the stage.
//!
//! `fetch` (parameters and modules, local or rsync) → `order` (`requires`, topological) →
//! `layers` (scratch layers stacked per module, the disco layer) → `exec` (each template,
//! delivery and script through the fix-module host in the module's sandbox; `deliver` runs
//! inside) → the module's diff → `report`. `run` drives them.

pub mod deliver;
mod error;
pub mod exec;
pub mod fetch;
pub mod layers;
pub mod order;
pub mod pieces;
pub mod report;
pub mod run;
pub mod worker;

pub use error::DanceError;
pub use run::{dance, DanceOptions};
