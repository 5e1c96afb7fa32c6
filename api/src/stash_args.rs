//! Stash's `args` Task param: the flags of elasticdump's `multielasticdump`, which Stash's
//! Elasticsearch addon passes through. cairn translates the flags it has a meaning for
//! (`--match`, `--ignoreType`, `--includeType`) into its agent's `--match` and `--skip`, and
//! names every other flag in a warning. One table, read by admission (errors and warnings), the
//! resolver (the built-in variables `ARGS_MATCH` and `ARGS_SKIP`) and `cairn-migrate`.
//!
//! The value is split on whitespace, as the addon does: no quoting. `--flag=value` and
//! `--flag value` both work, as with elasticdump's argument parser.

use std::collections::BTreeSet;

use crate::defaults::Direction;

/// The Task param Stash's Elasticsearch addon reads its elasticdump flags from.
pub const ARGS_PARAM: &str = "args";

/// What elasticdump dumps of an index (its `--type`), in its own words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DumpType {
    Data,
    Mapping,
    Analyzer,
    Alias,
    Settings,
    Template,
}

impl DumpType {
    pub const ALL: [DumpType; 6] = [
        Self::Data,
        Self::Mapping,
        Self::Analyzer,
        Self::Alias,
        Self::Settings,
        Self::Template,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Mapping => "mapping",
            Self::Analyzer => "analyzer",
            Self::Alias => "alias",
            Self::Settings => "settings",
            Self::Template => "template",
        }
    }

    /// elasticdump's names; plurals are taken too (`settings` is elasticdump's own).
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word.trim().to_ascii_lowercase().as_str() {
            "data" => Self::Data,
            "mapping" | "mappings" => Self::Mapping,
            "analyzer" | "analyzers" => Self::Analyzer,
            "alias" | "aliases" => Self::Alias,
            "settings" => Self::Settings,
            "template" | "templates" => Self::Template,
            _ => return None,
        })
    }

    fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// The comma-separated list of types `value` names, or why it cannot be read.
pub fn parse_types(value: &str) -> Result<BTreeSet<DumpType>, String> {
    let mut types = BTreeSet::new();
    for word in value.split(',').filter(|w| !w.trim().is_empty()) {
        let t = DumpType::parse(word).ok_or_else(|| {
            format!(
                "{word:?} is not a type elasticdump dumps; the types are {}",
                DumpType::names()
            )
        })?;
        types.insert(t);
    }
    Ok(types)
}

/// The regular expression of `--match` as elasticdump applies it: JavaScript's `RegExp` with
/// the `i` flag, tested anywhere in an index name. fancy-regex has the lookarounds the regex
/// crate lacks (Stash's own example is `^(?![.])(?!searchguard).+`).
pub fn compile_match(pattern: &str) -> Result<fancy_regex::Regex, String> {
    fancy_regex::Regex::new(&format!("(?i){pattern}")).map_err(|e| {
        format!(
            "{pattern:?} is not a regular expression cairn can apply as JavaScript would: {e}; \
             lookaheads, lookbehinds, classes, groups and anchors are supported"
        )
    })
}

/// One flag of `args` and what cairn does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flag {
    /// `--match`: a regular expression on index names.
    Match(String),
    /// `--ignoreType`: these types are left out.
    Ignore(BTreeSet<DumpType>),
    /// `--includeType`: only these types are kept.
    Include(BTreeSet<DumpType>),
    /// A flag cairn has no meaning for, with what to use instead.
    Unread { flag: String, instead: &'static str },
}

/// A flag without a meaning in cairn: what a user of it would set instead.
fn instead_of(flag: &str) -> &'static str {
    match flag {
        "limit" => "the page size is the tuning flag --page-size in spec.target.args",
        "parallel" | "concurrency" => "parallel readers are the Task param slices",
        "scrollTime" | "timeout" => "cairn's agent keeps its own search context alive and retries",
        "prefix" | "suffix" => {
            "a restore renames with the Task params renamePrefix and renameSuffix"
        }
        "input" | "output" | "direction" => {
            "the database comes from the AppBinding and the repository from the Repository"
        }
        _ => "cairn's agent has no such option",
    }
}

/// The flags of an `args` value, in order, or one message per flag that cannot be read.
pub fn parse(value: &str) -> Result<Vec<Flag>, Vec<String>> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let (mut flags, mut errors) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        i += 1;
        let Some(flag) = word.strip_prefix("--") else {
            errors.push(format!(
                "{word:?} is not a flag: args holds elasticdump flags such as \
                 --match=<regex> --ignoreType=template"
            ));
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let mut value = || {
            inline.clone().or_else(|| {
                let next = words.get(i).filter(|w| !w.starts_with("--"))?;
                i += 1;
                Some(next.to_string())
            })
        };
        let parsed = match name {
            "match" => match value() {
                Some(p) => compile_match(&p)
                    .map(|_| Flag::Match(p))
                    .map_err(|e| format!("--match: {e}")),
                None => Err("--match needs a regular expression: --match=<regex>".into()),
            },
            "ignoreType" | "includeType" => parse_types(&value().unwrap_or_default())
                .map(|types| match name {
                    "ignoreType" => Flag::Ignore(types),
                    _ => Flag::Include(types),
                })
                .map_err(|e| format!("--{name}: {e}")),
            _ => {
                let _ = value();
                Ok(Flag::Unread {
                    flag: format!("--{name}"),
                    instead: instead_of(name),
                })
            }
        };
        match parsed {
            Ok(f) => flags.push(f),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(flags)
    } else {
        Err(errors)
    }
}

