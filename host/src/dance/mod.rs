//! `disco dance`: the stages of one run, one module each, named after the stage.

pub mod order;
