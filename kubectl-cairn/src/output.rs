//! How results reach the person: tables as kubectl prints them, `-o yaml|json`, ages and
//! colours, and whether stdout is a terminal (no colours, no rewritten lines when it is not).

use std::io::IsTerminal as _;

use anyhow::Result;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use crate::cli::Format;

/// What stdout is: a terminal gets colours and a progress line rewritten in place.
#[derive(Clone, Copy, Debug)]
pub struct Terminal {
    pub tty: bool,
}

/// A colour of a word.
#[derive(Clone, Copy, Debug)]
pub enum Colour {
    Green,
    Red,
    Yellow,
}

impl Terminal {
    /// Stdout as it is now; `NO_COLOR` (any value) turns colours off on a terminal too.
    pub fn detect() -> Self {
        Self {
            tty: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// `text` in `colour` on a terminal, plain otherwise.
    pub fn paint(self, colour: Colour, text: &str) -> String {
        if !self.tty {
            return text.to_string();
        }
        let code = match colour {
            Colour::Green => 32,
            Colour::Red => 31,
            Colour::Yellow => 33,
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// `line` as text only: every escape sequence and control character removed but tabs (the
/// agent's log is coloured, and a pod's log or a server's message is anyone's bytes: an OSC 52
/// sequence would write the admin's clipboard, OSC 8 plant links, a backspace hide text).
pub fn plain(line: &str) -> String {
    safe(line, false)
}

/// `line` with what a terminal may be sent: [`plain`]'s text, and with `colours` the SGR
/// sequences (`ESC [` digits and `;`, then `m`) and nothing else.
pub fn safe(line: &str, colours: bool) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        // CSI: `ESC [` or its one-character form U+009B, parameters, one final byte.
        let csi = c == '\u{9b}' || (c == '\x1b' && chars.next_if_eq(&'[').is_some());
        if csi {
            let mut body = String::new();
            for c in chars.by_ref() {
                body.push(c);
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
            let sgr = body
                .strip_suffix('m')
                .is_some_and(|params| params.chars().all(|c| c.is_ascii_digit() || c == ';'));
            if colours && sgr {
                out.push_str("\x1b[");
                out.push_str(&body);
            }
            continue;
        }
        match c {
            // OSC, DCS, APC, PM, SOS: a string up to BEL or ST (`ESC \`); any other `ESC x`
            // goes with its one character.
            '\x1b' => {
                if let Some(']' | 'P' | '_' | '^' | 'X') = chars.next() {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Rows under a header, each column as wide as its widest cell, 3 spaces apart (kubectl's).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("   ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Objects as `-o yaml` (a `List`, as kubectl prints several) or `-o json`.
pub fn objects<T: Serialize>(items: &[T], format: Format) -> Result<String> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    one(&list, format)
}

/// One object as `-o yaml` or `-o json` (`wide` is YAML: an object has no columns).
pub fn one<T: Serialize>(object: &T, format: Format) -> Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(object)? + "\n",
        Format::Yaml | Format::Wide => serde_yaml::to_string(object)?,
    })
}

/// How long ago `time` was, as kubectl's AGE column: `45s`, `12m`, `5h`, `3d`.
pub fn age(time: Option<&Time>) -> String {
    time.map(|t| short_duration((chrono::Utc::now() - utc(t)).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

/// A Kubernetes time as chrono's (what cairn-api's schedule arithmetic takes).
pub fn utc(time: &Time) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(time.0.as_second(), 0).unwrap_or_default()
}

/// `2026-12-06 08:00:00`, UTC.
pub fn timestamp(time: &Time) -> String {
    utc(time).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Seconds as `45s`, `12m`, `5h` or `3d` (negative: `0s`).
pub fn short_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A count with thousands separated: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_text_and_chosen_colours_reach_the_terminal() {
        let hostile = "ok\x1b]52;c;aGk=\x07 \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \
                       a\x08b\u{9b}31m \x1b[2J\x1b[1;31mred\x1b[0m\r\tend";
        assert_eq!(plain(hostile), "ok link ab red\tend");
        assert_eq!(
            safe(hostile, true),
            "ok link ab\x1b[31m \x1b[1;31mred\x1b[0m\tend"
        );
    }

    #[test]
    fn agent_lines_lose_their_colours() {
        let line = "\x1b[2m2026-12-06T07:54:37Z\x1b[0m \x1b[31mERROR\x1b[0m repository: gone\r";
        assert_eq!(plain(line), "2026-12-06T07:54:37Z ERROR repository: gone");
    }

    #[test]
    fn tables_and_figures_read_like_kubectls() {
        let t = table(
            &["NAME", "SIZE"],
            &[vec!["a-long-name".into(), "1 B".into()]],
        );
        assert_eq!(t, "NAME          SIZE\na-long-name   1 B\n");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(short_duration(130), "2m");
        assert_eq!(short_duration(-5), "0s");
        let plain = Terminal { tty: false };
        assert_eq!(plain.paint(Colour::Red, "Failed"), "Failed");
    }
}
