//! fleet: provisioning and fleet management for AI worker machines.
//!
//! The binary is a thin wrapper over [`cli::run`]; tests and HQ use the library directly.

pub mod agent;
pub mod cli;
pub mod connection;
pub mod eligibility;
pub mod engine;
pub mod error;
pub mod facts;
pub mod gateway;
pub mod health;
pub mod hq;
pub mod instance;
pub mod inventory;
pub mod modules;
pub mod panic;
pub mod plan;
pub mod play;
pub mod render;
pub mod repo;
pub mod resources;
pub mod script;
pub mod secret;
pub mod spec;
pub mod template;
pub mod util;
pub mod validate;
pub mod vault;
