//! Which indices a run handles, and what they are called on restore.
//!
//! Patterns are comma-separated globs (`*`, `?`) matched against index names and alias names.
//! Hidden indices (names starting with `.`, or `index.hidden: true`) are left out unless a
//! pattern names them explicitly: a pattern without wildcards, or one that itself starts with `.`.
//! `*` alone must not pull in `.security`, `.kibana` or `.opendistro-*`. Stash's `--match` (a
//! JavaScript regular expression on index names, translated from its `args` param) narrows the
//! selection further and, as in elasticdump, decides about hidden indices itself.

use regex::Regex;

use crate::error::{AgentError, Result};

/// Splits `a, b,,c` into `["a", "b", "c"]`.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn has_wildcard(p: &str) -> bool {
    p.contains('*') || p.contains('?')
}

/// Include and exclude patterns, and Stash's `--match` regular expression.
#[derive(Clone, Debug)]
pub struct Selector {
    include: Vec<String>,
    exclude: Vec<String>,
    /// `--match` as elasticdump applies it, on index names
    /// ([`cairn_api::stash_args::compile_match`]).
    matcher: Option<fancy_regex::Regex>,
}

impl Selector {
    /// An empty include list means `*`.
    pub fn new(include: &str, exclude: &str) -> Self {
        let mut include = split_list(include);
        if include.is_empty() {
            include.push("*".into());
        }
        Self {
            include,
            exclude: split_list(exclude),
            matcher: None,
        }
    }

    /// Also requires an index name to match `pattern` (none when empty). As with elasticdump,
    /// the regular expression decides about hidden indices too: it is the user's explicit
    /// choice (Stash's own example leaves out `.`-names with `^(?![.])`).
    pub fn with_match(mut self, pattern: &str) -> Result<Self> {
        if !pattern.is_empty() {
            let re = cairn_api::stash_args::compile_match(pattern)
                .map_err(|e| AgentError::Usage(format!("--match: {e}")))?;
            self.matcher = Some(re);
        }
        Ok(self)
    }

    /// Whether an index with these aliases is selected.
    pub fn selects(&self, index: &str, aliases: &[String], hidden: bool) -> Result<bool> {
        let hidden = hidden || index.starts_with('.');
        let names = || std::iter::once(index).chain(aliases.iter().map(String::as_str));
        let included = self.include.iter().any(|p| {
            let explicit = !has_wildcard(p) || p.starts_with('.') || self.matcher.is_some();
            (!hidden || explicit) && names().any(|n| glob_match(p, n))
        });
        let excluded = || {
            self.exclude
                .iter()
                .any(|p| names().any(|n| glob_match(p, n)))
        };
        if !included || excluded() {
            return Ok(false);
        }
        let Some(re) = &self.matcher else {
            return Ok(true);
        };
        // A backtracking limit reached is an error, never a silent "no".
        re.is_match(index)
            .map_err(|e| AgentError::Usage(format!("--match on the index name {index:?}: {e}")))
    }
}

/// Restore-time renaming: the pattern replacement first, then prefix and suffix.
#[derive(Clone, Debug, Default)]
pub struct Rename {
    prefix: String,
    suffix: String,
    pattern: Option<(Regex, String)>,
}

impl Rename {
    pub fn new(prefix: &str, suffix: &str, pattern: &str, replacement: &str) -> Result<Self> {
        let pattern = if pattern.is_empty() {
            if !replacement.is_empty() {
                return Err(AgentError::Usage(
                    "--rename-replacement needs --rename-pattern".into(),
                ));
            }
            None
        } else {
            let re = Regex::new(pattern).map_err(|e| {
                AgentError::Usage(format!("--rename-pattern {pattern:?} is not a regex: {e}"))
            })?;
            Some((re, replacement.to_string()))
        };
        Ok(Self {
            prefix: prefix.into(),
            suffix: suffix.into(),
            pattern,
        })
    }

    pub fn is_identity(&self) -> bool {
        self.prefix.is_empty() && self.suffix.is_empty() && self.pattern.is_none()
    }

    /// The new name, checked against the rules for index names.
    pub fn apply(&self, name: &str) -> Result<String> {
        let replaced = match &self.pattern {
            Some((re, with)) => re.replace_all(name, with.as_str()).into_owned(),
            None => name.to_string(),
        };
        let out = format!("{}{}{}", self.prefix, replaced, self.suffix);
        validate_index_name(&out).map_err(|why| {
            AgentError::Usage(format!(
                "renaming {name:?} gives {out:?}, which is not a valid index name: {why}"
            ))
        })?;
        Ok(out)
    }
}

