//! The `_bulk` wire format: a backed-up document line turned into an action and its source
//! (split without decoding where the line has our layout), and the server's answer read into
//! done, retry (rejected for load) or failed.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{AgentError, Result, short};

#[derive(Deserialize)]
struct DocLine<'a> {
    #[serde(borrow)]
    _id: &'a RawValue,
    #[serde(borrow, default)]
    _routing: Option<&'a RawValue>,
    #[serde(borrow)]
    _source: &'a RawValue,
}

/// The start of every bulk action for `target`: `{"index":{"_index":"<target>","_id":`.
pub fn action_prefix(target: &str) -> Vec<u8> {
    let mut out = b"{\"index\":{\"_index\":".to_vec();
    // A string always serializes.
    let _ = serde_json::to_writer(&mut out, target);
    out.extend_from_slice(b",\"_id\":");
    out
}

/// The length of the JSON string token at the start of `s` (quotes included).
fn string_token_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    loop {
        let j = i + memchr::memchr2(b'"', b'\\', s.get(i..)?)?;
        if s[j] == b'"' {
            return Some(j + 1);
        }
        // An escape: skip the escaped byte.
        i = j + 2;
    }
}

/// A document line's id and routing tokens and its source.
type LineParts<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// A document line as the backup writes it, `{"_id":"..",("_routing":"..",)"_source":{..}}`,
/// split without decoding: the id and routing tokens and the source, as they are.
fn split_line(line: &[u8]) -> Option<LineParts<'_>> {
    let rest = line.strip_prefix(b"{\"_id\":")?;
    let (id, rest) = rest.split_at(string_token_len(rest)?);
    let (routing, rest) = match rest.strip_prefix(b",\"_routing\":") {
        Some(r) => {
            let (routing, rest) = r.split_at(string_token_len(r)?);
            (Some(routing), rest)
        }
        None => (None, rest),
    };
    let source = rest.strip_prefix(b",\"_source\":")?.strip_suffix(b"}")?;
    (source.first() == Some(&b'{') && source.last() == Some(&b'}')).then_some((id, routing, source))
}

/// Appends one document's bulk action and source. `prefix` is [`action_prefix`] of `target`.
/// The server parses the source; the lines of the stream are checked against the manifest's
/// checksum.
pub fn bulk_line(out: &mut Vec<u8>, prefix: &[u8], target: &str, line: &[u8]) -> Result<()> {
    let (id, routing, source) = match split_line(line) {
        Some(parts) => parts,
        None => {
            // Not the layout we write: read it as JSON.
            let doc: DocLine<'_> = serde_json::from_slice(line)
                .map_err(|e| AgentError::json(format!("a document line of {target}"), e))?;
            (
                doc._id.get().as_bytes(),
                doc._routing.map(|r| r.get().as_bytes()),
                doc._source.get().as_bytes(),
            )
        }
    };
    out.extend_from_slice(prefix);
    out.extend_from_slice(id);
    if let Some(r) = routing {
        out.extend_from_slice(b",\"routing\":");
        out.extend_from_slice(r);
    }
    out.extend_from_slice(b"}}\n");
    out.extend_from_slice(source);
    out.push(b'\n');
    Ok(())
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<Map<String, Value>>,
}

/// What to do with a bulk answer.
#[derive(Debug, PartialEq, Eq)]
pub enum BulkOutcome {
    Done,
    /// Only rejections for load (429): send the batch again later.
    Retry,
    /// The first real failure, naming the document.
    Failed(String),
}

#[derive(Deserialize)]
struct BulkErrors {
    #[serde(default)]
    errors: bool,
}

/// Whether a `_bulk` answer says `"errors":false`, read from its start where the servers put
/// it (`{"took":N,"errors":false,...`); `None` when it is not there.
fn no_errors_prefix(body: &[u8]) -> Option<bool> {
    let rest = body.strip_prefix(b"{\"took\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = rest.get(digits..)?.strip_prefix(b",\"errors\":")?;
    if rest.starts_with(b"false,") || rest.starts_with(b"false}") {
        Some(true)
    } else if rest.starts_with(b"true") {
        Some(false)
    } else {
        None
    }
}

