//! The Go templates of Stash's hooks: Go's `text/template` language (through the `gtmpl` crate:
//! `{{ .Field }}`, `{{if}}`/`{{else}}`/`{{end}}`, `eq`, `ne`, `and`, `or`, `not`, `len`,
//! `printf`, trimming with `{{-` / `-}}`) over Stash's session summary ([`FIELDS`]). A template
//! that names another field or a function Go's builtins lack (`toJson`, sprig's) is refused at
//! admission by [`check`], never sent as written. The webhook renders what users write, so
//! [`limits`] keeps every render short: no loops or template calls, bounded size, nesting and
//! `printf` widths.

use std::collections::{BTreeMap, HashMap};

use gtmpl::error::{ExecError, ParseError};
use gtmpl::{Context, Template, Value};

/// The fields of Stash's summary a hook may name (its Go struct's field names).
pub const FIELDS: [&str; 12] = [
    "Name",
    "Namespace",
    "Invoker.APIGroup",
    "Invoker.Kind",
    "Invoker.Name",
    "Target.APIVersion",
    "Target.Kind",
    "Target.Name",
    "Target.Namespace",
    "Status.Phase",
    "Status.Duration",
    "Status.Error",
];

/// Whether cairn renders `text` as Stash would: it parses, and renders both a succeeded and a
/// failed session (so a field named only in one branch of an `{{if}}` is checked too).
pub fn check(text: &str) -> Result<(), String> {
    for (phase, error) in [("Succeeded", ""), ("Failed", "the session failed")] {
        let sample: BTreeMap<&str, String> = FIELDS
            .iter()
            .map(|f| (*f, format!("sample-{f}")))
            .chain([
                ("Status.Phase", phase.into()),
                ("Status.Error", error.into()),
            ])
            .collect();
        render(text, &sample)?;
    }
    Ok(())
}

/// The longest template cairn renders (a hook body is a message, not a program).
pub const MAX_TEMPLATE_BYTES: usize = 4096;

/// How deep `{{if}}` blocks and parentheses may nest.
const MAX_NESTING: usize = 16;

/// The actions Stash's flat summary never needs and that would let a template loop or recurse
/// (`range`, `with`, `define`, `template`, `block`): the webhook renders every template it
/// admits, so a template must end quickly, whatever its writer meant.
const REFUSED_ACTIONS: [&str; 5] = ["range", "with", "define", "template", "block"];

/// Why cairn will not render `text` however it parses: too long, a refused action, nesting too
/// deep, or a `printf` width or precision past 999 (each is work or memory a writer chooses).
fn limits(text: &str) -> Result<(), String> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "the template is {} bytes; hook templates may have at most {MAX_TEMPLATE_BYTES}",
            text.len()
        ));
    }
    let mut depth = 0usize;
    for action in text.split("{{").skip(1) {
        let action = action.split("}}").next().unwrap_or_default();
        let words = action.trim_start_matches('-').trim_start();
        let first = words.split(|c: char| !c.is_ascii_alphanumeric()).next();
        if let Some(word) = first.filter(|w| REFUSED_ACTIONS.contains(w)) {
            return Err(format!(
                "{{{{{word}}}}}: hook templates read a flat summary; cairn renders .Field, \
                 if/else/end and functions, not {}",
                REFUSED_ACTIONS.join(", ")
            ));
        }
        match first {
            Some("if") => depth += 1,
            Some("end") => depth = depth.saturating_sub(1),
            _ => {}
        }
        let parens = action.chars().filter(|c| *c == '(').count();
        if depth > MAX_NESTING || parens > MAX_NESTING {
            return Err(format!(
                "the template nests deeper than {MAX_NESTING} levels of {{{{if}}}} or parentheses"
            ));
        }
    }
    let width = fancy_regex::Regex::new(r"%[-+# 0]*(\*|\d{4,})|%[-+# 0]*\d*\.(\*|\d{4,})")
        .map_err(|e| e.to_string())?;
    if width.is_match(text).unwrap_or(true) {
        return Err(
            "printf widths and precisions above 999 (or taken from an argument, `*`) \
                    are not rendered"
                .into(),
        );
    }
    Ok(())
}

/// `text` rendered over the summary `values` (keyed by [`FIELDS`]; a field without a value
/// renders empty).
pub fn render(text: &str, values: &BTreeMap<&str, String>) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    limits(text)?;
    let context = Context::from(summary(values));
    // The parser is a third-party crate fed what a user wrote: a panic in it becomes a refusal,
    // never a dead webhook worker.
    std::panic::catch_unwind(|| {
        let mut template = Template::default();
        template.parse(text).map_err(|e| parse_error(&e))?;
        template.render(&context).map_err(|e| explain(&e))
    })
    .unwrap_or_else(|_| Err("the template could not be parsed".into()))
}

