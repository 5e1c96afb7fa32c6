//! One search answer as NDJSON lines `{"_id":..,"_routing":..,"_source":..}`, without
//! re-encoding `_source`: a byte skimmer for the usual answer, serde for anything else.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::budget::Held;
use crate::error::{AgentError, Result, short};

/// One page of documents as NDJSON.
#[derive(Debug, Default)]
pub struct Page {
    pub ndjson: Vec<u8>,
    pub docs: u64,
    /// Sort values of the last hit (for `search_after`).
    pub last_sort: Option<Value>,
    pub scroll_id: Option<String>,
    pub pit_id: Option<String>,
    /// The exact number of hits of the whole search, when the server counted them all.
    pub total: Option<u64>,
    /// Its bytes counted against the reading's budget until the page is dropped.
    pub held: Option<Held>,
}

/// `hits.total`: a number (Elasticsearch 6) or `{"value", "relation"}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Total {
    Exact(u64),
    Counted { value: u64, relation: String },
}

impl Total {
    fn exact(&self) -> Option<u64> {
        match self {
            Total::Exact(n) => Some(*n),
            Total::Counted { value, relation } => (relation == "eq").then_some(*value),
        }
    }
}

#[derive(Deserialize)]
struct SearchResponse<'a> {
    #[serde(default)]
    _scroll_id: Option<String>,
    #[serde(default)]
    pit_id: Option<String>,
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    _shards: Option<Shards>,
    #[serde(borrow)]
    hits: Hits<'a>,
}

#[derive(Deserialize)]
struct Shards {
    #[serde(default)]
    failed: u64,
}

#[derive(Deserialize)]
struct Hits<'a> {
    #[serde(default)]
    total: Option<Total>,
    #[serde(borrow, default)]
    hits: Vec<Hit<'a>>,
}

#[derive(Deserialize)]
struct Hit<'a> {
    _id: String,
    #[serde(default)]
    _routing: Option<String>,
    #[serde(borrow, default)]
    _source: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sort: Option<&'a RawValue>,
}

/// Turns a search answer into NDJSON lines. Shard failures and time-outs are errors: a page
/// that misses shards would lose documents silently.
///
/// The answer is skimmed (see `Skim`): the hits' `_id`, `_routing` and `_source` are copied
/// as the server wrote them, without decoding. An answer of another shape is read with serde.
pub fn parse_page(index: &str, body: &[u8]) -> Result<Page> {
    match skim_page(index, body) {
        Some(page) => page,
        None => parse_page_serde(index, body),
    }
}

fn shard_failures(index: &str, body: &[u8], failed: u64) -> AgentError {
    let reason = serde_json::from_slice::<Value>(body)
        .ok()
        .map(|v| v["_shards"]["failures"][0]["reason"].to_string())
        .unwrap_or_default();
    AgentError::Dump(format!(
        "search on {index}: {failed} shard(s) failed: {}",
        short(&reason, 300)
    ))
}

fn no_source(id: &str, index: &str) -> AgentError {
    AgentError::Dump(format!(
        "document {id:?} of index {index} has no _source (is _source disabled in the mapping?): \
         it cannot be backed up"
    ))
}

/// Appends `raw` (one JSON value) to an NDJSON line: raw line breaks in JSON can only be
/// whitespace (strings escape them), so a source indexed pretty-printed becomes one line.
fn push_one_line(out: &mut Vec<u8>, raw: &[u8]) -> Option<()> {
    if memchr::memchr2(b'\n', b'\r', raw).is_none() {
        out.extend_from_slice(raw);
        return Some(());
    }
    // Checked as JSON first: a line break inside a string would be invalid JSON anyway.
    let v: &RawValue = serde_json::from_slice(raw).ok()?;
    out.extend_from_slice(v.get().replace(['\n', '\r'], " ").as_bytes());
    Some(())
}

