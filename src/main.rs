//! The `fleet` binary: parse arguments, run, print the one error, exit with its code.

use std::process::ExitCode;

fn main() -> ExitCode {
    fleet::panic::install();
    match fleet::cli::run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let text = fleet::cli::style::error_text(&e);
            if fleet::cli::logs_only_to_file() {
                tracing::error!("{}", text.strip_prefix("error: ").unwrap_or(&text));
            }
            if fleet::cli::journal::stderr_is_journal() {
                // Under systemd: each line an error entry in the journal (`journalctl -p err`).
                for line in text.lines() {
                    fleet::errln!("<3>{line}");
                }
            } else {
                fleet::errln!("{text}");
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
        }
    }
}

// mimalloc: fleet builds and frees large trees (YAML, JSON) for big fleets; the system
// allocator spent a third of `fleet render`'s time on a 10,000-node inventory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
