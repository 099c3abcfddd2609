//! `--step`: before each task the user says `y` (run it), `n` (skip it) or `c` (run it and
//! every task after it without asking). Asked once per task for every host of the run: the
//! first host to reach a task asks, the others wait for the answer and follow it.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use crate::engine::batch_shared::task_key;
use crate::spec::task::Task;

/// An answer to "run this task?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Run it.
    Yes,
    /// Skip it.
    No,
    /// Run it and everything after it.
    Continue,
}

/// Reads an answer as typed (`y`, `yes`, `n`, `no`, `c`, `continue`; any case).
pub fn parse_answer(line: &str) -> Option<Answer> {
    match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Some(Answer::Yes),
        "n" | "no" => Some(Answer::No),
        "c" | "continue" => Some(Answer::Continue),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Answers {
    go_on: bool,
    decided: HashMap<String, bool>,
}

/// The answers of one run.
#[derive(Debug, Default)]
pub struct Steps {
    answers: tokio::sync::Mutex<Answers>,
}

impl Steps {
    /// Whether `task` runs: asked on the terminal the first time, remembered after.
    pub async fn allow(&self, task: &Task) -> bool {
        // Held while asking: one question at a time, and the other hosts wait for it.
        let mut a = self.answers.lock().await;
        if a.go_on {
            return true;
        }
        let key = task_key(task);
        if let Some(&yes) = a.decided.get(&key) {
            return yes;
        }
        let prompt = format!("run task `{}`? [y]es / [n]o / [c]ontinue: ", task.name);
        let answer = tokio::task::spawn_blocking(move || ask(&prompt))
            .await
            .unwrap_or(Answer::No);
        let yes = answer != Answer::No;
        a.go_on = answer == Answer::Continue;
        a.decided.insert(key, yes);
        yes
    }
}

/// Asks on stderr, reads stdin (a terminal: `apply --step` refuses to start otherwise) until
/// an answer; the end of input is `n`.
fn ask(prompt: &str) -> Answer {
    let stdin = std::io::stdin();
    loop {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => return Answer::No,
            Ok(_) => {
                if let Some(a) = parse_answer(&line) {
                    return a;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(parse_answer("y\n"), Some(Answer::Yes));
        assert_eq!(parse_answer(" NO "), Some(Answer::No));
        assert_eq!(parse_answer("c"), Some(Answer::Continue));
        assert_eq!(parse_answer("maybe"), None);
        assert_eq!(parse_answer(""), None);
    }
}
