//! `become` with a sudo password (`--ask-become-pass`, the `become_password` variable). The
//! password goes to `sudo -S` on its stdin, the only place it travels: never in a command
//! line, the environment or a file on the host. sudo prints a marker prompt when (and only
//! when) it wants the password, and the command it starts prints a ready marker first; fleet
//! answers the first prompt, and a second prompt means the password was refused: fleet stops
//! there (closing sudo's stdin) rather than let script text reach sudo as further attempts,
//! so a wrong password is a prompt failure, never a hang. Where sudo needs no password
//! (NOPASSWD, the login is the account already) the ready marker comes without a prompt.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connection::shell::Spawned;
use crate::connection::{ConnError, ExecOutput, RunAs};
use crate::script::shquote;
use crate::secret::Secret;

/// The prompt sudo is told to print (`-p`): no `%` escapes.
const PROMPT: &str = "__FLEET_SUDO_PASSWORD__";
/// What the command under sudo prints on stderr before anything else.
const READY: &str = "__FLEET_SUDO_READY__";

/// The command line running `inner` as `who` through `sudo -S`, announcing itself first.
pub fn line(inner: &str, who: RunAs<'_>) -> String {
    let announced = format!(
        "sh -c {}",
        shquote(&format!("echo {READY} >&2; exec {inner}"))
    );
    let sudo = |u: &str| format!("sudo -S -p {PROMPT} -H -u {} -- {announced}", shquote(u));
    match who {
        RunAs::Login => announced,
        RunAs::Become { user, login } if login == Some(user) => announced,
        RunAs::Become {
            user,
            login: Some(_),
        } => sudo(user),
        RunAs::Become { user, login: None } => format!(
            "if [ \"$(id -un)\" = {u} ]; then {announced}; else {s}; fi",
            u = shquote(user),
            s = sudo(user)
        ),
    }
}

/// sudo asked again: the password was refused.
pub fn refused(user: &str) -> ExecOutput {
    ExecOutput {
        status: 1,
        stdout: String::new(),
        stderr: format!(
            "fleet: sudo refused the become password for `{user}` (wrong password?); nothing ran as `{user}`"
        ),
    }
}

/// Answers sudo's prompt on a started process; `Ok(None)` when the command under sudo runs
/// (its pipes ready for the caller), `Ok(Some(output))` when sudo refused or ended.
pub async fn handshake(
    p: &mut Spawned,
    password: &Secret<String>,
    user: &str,
    limit: Duration,
) -> Result<Option<ExecOutput>, ConnError> {
    let mut seen = Vec::new();
    let mut prompts = 0;
    let run = async {
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            if text.contains(READY) {
                return Ok(None);
            }
            let asked = text.matches(PROMPT).count();
            if asked > prompts {
                prompts = asked;
                if prompts > 1 {
                    // Refused: no second attempt (its input would be script text).
                    return Ok(Some(refused(user)));
                }
                let mut answer = password.expose().clone().into_bytes();
                answer.push(b'\n');
                p.stdin
                    .write_all(&answer)
                    .await
                    .and(p.stdin.flush().await)
                    .map_err(|e| ConnError::Unreachable(format!("writing to sudo: {e}")))?;
            }
            match p.stderr.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    // sudo ended: say what it said (never the password: it is not echoed).
                    let said = text.replace(PROMPT, "");
                    return Ok(Some(ExecOutput {
                        status: 1,
                        stdout: String::new(),
                        stderr: format!(
                            "fleet: sudo ended before `{user}`'s shell started: {}",
                            said.trim()
                        ),
                    }));
                }
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    match tokio::time::timeout(limit, run).await {
        Ok(r) => r,
        Err(_) => Err(ConnError::Timeout(format!(
            "{} waiting for sudo",
            humantime::format_duration(limit)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sudo: writes each chunk to stderr and, after a chunk with the prompt, reads
    /// one line from its stdin (what it was answered) before the next; returns the answers.
    async fn exchange(chunks: &'static [&'static str]) -> (Option<ExecOutput>, Vec<String>) {
        use tokio::io::AsyncBufReadExt;
        let (stdin, host_in) = tokio::io::duplex(1024);
        let (mut host_err, stderr) = tokio::io::duplex(1024);
        let host = tokio::spawn(async move {
            let mut input = tokio::io::BufReader::new(host_in);
            let mut answers = Vec::new();
            for c in chunks {
                if host_err.write_all(c.as_bytes()).await.is_err() {
                    break;
                }
                if c.contains(PROMPT) {
                    let mut line = String::new();
                    match input.read_line(&mut line).await {
                        Ok(n) if n > 0 => answers.push(line),
                        _ => break,
                    }
                }
            }
            answers
        });
        let mut p = Spawned {
            stdin: Box::pin(stdin),
            stdout: Box::pin(tokio::io::empty()),
            stderr: Box::pin(stderr),
            wait: Box::pin(async { Ok(0) }),
        };
        let pw = Secret::new("hunter2".to_string());
        let r = handshake(&mut p, &pw, "root", Duration::from_secs(5))
            .await
            .expect("no connection error");
        drop(p);
        (r, host.await.expect("fake sudo"))
    }

    #[tokio::test]
    async fn one_prompt_one_answer_then_ready() {
        let (r, answers) = exchange(&["lecture\n", PROMPT, "\n__FLEET_SUDO_READY__\n"]).await;
        assert!(r.is_none());
        assert_eq!(answers, ["hunter2\n"]);
        // No prompt (NOPASSWD): nothing is written.
        let (r, answers) = exchange(&["__FLEET_SUDO_READY__\n"]).await;
        assert!(r.is_none());
        assert!(answers.is_empty());
    }

    #[tokio::test]
    async fn a_second_prompt_is_a_refusal_and_is_not_answered() {
        let (r, answers) = exchange(&[PROMPT, "\nSorry, try again.\n", PROMPT]).await;
        let out = r.expect("refused");
        assert!(
            out.stderr
                .contains("refused the become password for `root`")
        );
        assert_eq!(answers, ["hunter2\n"], "answered once only");
        // sudo ending without the command starting: what sudo said.
        let (r, _) = exchange(&[PROMPT, "\nsudo: pw is not in the sudoers file\n"]).await;
        let out = r.expect("ended");
        assert!(
            out.stderr.contains("not in the sudoers file"),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn lines_announce_and_read_the_password_from_stdin() {
        let svc = RunAs::Become {
            user: "svc",
            login: Some("deploy"),
        };
        let l = line("sh -s", svc);
        assert!(
            l.starts_with("sudo -S -p __FLEET_SUDO_PASSWORD__ -H -u svc -- sh -c "),
            "{l}"
        );
        assert!(
            l.contains("echo __FLEET_SUDO_READY__ >&2; exec sh -s"),
            "{l}"
        );
        let same = RunAs::Become {
            user: "root",
            login: Some("root"),
        };
        assert!(!line("sh -s", same).contains("sudo"));
        let unknown = RunAs::Become {
            user: "root",
            login: None,
        };
        assert!(line("sh -s", unknown).starts_with("if [ \"$(id -un)\" = root ]"));
    }
}
