//! Secrets: values fleet must never print. Two mechanisms, both applied everywhere output is
//! made:
//!
//! - **Taint, by type.** A value whose rendering *read* a secret (called `env()`, read a
//!   variable marked `secret: true`, a loop item of a secret list, a registered result of a
//!   secret task) is secret as a whole, whatever the template did to it (`| upper`,
//!   concatenation, several lines, quotes). Such a value is carried as [`Rendered`] with its
//!   printable twin `***`, or as a [`Secret`] whose `Debug`, `Display` and `Serialize` print
//!   `***`; printers only ever see the twin.
//! - **Known values.** Every secret value is also remembered ([`remember`]) and masked in any
//!   text a printer shows ([`mask`], [`mask_json`]): a command that echoes a token, an error
//!   message that quotes one.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::RwLock;

use serde_json::Value as J;

/// What every printer shows instead of a secret.
pub const MASK: &str = "***";

/// Known values shorter than this are masked only where they were rendered (taint), not
/// searched for in free text: a two-letter secret would otherwise mask ordinary words.
pub const MIN_SEARCHED_LEN: usize = 3;

/// A value that prints as `***` through `Debug`, `Display` and `Serialize`; only
/// [`Secret::expose`] gives the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(v: T) -> Secret<T> {
        Secret(v)
    }

    /// The value itself, for the one place that must use it (a host script, a header).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> std::fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> serde::Serialize for Secret<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

/// A rendered value and the value printers show of it: the same value, or `***` when the
/// rendering read a secret (then any change of the value shows as a change of nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The value the host gets.
    pub value: J,
    /// What printers show: `value` with every secret part replaced by `***`.
    pub shown: J,
}

impl Rendered {
    /// A value that read no secret.
    pub fn plain(value: J) -> Rendered {
        Rendered {
            shown: value.clone(),
            value,
        }
    }

    /// A value from a rendering; `secret` when that rendering read a secret.
    pub fn new(value: J, secret: bool) -> Rendered {
        if secret {
            Rendered {
                value,
                shown: J::String(MASK.into()),
            }
        } else {
            Rendered::plain(value)
        }
    }

    /// True when any part of it is secret.
    pub fn is_secret(&self) -> bool {
        has_mask(&self.shown) && self.shown != self.value
    }
}

fn has_mask(v: &J) -> bool {
    match v {
        J::String(s) => s == MASK,
        J::Array(a) => a.iter().any(has_mask),
        J::Object(m) => m.values().any(has_mask),
        _ => false,
    }
}

thread_local! {
    static READ: Cell<bool> = const { Cell::new(false) };
}

/// Records that the rendering in progress on this thread read a secret.
pub fn note_read() {
    READ.with(|r| r.set(true));
}

/// Runs `f` (a rendering) and tells whether it read a secret. Nested trackings report to
/// their own caller and to the enclosing one.
pub fn tracking<T>(f: impl FnOnce() -> T) -> (T, bool) {
    let outer = READ.with(|r| r.replace(false));
    let v = f();
    let read = READ.with(Cell::get);
    READ.with(|r| r.set(outer || read));
    (v, read)
}

/// Every secret value seen by this process, longest first, with the forms it takes in
/// output (JSON-escaped, each line of a multi-line value).
static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers a secret value, so any text a printer shows has it masked.
pub fn remember(value: &str) {
    let mut forms: Vec<String> = vec![value.to_string()];
    let trimmed = value.trim();
    if trimmed != value {
        forms.push(trimmed.to_string());
    }
    if let Ok(j) = serde_json::to_string(value) {
        let inner = &j[1..j.len() - 1];
        if inner != value {
            forms.push(inner.to_string());
        }
    }
    if value.contains('\n') {
        forms.extend(
            value
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= MIN_SEARCHED_LEN)
                .map(str::to_string),
        );
    }
    let Ok(mut known) = KNOWN.write() else {
        return;
    };
    let mut added = false;
    for f in forms {
        if f.len() >= MIN_SEARCHED_LEN && !known.contains(&f) {
            known.push(f);
            added = true;
        }
    }
    if added {
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// `text` with every known secret value replaced by `***`.
pub fn mask(text: &str) -> Cow<'_, str> {
    let Ok(known) = KNOWN.read() else {
        // A poisoned lock means a panic while remembering: show nothing rather than a secret.
        return Cow::Borrowed(MASK);
    };
    let mut out = Cow::Borrowed(text);
    for k in known.iter() {
        if out.contains(k.as_str()) {
            out = Cow::Owned(out.replace(k.as_str(), MASK));
        }
    }
    out
}

/// Masks every string inside a JSON value (keys included).
pub fn mask_json(v: &mut J) {
    match v {
        J::String(s) => {
            if let Cow::Owned(m) = mask(s) {
                *s = m;
            }
        }
        J::Array(a) => a.iter_mut().for_each(mask_json),
        J::Object(m) => {
            let masked_keys = m.keys().any(|k| matches!(mask(k), Cow::Owned(_)));
            if masked_keys {
                let old = std::mem::take(m);
                for (k, mut val) in old {
                    mask_json(&mut val);
                    m.insert(mask(&k).into_owned(), val);
                }
            } else {
                m.values_mut().for_each(mask_json);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_secret_prints_as_the_mask_everywhere() {
        let s = Secret::new("sk-123".to_string());
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).expect("json"), "\"***\"");
        assert_eq!(s.expose(), "sk-123");
    }

    #[test]
    fn tracking_sees_reads_and_tells_the_enclosing_tracker() {
        let ((_, inner), outer) = tracking(|| {
            tracking(|| {
                note_read();
            })
        });
        assert!(inner && outer);
        let (_, clean) = tracking(|| ());
        assert!(!clean);
    }

    #[test]
    fn known_values_are_masked_in_every_form() {
        remember("tok-\"q\\uote");
        remember("-----BEGIN KEY-----\nAAAAsecretline\n-----END KEY-----\n");
        assert_eq!(mask("x tok-\"q\\uote y"), "x *** y");
        // JSON output escapes the quote and the backslash.
        let j = serde_json::to_string(&json!({"m": "tok-\"q\\uote"})).expect("json");
        assert!(!mask(&j).contains("q\\\\uote"), "{}", mask(&j));
        // A diff shows one line of a multi-line secret at a time.
        assert_eq!(mask("+AAAAsecretline"), "+***");
        let mut v = json!({"a": ["tok-\"q\\uote"], "tok-\"q\\uote": 1});
        mask_json(&mut v);
        assert_eq!(v, json!({"a": ["***"], "***": 1}));
    }

    #[test]
    fn rendered_values_show_their_mask() {
        let r = Rendered::new(json!("abc"), true);
        assert_eq!(r.shown, json!("***"));
        assert!(r.is_secret());
        assert!(!Rendered::new(json!("abc"), false).is_secret());
    }
}
