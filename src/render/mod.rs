//! Generated files: the routing table, the node registry and package manifests, plus the
//! pieces they share (model sizes, output with a drift check).

pub mod catalog;
pub mod output;
pub mod packages;
pub mod registry;
pub mod release;
pub mod routing;