/// What cairn's agent does with an `args` value: its `--match` and `--skip` values, and the
/// flags it does not read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Translated {
    /// The regular expression, as written (the agent compiles it as [`compile_match`] does).
    pub matcher: Option<String>,
    /// The types a backup leaves out, comma-separated in elasticdump's words.
    pub skip: String,
    /// Flags the agent of this direction does not read, with what to use instead.
    pub unread: Vec<(String, &'static str)>,
}

/// Translates an `args` value for a Job of `direction`. A restore takes `--match` only: it
/// restores the types its snapshot holds.
pub fn translate(value: &str, direction: Direction) -> Result<Translated, Vec<String>> {
    let mut out = Translated::default();
    let mut skip = BTreeSet::new();
    for flag in parse(value)? {
        match (flag, direction) {
            (Flag::Match(p), _) => out.matcher = Some(p),
            (Flag::Ignore(t), Direction::Backup) => skip.extend(t),
            (Flag::Include(t), Direction::Backup) => {
                skip.extend(DumpType::ALL.into_iter().filter(|x| !t.contains(x)))
            }
            (Flag::Ignore(_), Direction::Restore) => out.unread.push((
                "--ignoreType".into(),
                "a restore loads the types its snapshot holds: leave types out at backup",
            )),
            (Flag::Include(_), Direction::Restore) => out.unread.push((
                "--includeType".into(),
                "a restore loads the types its snapshot holds: leave types out at backup",
            )),
            (Flag::Unread { flag, instead }, _) => out.unread.push((flag, instead)),
        }
    }
    if skip.remove(&DumpType::Data) {
        out.unread.push((
            "--ignoreType=data (or an --includeType without data)".into(),
            "cairn's backups always hold the documents: choose indices with --match or the \
             Task params include and exclude",
        ));
    }
    out.skip = skip
        .into_iter()
        .map(DumpType::as_str)
        .collect::<Vec<_>>()
        .join(",");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stash_documentation_example_translates() {
        let t = translate(
            "--match=^(?![.])(?!searchguard).+ --ignoreType=template,settings",
            Direction::Backup,
        )
        .unwrap();
        assert_eq!(t.matcher.as_deref(), Some("^(?![.])(?!searchguard).+"));
        assert_eq!(t.skip, "settings,template");
        assert!(t.unread.is_empty());
        let re = compile_match(t.matcher.as_deref().unwrap()).unwrap();
        for (name, selected) in [
            ("logs", true),
            (".kibana", false),
            ("searchguard", false),
            ("SearchGuard-x", false),
            ("my-searchguard", true),
        ] {
            assert_eq!(re.is_match(name).unwrap(), selected, "{name}");
        }
    }

    #[test]
    fn include_type_leaves_out_the_rest_and_both_forms_of_value_work() {
        let t = translate("--includeType data,mapping --limit 500", Direction::Backup).unwrap();
        assert_eq!(t.skip, "analyzer,alias,settings,template");
        assert_eq!(t.unread.len(), 1);
        assert_eq!(t.unread[0].0, "--limit");
        assert!(t.unread[0].1.contains("--page-size"));
        let t = translate("--includeType=mapping,settings", Direction::Backup).unwrap();
        assert_eq!(t.skip, "analyzer,alias,template");
        assert!(t.unread[0].0.contains("data"), "{:?}", t.unread);
    }

    #[test]
    fn a_restore_takes_match_and_names_the_type_flags() {
        let t = translate("--match=^a --ignoreType=alias", Direction::Restore).unwrap();
        assert_eq!(t.matcher.as_deref(), Some("^a"));
        assert_eq!(t.skip, "");
        assert_eq!(t.unread[0].0, "--ignoreType");
    }

    #[test]
    fn every_bad_flag_is_named_at_once() {
        let errors = translate(
            "--match=(?<!a --ignoreType=templates,bogus stray --match",
            Direction::Backup,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].contains("not a regular expression"), "{errors:?}");
        assert!(errors[1].contains("\"bogus\"") && errors[1].contains("template"));
        assert!(errors[2].contains("\"stray\" is not a flag"));
        assert!(errors[3].contains("--match needs"));
    }

    #[test]
    fn type_names_take_plurals() {
        let all = "data,mappings,analyzer,aliases,settings,templates";
        assert_eq!(parse_types(all).unwrap().len(), 6);
        assert!(parse_types("setting").is_err());
    }
}
