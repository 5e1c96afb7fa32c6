//! `${VAR}` / `${VAR:=default}` substitution in Task and Function strings.
//!
//! The syntax is Stash's, so hand-written Functions keep working:
//!
//! - `${NAME}` is replaced by the value of `NAME`;
//! - `${NAME:=default}` is replaced by the value of `NAME`, or by `default` when `NAME` is unset
//!   or empty. The default may be empty and may contain any character except `}`; the first `:=`
//!   separates the name from the default (`${A:=x:=y}` has the default `x:=y`);
//! - `NAME` must match `[A-Za-z_][A-Za-z0-9_]*`;
//! - a `$` not followed by `{` is literal text (`$HOME`, `a$b`, a trailing `$`), so shell
//!   variables in commands pass through untouched.
//!
//! There is no escape syntax: every `${` starts a reference. References do not nest: in
//! `${A:=${B}}` the default is `${B` and the final `}` is literal text.
//!
//! Substitution is a single pass: substituted values are not scanned again, so a value that
//! contains `${X}` ends up literally in the result (no injection through values, no loops).
//!
//! Positions in errors are byte offsets of the `$` that starts the reference.

use std::collections::BTreeMap;

use serde_json::Value;

/// What a variable name must look like, for messages.
pub const NAME_PATTERN: &str = "[A-Za-z_][A-Za-z0-9_]*";

/// Longest piece of the input quoted in an error message, in characters: a whole command line in
/// a message would bury the point.
const MAX_QUOTED_CHARS: usize = 40;

/// A malformed variable reference, or (on substitution) a variable with no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    /// `${` with no `}` after it.
    #[error(
        "unterminated variable reference {reference:?} at position {position}: expected \"}}\""
    )]
    Unterminated { reference: String, position: usize },
    /// `${}` or `${:=default}`.
    #[error(
        "empty variable name in {reference:?} at position {position}: names match [A-Za-z_][A-Za-z0-9_]*"
    )]
    EmptyName { reference: String, position: usize },
    /// A name that does not match [`NAME_PATTERN`].
    #[error(
        "invalid variable name {name:?} in {reference:?} at position {position}: names match [A-Za-z_][A-Za-z0-9_]*"
    )]
    InvalidName {
        name: String,
        reference: String,
        position: usize,
    },
    /// `${NAME}` (no default) where `NAME` is not set.
    #[error(
        "variable ${{{name}}} at position {position} is not set and has no default: set it (for example with a Task param) or write ${{{name}:=default}}"
    )]
    Unset { name: String, position: usize },
}

/// Checks the syntax of every variable reference in `s`; does not look at values.
/// Returns the first error.
pub fn check(s: &str) -> Result<(), VarError> {
    parse(s, |_| Ok(()))
}

/// The names referenced in `s`, each once, in order of first appearance.
pub fn referenced(s: &str) -> Result<Vec<&str>, VarError> {
    let mut names: Vec<&str> = Vec::new();
    parse(s, |piece| {
        if let Piece::Ref(r) = piece
            && !names.contains(&r.name)
        {
            names.push(r.name);
        }
        Ok(())
    })?;
    Ok(names)
}

/// Replaces every reference in `s` with its value (see the module doc).
///
/// Strict: a malformed reference, or `${NAME}` without a default where `NAME` is not in `vars`,
/// is an error (a silently empty argument would make a confusing failure later, inside the Job).
/// A `NAME` set to the empty string is set: `${NAME}` gives `""`, `${NAME:=d}` gives `d`.
/// Syntax errors are reported before unset variables.
pub fn substitute(s: &str, vars: &BTreeMap<String, String>) -> Result<String, VarError> {
    // Syntax first, so a malformed reference is reported even after an unset variable.
    check(s)?;
    let mut out = String::with_capacity(s.len());
    parse(s, |piece| {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Ref(r) => match (vars.get(r.name).map(String::as_str), r.default) {
                (Some(v), None) => out.push_str(v),
                (Some(v), Some(_)) if !v.is_empty() => out.push_str(v),
                (_, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(VarError::Unset {
                        name: r.name.to_owned(),
                        position: r.position,
                    });
                }
            },
        }
        Ok(())
    })?;
    Ok(out)
}

