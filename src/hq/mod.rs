//! HQ: the wire types agents and clients share, and the client other commands use to read
//! live node status.

pub mod client;
pub mod wire;
