//! HQ: the registry server, its SQLite store, agent tokens, node status, the wire types
//! agents and clients share, the client other commands use to read it, and the worker
//! catalog served on request.

pub mod binary;
pub mod client;
pub mod conductor;
pub mod dashboard;
pub mod discovery;
pub mod drain;
pub mod inflight;
pub mod join;
pub mod listener;
pub mod node_metrics;
pub mod server;
pub mod status;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod wire;
pub mod workers;
