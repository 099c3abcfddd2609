//! The serde-free model of the files on disk: YAML nodes with locations, and the typed
//! inventory, roles, playbooks and tasks decoded from them.

pub mod block;
pub mod decode;
pub mod inventory;
pub mod module;
pub mod playbook;
pub mod role;
pub mod task;
pub mod yaml;