/// A forward-only reader over a JSON text that finds the extent of values without decoding
/// them: strings are skipped to their closing quote, containers to their matching bracket.
/// Anything it does not expect makes it give up (`None`), never panic.
struct Skim<'a> {
    b: &'a [u8],
    i: usize,
    stack: Vec<u8>,
}

impl<'a> Skim<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self {
            b,
            i: 0,
            stack: Vec::new(),
        }
    }

    fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                return Some(c);
            }
        }
        None
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string token, quotes included.
    fn string(&mut self) -> Option<&'a [u8]> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i;
        let mut i = start + 1;
        loop {
            let j = i + memchr::memchr2(b'"', b'\\', self.b.get(i..)?)?;
            if self.b[j] == b'"' {
                self.i = j + 1;
                return Some(&self.b[start..self.i]);
            }
            i = j + 2;
        }
    }

    /// One value of any kind, as written.
    fn value(&mut self) -> Option<&'a [u8]> {
        let start = match self.peek()? {
            b'"' => return self.string(),
            b'{' | b'[' => self.i,
            _ => {
                // A number or a literal: up to the next delimiter.
                let start = self.i;
                while let Some(&c) = self.b.get(self.i) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                        break;
                    }
                    self.i += 1;
                }
                return (self.i > start).then(|| &self.b[start..self.i]);
            }
        };
        self.stack.clear();
        loop {
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' => self.stack.push(b'}'),
                b'[' => self.stack.push(b']'),
                b'}' | b']' => {
                    if self.stack.pop()? != c {
                        return None;
                    }
                    if self.stack.is_empty() {
                        self.i += 1;
                        return Some(&self.b[start..self.i]);
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }

    /// Calls `f` with each key (its string token) of the object that starts here; `f` reads the
    /// value.
    fn object(&mut self, mut f: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            f(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Calls `f` for each element of the array that starts here; `f` reads the element.
    fn array(&mut self, mut f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            f(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

fn json_string(token: &[u8]) -> Option<String> {
    serde_json::from_slice(token).ok()
}

/// A hit's sort values once its line is written, or its id when it has no `_source`.
type HitLine<'a> = std::result::Result<Option<&'a [u8]>, &'a [u8]>;

/// One hit as an NDJSON line appended to `out`: `Ok` with its sort values, or `Err` with its
/// id when it has no `_source`; `None` when it is not as expected.
fn skim_hit<'a>(sk: &mut Skim<'a>, out: &mut Vec<u8>) -> Option<HitLine<'a>> {
    let (mut id, mut routing, mut source, mut sort) = (None, None, None, None);
    sk.object(|sk, key| {
        match key {
            b"\"_id\"" => id = Some(sk.string()?),
            b"\"_routing\"" => routing = Some(sk.string()?),
            b"\"_source\"" => source = Some(sk.value()?),
            b"\"sort\"" => sort = Some(sk.value()?),
            _ => {
                sk.value()?;
            }
        }
        Some(())
    })?;
    let id = id?;
    let Some(source) = source else {
        return Some(Err(id));
    };
    out.extend_from_slice(b"{\"_id\":");
    out.extend_from_slice(id);
    if let Some(r) = routing {
        out.extend_from_slice(b",\"_routing\":");
        out.extend_from_slice(r);
    }
    out.extend_from_slice(b",\"_source\":");
    push_one_line(out, source)?;
    out.extend_from_slice(b"}\n");
    Some(Ok(sort))
}

/// [`parse_page`] by skimming; `None` when the answer is not of the expected shape.
fn skim_page(index: &str, body: &[u8]) -> Option<Result<Page>> {
    let mut page = Page::default();
    let mut out = Vec::with_capacity(body.len());
    let mut timed_out = false;
    let mut failed = 0u64;
    let mut last_sort: Option<&[u8]> = None;
    let mut missing: Option<AgentError> = None;
    let mut sk = Skim::new(body);
    sk.object(|sk, key| {
        match key {
            b"\"_scroll_id\"" => page.scroll_id = Some(json_string(sk.string()?)?),
            b"\"pit_id\"" => page.pit_id = Some(json_string(sk.string()?)?),
            b"\"timed_out\"" => timed_out = sk.value()? == b"true",
            b"\"_shards\"" => {
                let shards: Shards = serde_json::from_slice(sk.value()?).ok()?;
                failed = shards.failed;
            }
            b"\"hits\"" => sk.object(|sk, key| {
                if key == b"\"total\"" {
                    let total: Total = serde_json::from_slice(sk.value()?).ok()?;
                    page.total = total.exact();
                    return Some(());
                }
                if key != b"\"hits\"" {
                    sk.value()?;
                    return Some(());
                }
                sk.array(|sk| {
                    match skim_hit(sk, &mut out)? {
                        Ok(sort) => {
                            page.docs += 1;
                            last_sort = sort;
                        }
                        Err(id) if missing.is_none() => {
                            missing = Some(no_source(&json_string(id)?, index));
                        }
                        Err(_) => {}
                    }
                    Some(())
                })
            })?,
            _ => {
                sk.value()?;
            }
        }
        Some(())
    })?;
    if sk.peek().is_some() {
        return None;
    }
    if timed_out {
        return Some(Err(AgentError::Dump(format!(
            "search on {index} timed out"
        ))));
    }
    if failed > 0 {
        return Some(Err(shard_failures(index, body, failed)));
    }
    if let Some(e) = missing {
        return Some(Err(e));
    }
    if let Some(last) = last_sort {
        page.last_sort = Some(serde_json::from_slice(last).ok()?);
    }
    page.ndjson = out;
    Some(Ok(page))
}

fn parse_page_serde(index: &str, body: &[u8]) -> Result<Page> {
    let resp: SearchResponse<'_> = serde_json::from_slice(body)
        .map_err(|e| AgentError::json(format!("search answer for {index}"), e))?;
    if resp.timed_out {
        return Err(AgentError::Dump(format!("search on {index} timed out")));
    }
    if let Some(s) = &resp._shards
        && s.failed > 0
    {
        return Err(shard_failures(index, body, s.failed));
    }
    let mut page = Page {
        scroll_id: resp._scroll_id,
        pit_id: resp.pit_id,
        total: resp.hits.total.as_ref().and_then(Total::exact),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(body.len());
    for hit in &resp.hits.hits {
        let source = hit.source_or_err(index)?;
        out.extend_from_slice(b"{\"_id\":");
        serde_json::to_writer(&mut out, &hit._id).map_err(|e| AgentError::json("encode", e))?;
        if let Some(r) = &hit._routing {
            out.extend_from_slice(b",\"_routing\":");
            serde_json::to_writer(&mut out, r).map_err(|e| AgentError::json("encode", e))?;
        }
        out.extend_from_slice(b",\"_source\":");
        let raw = source.get();
        if raw.contains(['\n', '\r']) {
            // Raw line breaks in JSON can only be whitespace (strings escape them): a source
            // indexed pretty-printed must still be one NDJSON line.
            out.extend_from_slice(raw.replace(['\n', '\r'], " ").as_bytes());
        } else {
            out.extend_from_slice(raw.as_bytes());
        }
        out.extend_from_slice(b"}\n");
        page.docs += 1;
    }
    if let Some(last) = resp.hits.hits.last().and_then(|h| h.sort) {
        page.last_sort = serde_json::from_str(last.get()).ok();
    }
    page.ndjson = out;
    Ok(page)
}

impl Hit<'_> {
    fn source_or_err(&self, index: &str) -> Result<&RawValue> {
        self._source.ok_or_else(|| no_source(&self._id, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn page_to_ndjson() {
        let body = br#"{"_scroll_id":"s1","timed_out":false,"_shards":{"total":1,"failed":0},
          "hits":{"hits":[
            {"_index":"a","_id":"1","_source":{"t":"\u00fc\n","n":[1,{"x":null}]},"sort":[0]},
            {"_index":"a","_id":"q\"2","_routing":"r","_source":{},"sort":[7]}]}}"#;
        let p = parse_page("a", body).unwrap();
        assert_eq!(p.docs, 2);
        assert_eq!(p.total, None);
        for (total, exact) in [
            (r#"{"value":10000,"relation":"gte"}"#, None),
            (r#"{"value":2,"relation":"eq"}"#, Some(2)),
            ("2", Some(2)),
        ] {
            let body = format!(r#"{{"hits":{{"total":{total},"hits":[]}}}}"#);
            assert_eq!(
                skim_page("a", body.as_bytes()).unwrap().unwrap().total,
                exact
            );
            assert_eq!(parse_page_serde("a", body.as_bytes()).unwrap().total, exact);
        }
        assert_eq!(p.scroll_id.as_deref(), Some("s1"));
        assert_eq!(p.last_sort, Some(json!([7])));
        let text = String::from_utf8(p.ndjson).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["_source"]["t"], "ü\n");
        assert_eq!(lines[1]["_id"], "q\"2");
        assert_eq!(lines[1]["_routing"], "r");
        assert!(lines[0].get("_routing").is_none());
    }

    #[test]
    fn skimmed_pages() {
        let body = br#"{"_scroll_id":"s\"1","took":3,"timed_out":false,
          "_shards":{"total":1,"successful":1,"skipped":0,"failed":0},
          "hits":{"total":{"value":3,"relation":"eq"},"max_score":null,"hits":[
            {"_index":"a","_id":"1","_score":null,"_source":{"t":"a\"}]{\\","n":[1,{"x":null}],
              "e":{}, "l":[]},"sort":[0]},
            {"_index":"a","_id":"q\u00e92","_routing":"r","_source":{},"sort":[7, "x"]},
            {"_index":"a","_id":"3","_source":{"p":
              "x"}}]}}"#;
        let skimmed = skim_page("a", body).unwrap().unwrap();
        let serde = parse_page_serde("a", body).unwrap();
        assert_eq!(skimmed.docs, 3);
        assert_eq!(skimmed.scroll_id.as_deref(), Some("s\"1"));
        assert_eq!(skimmed.last_sort, None);
        assert_eq!((skimmed.total, serde.total), (Some(3), Some(3)));
        let decode = |b: &[u8]| -> Vec<Value> {
            std::str::from_utf8(b)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        assert_eq!(decode(&skimmed.ndjson), decode(&serde.ndjson));
        assert_eq!(skimmed.ndjson.iter().filter(|b| **b == b'\n').count(), 3);
        // Not JSON, or cut short: never a page.
        for bad in [
            &br#"{"hits":{"hits":[{"_id":"1","_source":{"a":[}]}}"#[..],
            br#"{"hits":{"hits":[{"_id":"1","_source":{"a":"#,
            br#"{"hits":{"hits":[{"_id":"1","_source":{"a":1}}]}} x"#,
            br#"{"hits":{"hits":[{"_id":"1","_source":{"a":1}}]}"#,
            b"",
        ] {
            assert!(
                parse_page("a", bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let timed_out = br#"{"timed_out":true,"hits":{"hits":[]}}"#;
        assert!(parse_page("a", timed_out).is_err());
    }

    #[test]
    fn shard_failures_fail_the_page() {
        let body = br#"{"_shards":{"total":2,"failed":1,"failures":[{"reason":{"type":"x"}}]},"hits":{"hits":[]}}"#;
        assert!(parse_page("a", body).is_err());
        let no_source = br#"{"hits":{"hits":[{"_id":"1"}]}}"#;
        let e = parse_page("a", no_source).unwrap_err().to_string();
        assert!(e.contains("_source"), "{e}");
    }
}
