//! Generated files: routing priorities (and, with the render issue, the routing table,
//! node registry and package manifests).

pub mod priority;
