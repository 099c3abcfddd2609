//! The HQ gateway: an OpenAI-compatible `POST /v1/chat/completions` (and `GET /v1/models`) on
//! `fleet serve` that sends each request to the best free worker of the live routing table,
//! falls back down the rule's chain on failure, and tries the cloud providers last, under the
//! fleet's cost caps. See docs/gateway.md; the cloud side is docs/cloud.md.

pub mod api;
pub mod breaker;
pub mod chat;
pub mod cloud;
pub mod errors;
pub mod ledger;
pub mod metrics;
pub mod prices;
pub mod providers;
pub mod select;
pub mod state;
pub mod upstream;

pub use state::{Gateway, Settings};
