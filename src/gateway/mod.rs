//! The HQ gateway: an OpenAI-compatible endpoint that routes each request to a worker, and
//! to cloud providers last.

pub mod prices;
pub mod providers;
