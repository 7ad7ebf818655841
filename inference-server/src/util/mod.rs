//! Small helpers every layer may use; this module imports nothing else from the crate.

pub mod splitmix;
