//! The agent's progress lines: the JSON object it writes on a line of its own on stdout while a
//! backup reads the documents or a restore loads them (README, "Progress lines"). A contract:
//! the agent writes it, `kubectl cairn` reads it; fields are added, never renamed or removed.

use serde::{Deserialize, Serialize};

/// The `kind` of every progress line (the result, the last line, has another kind).
pub const KIND: &str = "progress";

/// One progress line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProgressLine {
    /// Always [`KIND`].
    pub kind: String,
    /// What the agent is doing: `dump` while a backup reads and saves the documents,
    /// `restore` while a restore loads them.
    pub phase: String,
    pub documents: u64,
    /// The documents the run expects in all (counted before it started; for a restore, the
    /// snapshot's of the indices it loads).
    pub documents_total: u64,
    /// Bytes of documents read so far (a restore: of the `_bulk` bodies the server took).
    pub bytes: u64,
    /// Since the previous line.
    pub documents_per_second: f64,
    pub bytes_per_second: f64,
    pub elapsed_seconds: f64,
    /// `true` on the phase's last line.
    pub done: bool,
}

impl ProgressLine {
    /// The line as the agent writes it.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The progress line `line` holds; `None` for any other line (log text, the result).
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str::<Self>(line.trim())
            .ok()
            .filter(|p| p.kind == KIND)
    }

    /// Seconds left at the last rate, when both the total and a rate are known.
    pub fn eta_seconds(&self) -> Option<f64> {
        let left = self.documents_total.checked_sub(self.documents)?;
        (self.documents_per_second > 0.0 && self.documents_total > 0)
            .then(|| left as f64 / self.documents_per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_line_parses_and_other_lines_do_not() {
        let line = r#"{"kind":"progress","phase":"dump","documents":250000,"documentsTotal":1000000,"bytes":262144000,"documentsPerSecond":25000.0,"bytesPerSecond":26214400.0,"elapsedSeconds":10.0,"done":false}"#;
        let p = ProgressLine::parse(line).expect("a progress line");
        assert_eq!((p.documents, p.documents_total), (250_000, 1_000_000));
        assert_eq!(p.eta_seconds(), Some(30.0));
        assert_eq!(ProgressLine::parse(&p.to_line()), Some(p));
        assert_eq!(
            ProgressLine::parse(r#"{"kind":"backup","snapshot":"x"}"#),
            None
        );
        assert_eq!(ProgressLine::parse("2026-12-06 INFO reading"), None);
    }
}
