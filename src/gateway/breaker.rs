//! A circuit breaker per upstream: after `failures` consecutive failures an upstream is left
//! alone for `cooldown`; then one request probes it (half-open): success closes the breaker,
//! failure opens it for another cooldown. Requests never wait on a cooling upstream: they go
//! to the next candidate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What the breaker allows for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: go ahead.
    Yes,
    /// Half-open: this request is the one probe; report its outcome.
    Probe,
    /// Open (cooling down) or a probe is already out: skip this upstream.
    No,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { fails: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// An upstream's breaker as `fleet status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct View {
    /// `closed`, `open` or `half-open`.
    pub state: &'static str,
    /// Consecutive failures (closed), or seconds left of the cooldown (open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Seconds until a probe is allowed (open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_left_secs: Option<f64>,
}

/// The breakers of every upstream.
#[derive(Debug)]
pub struct Breakers {
    states: Mutex<HashMap<String, State>>,
    failures: u32,
    cooldown: Duration,
}

impl Breakers {
    /// Breakers that open after `failures` consecutive failures for `cooldown`.
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Breakers {
            states: Mutex::new(HashMap::new()),
            failures: failures.max(1),
            cooldown,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, State>) -> T) -> T {
        match self.states.lock() {
            Ok(mut m) => f(&mut m),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// May a request go to `upstream` now?
    pub fn admit(&self, upstream: &str, now: Instant) -> Admit {
        self.with(|m| {
            let Some(s) = m.get_mut(upstream) else {
                return Admit::Yes;
            };
            match *s {
                State::Closed { .. } => Admit::Yes,
                State::Open { until } if now >= until => {
                    *s = State::HalfOpen { probing: true };
                    Admit::Probe
                }
                State::Open { .. } | State::HalfOpen { probing: true } => Admit::No,
                State::HalfOpen { probing: false } => {
                    *s = State::HalfOpen { probing: true };
                    Admit::Probe
                }
            }
        })
    }

    /// The upstream answered: the breaker closes.
    pub fn success(&self, upstream: &str) {
        self.with(|m| {
            if m.contains_key(upstream) {
                m.insert(upstream.to_string(), State::Closed { fails: 0 });
            }
        });
    }

    /// The upstream failed; true when this opened its breaker.
    pub fn failure(&self, upstream: &str, now: Instant) -> bool {
        let (failures, cooldown) = (self.failures, self.cooldown);
        self.with(|m| {
            let s = m
                .entry(upstream.to_string())
                .or_insert(State::Closed { fails: 0 });
            match *s {
                State::Closed { fails } if fails + 1 < failures => {
                    *s = State::Closed { fails: fails + 1 };
                    false
                }
                _ => {
                    *s = State::Open {
                        until: now + cooldown,
                    };
                    true
                }
            }
        })
    }

    /// A probe ended without a verdict (e.g. the request was not sent): the next request may
    /// probe.
    pub fn abandon_probe(&self, upstream: &str) {
        self.with(|m| {
            if let Some(s @ State::HalfOpen { probing: true }) = m.get_mut(upstream) {
                *s = State::HalfOpen { probing: false };
            }
        });
    }

    /// The breaker of `upstream` as shown to people.
    pub fn view(&self, upstream: &str, now: Instant) -> View {
        self.with(|m| match m.get(upstream) {
            None | Some(State::Closed { fails: 0 }) => View {
                state: "closed",
                consecutive_failures: None,
                cooldown_left_secs: None,
            },
            Some(State::Closed { fails }) => View {
                state: "closed",
                consecutive_failures: Some(*fails),
                cooldown_left_secs: None,
            },
            Some(State::Open { until }) if now < *until => View {
                state: "open",
                consecutive_failures: None,
                cooldown_left_secs: Some(until.duration_since(now).as_secs_f64()),
            },
            Some(_) => View {
                state: "half-open",
                consecutive_failures: None,
                cooldown_left_secs: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_probes_once() {
        let b = Breakers::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(!b.failure("n", t0));
        assert!(!b.failure("n", t0));
        assert_eq!(b.admit("n", t0), Admit::Yes);
        assert!(b.failure("n", t0), "the third failure opens it");
        assert_eq!(b.admit("n", t0 + Duration::from_secs(9)), Admit::No);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.admit("n", later), Admit::Probe);
        assert_eq!(b.admit("n", later), Admit::No, "one probe at a time");
        assert!(b.failure("n", later), "a failed probe opens it again");
        assert_eq!(b.admit("n", later + Duration::from_secs(1)), Admit::No);
        let again = later + Duration::from_secs(10);
        assert_eq!(b.admit("n", again), Admit::Probe);
        b.success("n");
        assert_eq!(b.admit("n", again), Admit::Yes);
        assert_eq!(b.view("n", again).state, "closed");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breakers::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(!b.failure("n", t0));
        b.success("n");
        assert!(
            !b.failure("n", t0),
            "one failure after a success is not two in a row"
        );
        assert_eq!(b.view("n", t0).consecutive_failures, Some(1));
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_one_through() {
        let b = Breakers::new(1, Duration::ZERO);
        let t0 = Instant::now();
        assert!(b.failure("n", t0));
        assert_eq!(b.admit("n", t0), Admit::Probe);
        b.abandon_probe("n");
        assert_eq!(b.admit("n", t0), Admit::Probe);
    }
}