/// Elasticsearch's rules for index names: those of every name, and lowercase.
pub fn validate_index_name(name: &str) -> std::result::Result<(), &'static str> {
    validate_name(name)?;
    if name.chars().any(|c| c.is_uppercase()) {
        return Err("must be lowercase");
    }
    Ok(())
}

/// The rules every index, alias or template name follows: no wildcard, no `_all`, no path.
/// A name read from a snapshot is checked with them before it goes into any request.
pub fn validate_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not allowed");
    }
    if name.len() > 255 {
        return Err("longer than 255 bytes");
    }
    if name.starts_with(['-', '_', '+']) {
        return Err("must not start with '-', '_' or '+'");
    }
    if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        return Err("contains one of \\ / * ? \" < > | space , # :");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("*", "logs", true),
            ("logs-*", "logs-2024", true),
            ("logs-*", "logs", false),
            ("l?gs", "logs", true),
            ("*-2024", "a-b-2024", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("ü*", "über", true),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn selection() {
        let all = Selector::new("*", "");
        assert!(all.selects("logs", &[], false).unwrap());
        assert!(!all.selects(".kibana", &[], false).unwrap());
        assert!(!all.selects("hidden-one", &[], true).unwrap());

        let dot = Selector::new(".kibana*", "");
        assert!(dot.selects(".kibana_1", &[], false).unwrap());
        let named = Selector::new("hidden-one", "");
        assert!(named.selects("hidden-one", &[], true).unwrap());

        let by_alias = Selector::new("current", "");
        assert!(
            by_alias
                .selects("logs-7", &["current".into()], false)
                .unwrap()
        );
        assert!(!by_alias.selects("logs-6", &["old".into()], false).unwrap());

        let ex = Selector::new("*", "logs-*, tmp");
        assert!(!ex.selects("logs-1", &[], false).unwrap());
        assert!(!ex.selects("tmp", &[], false).unwrap());
        assert!(ex.selects("orders", &[], false).unwrap());
        let ex_alias = Selector::new("*", "archived");
        assert!(
            !ex_alias
                .selects("orders-2019", &["archived".into()], false)
                .unwrap()
        );

        assert_eq!(
            Selector::new("", "").include,
            Selector::new("*", "").include
        );
    }

    #[test]
    fn match_narrows_like_elasticdump() {
        let stash = Selector::new("*", "logs-old")
            .with_match("^(?![.])(?!searchguard).+")
            .unwrap();
        assert!(stash.selects("Orders", &[], false).unwrap());
        assert!(!stash.selects("searchguard", &[], false).unwrap());
        assert!(!stash.selects("SEARCHGUARD-audit", &[], false).unwrap());
        assert!(!stash.selects("logs-old", &[], false).unwrap());
        // The regular expression decides about hidden indices, as in elasticdump.
        let dots = Selector::new("*", "").with_match("^[.]kib").unwrap();
        assert!(dots.selects(".kibana", &[], false).unwrap());
        assert!(!dots.selects(".security", &[], true).unwrap());
        // Unanchored, as JavaScript's RegExp.test.
        let part = Selector::new("*", "").with_match("2024").unwrap();
        assert!(part.selects("logs-2024-01", &[], false).unwrap());
        let bad = Selector::new("*", "").with_match("(?<!x").unwrap_err();
        assert!(bad.to_string().contains("--match"), "{bad}");
    }

    #[test]
    fn renames() {
        let r = Rename::new("restored-", "", "", "").unwrap();
        assert_eq!(r.apply("logs").unwrap(), "restored-logs");
        let r = Rename::new("", "-copy", "^logs-(\\d+)$", "archive-$1").unwrap();
        assert_eq!(r.apply("logs-2024").unwrap(), "archive-2024-copy");
        assert_eq!(r.apply("other").unwrap(), "other-copy");
        assert!(Rename::new("", "", "", "x").is_err());
        assert!(Rename::new("", "", "(", "x").is_err());
        let upper = Rename::new("Bad-", "", "", "").unwrap();
        assert!(upper.apply("logs").is_err());
        assert!(Rename::new("", "", "", "").unwrap().is_identity());
    }

    #[test]
    fn index_names() {
        assert!(validate_index_name("logs-2024.01").is_ok());
        assert!(validate_index_name("_x").is_err());
        assert!(validate_index_name("a b").is_err());
        assert!(validate_index_name("..").is_err());
        for bad in ["*", "_all", "..", "a/../b", "logs-*", "a,b", "", "x#y"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_name("Mixed-Case_alias.1").is_ok());
        assert!(validate_index_name("Mixed").is_err());
    }
}