/// Reads a `_bulk` answer: the items only when `errors` is true.
pub fn bulk_outcome(target: &str, body: &[u8]) -> Result<BulkOutcome> {
    let errors = match no_errors_prefix(body) {
        Some(clean) => !clean,
        None => {
            serde_json::from_slice::<BulkErrors>(body)
                .map_err(|e| AgentError::json("bulk answer", e))?
                .errors
        }
    };
    if !errors {
        return Ok(BulkOutcome::Done);
    }
    let resp: BulkResponse =
        serde_json::from_slice(body).map_err(|e| AgentError::json("bulk answer", e))?;
    if !resp.errors {
        return Ok(BulkOutcome::Done);
    }
    let mut retry = false;
    for item in &resp.items {
        let Some(r) = item.values().next() else {
            continue;
        };
        let status = r["status"].as_u64().unwrap_or(0);
        if status < 300 {
            continue;
        }
        if status == 429 {
            retry = true;
            continue;
        }
        let e = &r["error"];
        return Ok(BulkOutcome::Failed(format!(
            "document {} of index {target} was rejected: {}: {}",
            r["_id"],
            e["type"].as_str().unwrap_or("error"),
            short(e["reason"].as_str().unwrap_or(&e.to_string()), 400)
        )));
    }
    Ok(if retry {
        BulkOutcome::Retry
    } else {
        BulkOutcome::Done
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_lines() {
        let prefix = action_prefix("t\"x");
        let mut out = Vec::new();
        bulk_line(
            &mut out,
            &prefix,
            "t\"x",
            br#"{"_id":"a\"1\\","_routing":"r","_source":{"x":[1,2],"s":"\u00e9"}}"#,
        )
        .unwrap();
        // Another key order, whitespace, no routing: read as JSON.
        bulk_line(
            &mut out,
            &prefix,
            "t\"x",
            br#"{ "_source": {"y":"}"}, "_id": "b" }"#,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let meta: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(meta["index"]["_index"], "t\"x");
        assert_eq!(meta["index"]["_id"], "a\"1\\");
        assert_eq!(meta["index"]["routing"], "r");
        assert_eq!(lines[1], r#"{"x":[1,2],"s":"\u00e9"}"#);
        let meta: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(meta["index"]["_id"], "b");
        assert!(meta["index"].get("routing").is_none());
        assert_eq!(lines[3], r#"{"y":"}"}"#);
        for bad in [
            &b"{not json"[..],
            b"{\"_id\":\"a",
            b"{\"_id\":\"a\\",
            b"{\"_id\":\"a\",\"_source\":",
            b"{\"_id\":1}",
        ] {
            assert!(bulk_line(&mut Vec::new(), &prefix, "t", bad).is_err());
        }
    }

    #[test]
    fn bulk_answer_prefix() {
        assert_eq!(
            no_errors_prefix(br#"{"took":12,"errors":false,"items":[]}"#),
            Some(true)
        );
        assert_eq!(
            no_errors_prefix(br#"{"took":0,"errors":true,"items":[]}"#),
            Some(false)
        );
        assert_eq!(no_errors_prefix(br#"{"errors":false}"#), None);
        assert_eq!(no_errors_prefix(br#"{"took":1,"errors":falsey}"#), None);
        let late = br#"{"items":[{"index":{"status":400,"error":{"type":"x"}}}],"errors":true}"#;
        assert!(matches!(
            bulk_outcome("t", late).unwrap(),
            BulkOutcome::Failed(_)
        ));
    }

    #[test]
    fn bulk_answers() {
        assert_eq!(
            bulk_outcome("t", br#"{"errors":false,"items":[]}"#).unwrap(),
            BulkOutcome::Done
        );
        let retry = br#"{"errors":true,"items":[{"index":{"_id":"1","status":201}},
            {"index":{"_id":"2","status":429,"error":{"type":"es_rejected_execution_exception"}}}]}"#;
        assert_eq!(bulk_outcome("t", retry).unwrap(), BulkOutcome::Retry);
        let bad = br#"{"errors":true,"items":[{"index":{"_id":"7","status":400,
            "error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}}]}"#;
        match bulk_outcome("t", bad).unwrap() {
            BulkOutcome::Failed(r) => {
                assert!(
                    r.contains("\"7\"") && r.contains("mapper_parsing_exception"),
                    "{r}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
