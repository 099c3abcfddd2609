//! The `fleet` binary: parse arguments, run, print the one error, exit with its code.

use std::process::ExitCode;

fn main() -> ExitCode {
    match fleet::cli::run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}", fleet::cli::style::error_text(&e));
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
        }
    }
}
