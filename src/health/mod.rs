//! Health sweeps (`fleet check`): every node probed concurrently — SSH port, Ollama and its
//! models, the heartbeat HQ holds (age, Docker, disk), Docker, listening sockets and Tailscale over SSH with `--deep` — each
//! probe with its own timeout, so a sweep takes about one timeout whatever the fleet's size.

pub mod alert;
pub mod listen;
pub mod probe;
pub mod sweep;