/// The summary as the nested object Stash's Go struct is (`.Status.Phase`, ...).
fn summary(values: &BTreeMap<&str, String>) -> Value {
    let mut root: HashMap<String, Value> = HashMap::new();
    for field in FIELDS {
        let value = Value::from(values.get(field).cloned().unwrap_or_default());
        match field.split_once('.') {
            None => {
                root.insert(field.into(), value);
            }
            Some((outer, inner)) => {
                let entry = root
                    .entry(outer.into())
                    .or_insert_with(|| Value::Object(HashMap::new()));
                if let Value::Object(map) = entry {
                    map.insert(inner.into(), value);
                }
            }
        }
    }
    Value::Object(root)
}

/// A parse error without the parser's `template: :LINE:` prefix, with the functions there are.
fn parse_error(e: &ParseError) -> String {
    let why = match e {
        ParseError::WithContext(_, why) => why.clone(),
        other => format!("{other}"),
    };
    let functions: Vec<&str> = gtmpl::funcs::BUILTINS.iter().map(|(n, _)| *n).collect();
    format!(
        "{why}: hook templates are Go's text/template with its builtin functions ({}), not \
         sprig's",
        functions.join(", ")
    )
}

/// An execution error in words that name what a hook may use (never the values it had).
fn explain(e: &ExecError) -> String {
    match e {
        ExecError::NoFiledFor(field, _) => format!(
            "the summary has no field {field}: hook templates may read .{}",
            FIELDS.join(", .")
        ),
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(phase: &str, error: &str) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("Name", "s-1".to_string()),
            ("Namespace", "shop".into()),
            ("Target.Name", "orders".into()),
            ("Status.Phase", phase.into()),
            ("Status.Error", error.into()),
        ])
    }

    #[test]
    fn fields_render_and_trim_as_go_does() {
        let out = render(
            "{\"s\": \"{{ .Name }}\",  {{- .Status.Phase -}}  }",
            &values("Failed", ""),
        );
        assert_eq!(out.as_deref(), Ok("{\"s\": \"s-1\",Failed}"));
        assert_eq!(
            render("{{.Status.Duration}}", &values("Failed", "")).as_deref(),
            Ok("")
        );
    }

    /// The body of Stash's own Slack example (its e2e test's `httpPost` hook).
    #[test]
    fn stashs_slack_example_renders_each_outcome() {
        let body = "{{if eq .Status.Phase `Succeeded`}}:white_check_mark: Backup succeeded \
                    for {{ .Namespace }}/{{.Target.Name}}{{else}}:x: Backup failed for \
                    {{ .Namespace }}/{{.Target.Name}} Reason: {{.Status.Error}}.{{end}}";
        assert!(check(body).is_ok());
        assert_eq!(
            render(body, &values("Succeeded", "")).as_deref(),
            Ok(":white_check_mark: Backup succeeded for shop/orders")
        );
        assert_eq!(
            render(body, &values("Failed", "disk full")).as_deref(),
            Ok(":x: Backup failed for shop/orders Reason: disk full.")
        );
    }

    #[test]
    fn unknown_fields_and_functions_are_refused_with_the_fields_named() {
        for text in [
            "{{ toJson .Name }}",
            "{{ .Nope }}",
            "{{ .Status.Nope }}",
            "{{if eq .Status.Phase `Failed`}}{{ .Secret }}{{end}}",
            "{{ .Name",
            "{{ $x := 1 }}{{ $y }}",
        ] {
            assert!(check(text).is_err(), "{text}");
        }
        let why = check("{{ range $ }}{{ range $ }}x{{ end }}{{ end }}").unwrap_err();
        assert!(why.contains("not range, with, define"), "{why}");
        for text in [
            format!("{}{}", "{{if 1}}".repeat(17), "{{end}}".repeat(17)),
            format!("{{{{ {}1{} }}}}", "(".repeat(17), ")".repeat(17)),
            "{{ printf \"%99999999d\" 1 }}".to_string(),
            "{{ printf \"%.5000f\" 1.0 }}".to_string(),
            "{{ printf \"%*d\" 1000000000 1 }}".to_string(),
            format!("{{{{ .Name }}}}{}", "x".repeat(MAX_TEMPLATE_BYTES)),
            "{{define \"t\"}}{{template \"t\"}}{{end}}{{template \"t\"}}".to_string(),
            "{{with .Status}}{{.Phase}}{{end}}".to_string(),
        ] {
            assert!(check(&text).is_err(), "{text}");
        }
        let nested = format!("{}x{}", "{{if 1}}".repeat(16), "{{end}}".repeat(16));
        assert_eq!(check(&nested), Ok(()));
        assert_eq!(
            render("{{ printf \"%-12s|\" .Name }}", &values("Failed", "")).as_deref(),
            Ok("s-1         |")
        );
        let why = check("{{ .Nope }}").unwrap_err();
        assert!(
            why.contains("Nope") && why.contains(".Status.Phase"),
            "{why}"
        );
        let why = check("{{ toJson .Name }}").unwrap_err();
        assert!(why.starts_with("function toJson not defined: "), "{why}");
        assert!(
            why.contains("printf") && why.contains("not sprig's"),
            "{why}"
        );
        assert!(check("no template").is_ok());
    }
}
