//! Browser sessions for the dashboard: `fleet dashboard` asks HQ (with a client token) for a
//! one-time login code; opening `/login?code=…` trades it for a session cookie. Codes live two
//! minutes and work once; sessions live twelve hours. Both are kept in memory only (a restart
//! logs browsers out) and their number is bounded, so no request can grow them without limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a login code is valid.
pub const CODE_TTL: Duration = Duration::from_secs(120);
/// How long a session is valid.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most codes or sessions kept at once (the oldest go first).
const MAX: usize = 1024;

/// Codes and sessions, by their hash (the secrets themselves are not kept).
#[derive(Debug, Default)]
pub struct Sessions {
    codes: Mutex<HashMap<String, (String, Instant)>>,
    sessions: Mutex<HashMap<String, (String, Instant)>>,
}

fn insert(m: &Mutex<HashMap<String, (String, Instant)>>, key: String, who: String, until: Instant) {
    let Ok(mut m) = m.lock() else { return };
    let now = Instant::now();
    m.retain(|_, (_, u)| *u > now);
    if m.len() >= MAX
        && let Some(oldest) = m
            .iter()
            .min_by_key(|(_, (_, u))| *u)
            .map(|(k, _)| k.clone())
    {
        m.remove(&oldest);
    }
    m.insert(key, (who, until));
}

impl Sessions {
    /// A new one-time login code for the client `who`.
    pub fn new_code(&self, who: &str) -> Result<String, String> {
        let code = crate::hq::tokens::generate()?;
        insert(
            &self.codes,
            crate::hq::tokens::hash(&code),
            who.to_string(),
            Instant::now() + CODE_TTL,
        );
        Ok(code)
    }

    /// Trades a code (once, in time) for a new session secret; the client's name with it.
    pub fn redeem(&self, code: &str) -> Option<(String, String)> {
        let who = {
            let mut m = self.codes.lock().ok()?;
            let (who, until) = m.remove(&crate::hq::tokens::hash(code))?;
            (until > Instant::now()).then_some(who)?
        };
        let secret = crate::hq::tokens::generate().ok()?;
        insert(
            &self.sessions,
            crate::hq::tokens::hash(&secret),
            who.clone(),
            Instant::now() + SESSION_TTL,
        );
        Some((secret, who))
    }

    /// The client a session secret belongs to, while it is valid.
    pub fn session(&self, secret: &str) -> Option<String> {
        let m = self.sessions.lock().ok()?;
        let (who, until) = m.get(&crate::hq::tokens::hash(secret))?;
        (*until > Instant::now()).then(|| who.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once_and_gives_a_session() {
        let s = Sessions::default();
        let code = s.new_code("laptop").expect("code");
        let (secret, who) = s.redeem(&code).expect("redeemed");
        assert_eq!(who, "laptop");
        assert!(s.redeem(&code).is_none(), "a code works once");
        assert_eq!(s.session(&secret).as_deref(), Some("laptop"));
        assert!(s.session("forged").is_none());
        assert!(s.redeem("forged").is_none());
    }

    #[test]
    fn the_number_kept_is_bounded() {
        let s = Sessions::default();
        for _ in 0..(MAX + 10) {
            s.new_code("x").expect("code");
        }
        assert_eq!(s.codes.lock().expect("lock").len(), MAX);
    }
}
