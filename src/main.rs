//! The `fleet` binary: parse arguments, run, print the one error, exit with its code.

use std::process::ExitCode;

fn main() -> ExitCode {
    fleet::panic::install();
    match fleet::cli::run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            fleet::errln!("{}", fleet::cli::style::error_text(&e));
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
        }
    }
}

// mimalloc: fleet builds and frees large trees (YAML, JSON) for big fleets; the system
// allocator spent a third of `fleet render`'s time on a 10,000-node inventory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
