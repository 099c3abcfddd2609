//! The inventory resolved for use: host selection, per-host variables, default priorities.

pub mod edit;
pub mod priority;
pub mod select;
pub mod vars;
