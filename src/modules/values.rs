//! The kinds of values modules take, checked after templating. Every value still reaches the
//! host as data; these checks refuse what a host tool would read as something else (a name
//! starting with `-` read as an option, a URL that curl would glob, a header with a line
//! break) with an error that says what was expected.

use crate::modules::args::{ArgError, ArgReader};

/// A path on the host: any non-empty text.
pub fn path(a: &ArgReader<'_>, key: &'static str) -> Result<String, ArgError> {
    a.req_nonempty(key)
}

/// An optional path on the host.
pub fn opt_path(a: &ArgReader<'_>, key: &'static str) -> Result<Option<String>, ArgError> {
    match a.str(key)? {
        Some(p) if p.is_empty() => Err(a.invalid(key, "a path")),
        other => Ok(other),
    }
}

/// A user or group: an account name or a numeric id.
pub fn account(a: &ArgReader<'_>, key: &'static str) -> Result<Option<String>, ArgError> {
    let Some(s) = a.str(key)? else {
        return Ok(None);
    };
    let numeric = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if numeric || crate::spec::task::is_account_name(&s) {
        Ok(Some(s))
    } else {
        Err(a.invalid(
            key,
            "an account name (letters, digits, `_`, `.`, `-`, not starting with `-`) or a numeric id",
        ))
    }
}

fn word(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// A package name as apt, dnf, pacman and Homebrew take it (`docker.io`, `python@3.12`,
/// `libc6:amd64`, `pkg=1.2-3`, `homebrew/cask/x`).
pub fn package(a: &ArgReader<'_>, key: &'static str, name: &str) -> Result<(), ArgError> {
    if word(name, "@._+-:=~/") {
        return Ok(());
    }
    let shown = if a.is_secret(key) {
        crate::secret::MASK.to_string()
    } else {
        name.to_string()
    };
    Err(ArgError::arg(
        key,
        format!(
            "module `{}`: `{key}`: `{shown}` is not a package name (letters, digits and `@._+-:=~/`, not starting with `-`)",
            a.module()
        ),
    ))
}

/// A systemd unit name or a launchd label.
pub fn service(a: &ArgReader<'_>, key: &'static str) -> Result<String, ArgError> {
    let s = a.req(key)?;
    if word(&s, "@._:-+\\") {
        Ok(s)
    } else {
        Err(a.invalid(
            key,
            "a unit name or launchd label (letters, digits and `@._:-+\\`, not starting with `-`)",
        ))
    }
}

/// An Ollama model name (`llama3.1:8b`, `namespace/model:tag`).
pub fn model(a: &ArgReader<'_>, key: &'static str) -> Result<String, ArgError> {
    let s = a.req(key)?;
    if word(&s, "._:-/+") {
        Ok(s)
    } else {
        Err(a.invalid(
            key,
            "a model name such as `llama3.1:8b` (letters, digits and `._:-/+`)",
        ))
    }
}

/// An `http://` or `https://` URL without spaces or control characters.
pub fn url(a: &ArgReader<'_>, key: &'static str) -> Result<String, ArgError> {
    let s = a.req(key)?;
    url_text(&s).map(|()| s).map_err(|why| a.invalid(key, why))
}

/// Whether `s` is an http(s) URL fit to stand as one word in any file or script: `Err` says
/// what was expected.
pub fn check_url(s: &str) -> Result<(), &'static str> {
    url_text(s)
}

fn url_text(s: &str) -> Result<(), &'static str> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or("an http:// or https:// URL")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("an http:// or https:// URL with a host");
    }
    // RFC 3986 has no place for these; refusing them keeps a URL one word in any file format
    // it is written into (a unit file, a plist).
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || "\"'`\\<>{}|^".contains(c))
    {
        return Err("a URL without spaces, control characters or \"'`\\<>{}|^");
    }
    Ok(())
}

/// A host name or IP address.
pub fn host(a: &ArgReader<'_>, key: &'static str) -> Result<Option<String>, ArgError> {
    let Some(s) = a.str(key)? else {
        return Ok(None);
    };
    if word(&s, ".-:[]_%") {
        Ok(Some(s))
    } else {
        Err(a.invalid(key, "a host name or IP address"))
    }
}

/// An HTTP header: a token name and a value without line breaks.
pub fn header(
    a: &ArgReader<'_>,
    key: &'static str,
    name: &str,
    value: &str,
) -> Result<(), ArgError> {
    if !word(name, "!#$%&'*+.^_`|~-") {
        return Err(ArgError::arg(
            key,
            format!(
                "module `{}`: `{key}`: `{name}` is not a header name",
                a.module()
            ),
        ));
    }
    if value.contains(['\r', '\n']) {
        return Err(ArgError::arg(
            key,
            format!(
                "module `{}`: `{key}`: the value of `{name}` holds a line break",
                a.module()
            ),
        ));
    }
    Ok(())
}

/// An environment variable name.
pub fn env_name(a: &ArgReader<'_>, key: &'static str, name: &str) -> Result<(), ArgError> {
    if crate::script::is_var_name(name) {
        Ok(())
    } else {
        Err(ArgError::arg(
            key,
            format!(
                "module `{}`: `{key}`: `{name}` is not an environment variable name",
                a.module()
            ),
        ))
    }
}

/// A sha256 checksum as 64 hex digits (any case).
pub fn sha256(a: &ArgReader<'_>, key: &'static str) -> Result<Option<String>, ArgError> {
    let Some(s) = a.str(key)? else {
        return Ok(None);
    };
    let lower = s.trim().to_ascii_lowercase();
    let s = lower.strip_prefix("sha256:").unwrap_or(&lower).to_string();
    if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(Some(s))
    } else {
        Err(a.invalid(key, "a sha256 checksum (64 hex digits)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_of_values() {
        let v = json!({
            "u": "http://127.0.0.1:8/x?a=[1]", "bad": "-K /etc/shadow", "glob": "file:///etc/passwd",
            "svc": "ollama", "svc2": "-x", "m": "llama3.1:8b", "h": "127.0.0.1", "h2": "$(id)",
            "sum": "SHA256:AB".to_string() + &"0".repeat(62), "o": "1000", "o2": "-r",
        });
        let a = ArgReader::new("t", &v, &v);
        assert!(url(&a, "u").is_ok());
        assert!(url(&a, "bad").is_err() && url(&a, "glob").is_err());
        assert!(service(&a, "svc").is_ok() && service(&a, "svc2").is_err());
        assert!(model(&a, "m").is_ok());
        assert!(host(&a, "h").is_ok() && host(&a, "h2").is_err());
        assert_eq!(sha256(&a, "sum").expect("sum").map(|s| s.len()), Some(64));
        assert!(account(&a, "o").is_ok() && account(&a, "o2").is_err());
        assert!(package(&a, "x", "python@3.12").is_ok());
        assert!(package(&a, "x", "x$(touch /tmp/p)").is_err());
        assert!(package(&a, "x", "-y").is_err());
        assert!(header(&a, "h", "X-A", "b\r\nEvil: 1").is_err());
    }
}