/// [`substitute`] in place in every string; all errors come back together.
/// A string whose substitution fails is left unchanged; the others are substituted.
pub fn substitute_all<'a>(
    strings: impl IntoIterator<Item = &'a mut String>,
    vars: &BTreeMap<String, String>,
) -> Result<(), Vec<VarError>> {
    let mut errors = Vec::new();
    for s in strings {
        match substitute(s, vars) {
            Ok(new) => *s = new,
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// [`substitute`] in place in every string leaf of a JSON tree (object keys are left alone), for
/// resolving whole containers at once. All errors come back together, each with the path of its
/// leaf relative to `v`, like `containers[0].args[2]` (the empty string for a string root).
/// A leaf whose substitution fails is left unchanged; the others are substituted.
pub fn substitute_json(
    v: &mut Value,
    vars: &BTreeMap<String, String>,
) -> Result<(), Vec<(String, VarError)>> {
    let mut errors = Vec::new();
    let mut path = String::new();
    walk_json(v, vars, &mut path, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn walk_json(
    v: &mut Value,
    vars: &BTreeMap<String, String>,
    path: &mut String,
    errors: &mut Vec<(String, VarError)>,
) {
    // One path buffer for the whole walk: push a segment, recurse, truncate back.
    let len = path.len();
    match v {
        Value::String(s) => match substitute(s, vars) {
            Ok(new) => *s = new,
            Err(e) => errors.push((path.clone(), e)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push_str(&format!("[{i}]"));
                walk_json(item, vars, path, errors);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk_json(item, vars, path, errors);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A piece of a string: literal text or a reference.
enum Piece<'a> {
    Text(&'a str),
    Ref(Ref<'a>),
}

struct Ref<'a> {
    name: &'a str,
    default: Option<&'a str>,
    /// Byte offset of the `$`.
    position: usize,
}

/// Splits `s` into pieces, in order, handing each to `f`; stops at the first error.
/// The one parser behind `check`, `referenced` and `substitute`, so they always agree.
fn parse<'a>(
    s: &'a str,
    mut f: impl FnMut(Piece<'a>) -> Result<(), VarError>,
) -> Result<(), VarError> {
    // `$`, `{`, `}` and `:=` are ASCII, so every offset found below is a char boundary.
    let mut text_start = 0;
    while let Some(found) = s[text_start..].find("${") {
        let start = text_start + found;
        let body_start = start + 2;
        let Some(close) = s[body_start..].find('}') else {
            return Err(VarError::Unterminated {
                reference: quote(&s[start..]),
                position: start,
            });
        };
        let end = body_start + close;
        let body = &s[body_start..end];
        let (name, default) = match body.find(":=") {
            Some(i) => (&body[..i], Some(&body[i + 2..])),
            None => (body, None),
        };
        let reference = &s[start..=end];
        if name.is_empty() {
            return Err(VarError::EmptyName {
                reference: quote(reference),
                position: start,
            });
        }
        if !is_valid_name(name) {
            return Err(VarError::InvalidName {
                name: quote(name),
                reference: quote(reference),
                position: start,
            });
        }
        if start > text_start {
            f(Piece::Text(&s[text_start..start]))?;
        }
        f(Piece::Ref(Ref {
            name,
            default,
            position: start,
        }))?;
        text_start = end + 1;
    }
    if text_start < s.len() {
        f(Piece::Text(&s[text_start..]))?;
    }
    Ok(())
}

/// Whether `name` matches `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `s`, cut to [`MAX_QUOTED_CHARS`] characters (on a char boundary) with `...` when longer.
fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_plain_and_default() {
        let v = vars(&[("NAMESPACE", "demo"), ("EMPTY", "")]);
        assert_eq!(substitute("ns=${NAMESPACE}", &v).unwrap(), "ns=demo");
        assert_eq!(substitute("${NAMESPACE:=x}", &v).unwrap(), "demo");
        assert_eq!(substitute("${MISSING:=x}", &v).unwrap(), "x");
        assert_eq!(substitute("${EMPTY:=x}", &v).unwrap(), "x");
        assert_eq!(substitute("[${EMPTY}]", &v).unwrap(), "[]");
        assert_eq!(substitute("[${MISSING:=}]", &v).unwrap(), "[]");
        assert_eq!(substitute("${MISSING:=a:=b{c}", &v).unwrap(), "a:=b{c");
        assert_eq!(
            substitute("${NAMESPACE}${NAMESPACE}-${MISSING:=7}", &v).unwrap(),
            "demodemo-7"
        );
    }

    #[test]
    fn dollar_without_brace_is_literal() {
        let v = vars(&[("A", "1")]);
        for s in [
            "$HOME",
            "a$b",
            "trailing$",
            "$",
            "$$",
            "$(date)",
            "$}",
            "{A}",
        ] {
            assert_eq!(substitute(s, &v).unwrap(), s);
            check(s).unwrap();
        }
        assert_eq!(substitute("$${A}", &v).unwrap(), "$1");
    }

    #[test]
    fn unset_without_default_is_an_error() {
        let err = substitute("x ${MISSING}", &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err,
            VarError::Unset {
                name: "MISSING".into(),
                position: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "variable ${MISSING} at position 2 is not set and has no default: set it (for example with a Task param) or write ${MISSING:=default}"
        );
    }

    #[test]
    fn syntax_errors_come_before_unset_variables() {
        assert!(matches!(
            substitute("${A}${", &BTreeMap::new()),
            Err(VarError::Unterminated { position: 4, .. })
        ));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            check("abc ${FOO").unwrap_err().to_string(),
            r#"unterminated variable reference "${FOO" at position 4: expected "}""#
        );
        assert_eq!(
            check("${1A}").unwrap_err().to_string(),
            r#"invalid variable name "1A" in "${1A}" at position 0: names match [A-Za-z_][A-Za-z0-9_]*"#
        );
        assert_eq!(
            check("a ${}").unwrap_err().to_string(),
            r#"empty variable name in "${}" at position 2: names match [A-Za-z_][A-Za-z0-9_]*"#
        );
        assert!(matches!(
            check("${:=x}"),
            Err(VarError::EmptyName { position: 0, .. })
        ));
        // `:` alone is not the default separator, so it is part of the (invalid) name.
        assert!(matches!(
            check("${A:b}"),
            Err(VarError::InvalidName { ref name, .. }) if name == "A:b"
        ));
        assert!(matches!(check("${ A }"), Err(VarError::InvalidName { .. })));
        assert!(matches!(check("${A-B}"), Err(VarError::InvalidName { .. })));
    }

    #[test]
    fn long_input_is_cut_in_messages() {
        let s = format!("${{{}", "é".repeat(100));
        let msg = check(&s).unwrap_err().to_string();
        assert!(msg.contains("..."), "{msg}");
        assert!(msg.len() < 200, "{msg}");
    }

    #[test]
    fn valid_names() {
        for n in ["A", "_", "a_b", "REPOSITORY_NAME", "x1", "_9"] {
            assert!(is_valid_name(n), "{n}");
        }
        for n in ["", "1", "a-b", "a.b", "é", " a"] {
            assert!(!is_valid_name(n), "{n}");
        }
    }

    #[test]
    fn nesting_is_not_supported() {
        // The default is `${B`; the last `}` is literal.
        let v = vars(&[("B", "b")]);
        assert_eq!(substitute("${A:=${B}}", &v).unwrap(), "${B}");
    }

    #[test]
    fn single_pass() {
        let v = vars(&[("A", "${B}"), ("B", "b")]);
        assert_eq!(substitute("${A}", &v).unwrap(), "${B}");
        let v = vars(&[("A", "${")]);
        assert_eq!(substitute("${A}}", &v).unwrap(), "${}");
    }

    #[test]
    fn referenced_names() {
        assert_eq!(
            referenced("${A} ${B:=x} ${A} $C ${_D:=}").unwrap(),
            vec!["A", "B", "_D"]
        );
        assert!(referenced("${A").is_err());
        assert!(referenced("plain").unwrap().is_empty());
    }

    #[test]
    fn substitute_all_collects_errors() {
        let v = vars(&[("A", "1")]);
        let mut strings = vec!["${A}".to_string(), "${B}".into(), "${".into()];
        let errs = substitute_all(strings.iter_mut(), &v).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(strings, vec!["1", "${B}", "${"]);
    }

    #[test]
    fn json_tree() {
        let v = vars(&[("NAMESPACE", "demo"), ("N", "3")]);
        let mut tree = json!({
            "image": "agent:${TAG:=latest}",
            "args": ["--ns=${NAMESPACE}", "--n", "${N}", 5, true, null],
            "env": [{"name": "${NAMESPACE}", "value": "${NAMESPACE}"}],
        });
        substitute_json(&mut tree, &v).unwrap();
        assert_eq!(
            tree,
            json!({
                "image": "agent:latest",
                "args": ["--ns=demo", "--n", "3", 5, true, null],
                "env": [{"name": "demo", "value": "demo"}],
            })
        );

        let mut tree = json!({"containers": [{"args": ["ok", "${X}", "${1}"]}], "w": "${"});
        let errs = substitute_json(&mut tree, &v).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec!["containers[0].args[1]", "containers[0].args[2]", "w"]
        );
        assert!(matches!(errs[0].1, VarError::Unset { .. }));

        let mut root = json!("${X}");
        assert_eq!(substitute_json(&mut root, &v).unwrap_err()[0].0, "");
    }

    /// Strings made of the pieces that matter to the parser, with multibyte chars next to them.
    fn tricky() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "${", "}", ":=", ":", "=", "$", "{", "A", "_", "b9", "1", " ", "é", "日本", "🦀",
                "\u{0}", "-",
            ]),
            0..24,
        )
        .prop_map(|parts| parts.concat())
    }

    /// `s` with every `${` taken out (repeatedly: removing one can make another).
    fn without_references(mut s: String) -> String {
        while s.contains("${") {
            s = s.replace("${", "{");
        }
        s
    }

    fn any_input() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), tricky()]
    }

    proptest! {
        #[test]
        fn never_panics(s in any_input(), value in any::<String>()) {
            let v = vars(&[("A", &value), ("_", ""), ("b9", "x")]);
            let _ = check(&s);
            let _ = referenced(&s);
            let _ = substitute(&s, &v);
            if let Err(e) = check(&s) {
                let _ = e.to_string();
            }
        }

        #[test]
        fn check_substitute_referenced_agree(s in any_input()) {
            match check(&s) {
                Err(e) => {
                    prop_assert_eq!(referenced(&s), Err(e.clone()));
                    prop_assert_eq!(substitute(&s, &BTreeMap::new()), Err(e.clone()));
                    let position = match &e {
                        VarError::Unterminated { position, .. }
                        | VarError::EmptyName { position, .. }
                        | VarError::InvalidName { position, .. }
                        | VarError::Unset { position, .. } => *position,
                    };
                    let at_reference = s[position..].starts_with("${");
                    prop_assert!(at_reference, "position {} in {:?}", position, s);
                }
                Ok(()) => {
                    // With every referenced name set, substitution succeeds.
                    let names = referenced(&s).unwrap();
                    let v: BTreeMap<String, String> =
                        names.iter().map(|n| (n.to_string(), "v".to_string())).collect();
                    prop_assert!(substitute(&s, &v).is_ok());
                }
            }
        }

        #[test]
        fn text_without_references_is_unchanged(s in any_input().prop_map(without_references)) {
            prop_assert_eq!(check(&s), Ok(()));
            prop_assert!(referenced(&s).unwrap().is_empty());
            prop_assert_eq!(substitute(&s, &BTreeMap::new()).unwrap(), s);
        }

        #[test]
        fn default_only_when_unset_or_empty(
            name in "[A-Za-z_][A-Za-z0-9_]{0,8}",
            default in "[^}]{0,12}",
            value in proptest::option::of(".{0,12}"),
            before in "[^$]{0,6}",
            after in "[^$]{0,6}",
        ) {
            let mut v = BTreeMap::new();
            if let Some(value) = &value {
                v.insert(name.clone(), value.clone());
            }
            let s = format!("{before}${{{name}:={default}}}{after}");
            let expected = match &value {
                Some(value) if !value.is_empty() => value.clone(),
                _ => default.clone(),
            };
            prop_assert_eq!(substitute(&s, &v).unwrap(), format!("{before}{expected}{after}"));
        }

        #[test]
        fn set_value_without_default(name in "[A-Za-z_][A-Za-z0-9_]{0,8}", value in ".{0,12}") {
            let v = BTreeMap::from([(name.clone(), value.clone())]);
            prop_assert_eq!(substitute(&format!("${{{name}}}"), &v).unwrap(), value);
            prop_assert_eq!(
                substitute(&format!("${{{name}}}"), &BTreeMap::new()),
                Err(VarError::Unset { name: name.clone(), position: 0 })
            );
        }

        #[test]
        fn values_are_not_rescanned(value in any_input(), other in any_input()) {
            // Whatever the value holds, even references or broken syntax, it lands verbatim.
            let v = vars(&[("A", &value), ("B", &other)]);
            prop_assert_eq!(substitute("<${A}>", &v).unwrap(), format!("<{value}>"));
        }
    }
}
