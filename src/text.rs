//! Text from outside the process, made safe for a terminal or a log line, and figures made short
//! enough to read: control and bidirectional-formatting characters escaped (a server's error text
//! or a user name cannot rewrite a line or reorder it, U+202E included), the userinfo of URLs
//! redacted (a password in a URL never reaches a message), and durations rounded.

use std::time::Duration;

/// Bidirectional formatting characters (Unicode category Cf, not `char::is_control`): embeddings,
/// overrides, isolates and marks. Shown in a terminal they reorder the text around them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// `s` on one line: line breaks and tabs become spaces, every other control character and every
/// bidirectional formatting character is shown escaped (`\u{202e}`), so it is visible.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\n' | '\r' | '\t') {
            out.push(' ');
        } else if c.is_control() || is_bidi_control(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` with the userinfo (`user:password@`) of every URL in it replaced by `***`, whether or
/// not the URL parses.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A duration for a message, rounded to what a reader needs: `850 ms`, `4 s`, `2 min 5 s`,
/// `3 h 10 min`, `12 d 4 h`.
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{} ms", d.as_millis());
    }
    // Rounded to the nearest second (half up).
    let s = (d + Duration::from_millis(500)).as_secs();
    let (days, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if days > 0 {
        format!("{days} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {} s", s % 60)
    } else {
        format!("{s} s")
    }
}

/// A byte count for a message: `512 bytes`, `64 KiB`, `32 MiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if (v - v.round()).abs() < 0.05 {
        format!("{} {}", v.round() as u64, UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bidi overrides and other controls are shown escaped; line breaks become spaces.
    #[test]
    fn one_line_escapes_controls_and_bidi() {
        assert_eq!(
            one_line("key \u{202E}dilav\u{202C} ok\n\x1b[31mred"),
            "key \\u{202e}dilav\\u{202c} ok \\u{1b}[31mred"
        );
        for c in ['\u{061C}', '\u{200E}', '\u{200F}', '\u{2066}', '\u{2069}'] {
            assert!(!one_line(&c.to_string()).contains(c), "{c:?}");
        }
        assert_eq!(one_line("plain, ümlaut: ok"), "plain, ümlaut: ok");
    }

    /// The userinfo of any URL is redacted, parseable or not; the rest of the text is kept.
    #[test]
    fn userinfo_is_redacted() {
        assert_eq!(
            redact_userinfo("\"https://admin:hunter2@127.0.0.1:8089/x\" must be"),
            "\"https://***@127.0.0.1:8089/x\" must be"
        );
        assert_eq!(
            redact_userinfo("http://u:p@[bad and https://ok.example/a@b"),
            "http://***@[bad and https://ok.example/a@b"
        );
        assert_eq!(redact_userinfo("no url here"), "no url here");
        assert_eq!(
            redact_userinfo("https://one.digicert.com"),
            "https://one.digicert.com"
        );
    }

    /// Durations are rounded to whole seconds and shown in the two largest units.
    #[test]
    fn durations_are_rounded() {
        assert_eq!(duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(Duration::from_millis(4_499)), "4 s");
        assert_eq!(duration(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 600)), "3 h 10 min");
        assert_eq!(
            duration(Duration::new(251_606_185_977, 452_649_847)),
            "2912108 d 15 h"
        );
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(32 * 1024 * 1024), "32 MiB");
        assert_eq!(bytes(1536 * 1024 * 1024), "1.5 GiB");
    }
}
