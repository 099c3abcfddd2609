//! Server-sent events, parsed incrementally: bytes go in as the network splits them (inside
//! a line, a UTF-8 character or a `\r\n`), whole events come out. The parsing rules are the
//! WHATWG EventSource ones (`event:`, `data:` lines joined by `\n`, `:` comments, a blank line
//! ends an event; `\n`, `\r\n` or `\r` end a line). Hand-written because the crates for it
//! wrap a `Stream` of bytes, while the gateway pushes bytes in and must also pass them on.

use super::TranslateError;

/// Longest line kept while waiting for its end; a provider sending more without a newline is
/// broken, and fleet does not buffer without bound for it.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// Its `event:` type (`message` when none was given).
    pub event: String,
    /// Its `data:` lines joined by `\n`.
    pub data: String,
}

/// The parser's state between feeds.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    buf: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
}

impl Parser {
    /// Takes bytes; appends the events they complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) -> Result<(), TranslateError> {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(off) = self.buf[start..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
        {
            let end = start + off;
            let skip = if self.buf[end] == b'\r' {
                // A `\r` last in the buffer may be the first half of `\r\n`: wait for more.
                match self.buf.get(end + 1) {
                    None => break,
                    Some(b'\n') => 2,
                    Some(_) => 1,
                }
            } else {
                1
            };
            let line = std::str::from_utf8(&self.buf[start..end])
                .map_err(|_| TranslateError::BadResponse("an event line is not UTF-8".into()))?
                .to_string();
            self.line(&line, out);
            start = end + skip;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(TranslateError::BadResponse(format!(
                "an event line longer than {MAX_LINE} bytes"
            )));
        }
        Ok(())
    }

    /// The upstream ended: a last line without its newline and an event without its blank
    /// line are taken as complete (some servers close right after the last `data:` line).
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), TranslateError> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let text = std::str::from_utf8(&rest)
                .map_err(|_| TranslateError::BadResponse("an event line is not UTF-8".into()))?;
            for line in text.split(['\r', '\n']).filter(|l| !l.is_empty()) {
                self.line(line, out);
            }
        }
        self.line("", out);
        Ok(())
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                data.pop(); // the `\n` after the last data line
                out.push(Event {
                    event: if self.event.is_empty() {
                        "message".into()
                    } else {
                        std::mem::take(&mut self.event)
                    },
                    data,
                });
            }
            self.event.clear();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).expect("feed");
        }
        p.finish(&mut out).expect("finish");
        out
    }

    #[test]
    fn events_survive_every_split_and_every_line_ending() {
        let text = "event: a\r\ndata: {\"t\":\"h\u{e9}llo\"}\r\n\r\n: comment\n\ndata: x\ndata:y\n\nevent: b\rdata: z\r\r";
        let whole = events(&[text.as_bytes()]);
        assert_eq!(
            whole,
            [
                Event {
                    event: "a".into(),
                    data: "{\"t\":\"h\u{e9}llo\"}".into()
                },
                Event {
                    event: "message".into(),
                    data: "x\ny".into()
                },
                Event {
                    event: "b".into(),
                    data: "z".into()
                },
            ]
        );
        let bytes = text.as_bytes();
        for i in 0..=bytes.len() {
            assert_eq!(events(&[&bytes[..i], &bytes[i..]]), whole, "split at {i}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(events(&singles), whole);
    }

    #[test]
    fn a_last_event_without_its_blank_line_still_counts() {
        assert_eq!(
            events(&[b"data: last"]),
            [Event {
                event: "message".into(),
                data: "last".into()
            }]
        );
    }
}
