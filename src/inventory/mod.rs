//! The inventory resolved for use: host selection and per-host variables.

pub mod edit;
pub mod select;
pub mod vars;
