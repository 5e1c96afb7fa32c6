//! The Go templates of Stash's hooks, as far as cairn renders them: `{{ .Field }}` over Stash's
//! session summary ([`FIELDS`]), with `{{-` / `-}}` trimming the whitespace beside them as Go
//! does. Anything else (functions, pipelines, `dict`, `toJson`) is refused at admission by
//! [`check`], never sent as written.

use std::collections::BTreeMap;

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

/// One `{{ ... }}` action: its field, and whether it trims the whitespace before and after.
struct Part<'a> {
    field: &'a str,
    trim_before: bool,
    trim_after: bool,
}

/// Splits `text` into literal pieces and actions; the reason when an action is not a field.
fn parse(text: &str) -> Result<Vec<Result<&str, Part<'_>>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push(Ok(&rest[..start]));
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "a template action {{ has no closing }}".to_string())?;
        let mut inner = &after[..end];
        let trim_before = inner.starts_with("- ");
        let trim_after = inner.ends_with(" -");
        if trim_before {
            inner = &inner[1..];
        }
        if trim_after {
            inner = &inner[..inner.len() - 1];
        }
        let action = inner.trim();
        let field = action
            .strip_prefix('.')
            .filter(|f| FIELDS.contains(f))
            .ok_or_else(|| {
                format!(
                    "{{{{{inner}}}}}: cairn renders only the summary's fields in hook templates \
                     (.{}); functions and pipelines are not supported yet",
                    FIELDS.join(", .")
                )
            })?;
        out.push(Err(Part {
            field,
            trim_before,
            trim_after,
        }));
        rest = &after[end + 2..];
    }
    out.push(Ok(rest));
    Ok(out)
}

/// Whether cairn renders `text` as Stash would.
pub fn check(text: &str) -> Result<(), String> {
    parse(text).map(|_| ())
}

/// `text` with each action replaced by its field's value in `values` (empty when absent).
pub fn render(text: &str, values: &BTreeMap<&str, String>) -> Result<String, String> {
    let parts = parse(text)?;
    let mut out = String::new();
    let mut trim_next = false;
    for part in parts {
        match part {
            Ok(literal) => {
                let literal = if trim_next {
                    literal.trim_start()
                } else {
                    literal
                };
                out.push_str(literal);
                trim_next = false;
            }
            Err(p) => {
                if p.trim_before {
                    out.truncate(out.trim_end().len());
                }
                out.push_str(values.get(p.field).map_or("", String::as_str));
                trim_next = p.trim_after;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_render_and_trim_as_go_does() {
        let values = BTreeMap::from([
            ("Name", "s-1".to_string()),
            ("Status.Phase", "Failed".into()),
        ]);
        let out = render(
            "{\"s\": \"{{ .Name }}\",  {{- .Status.Phase -}}  }",
            &values,
        );
        assert_eq!(out.as_deref(), Ok("{\"s\": \"s-1\",Failed}"));
        assert_eq!(render("{{.Status.Error}}", &values).as_deref(), Ok(""));
    }

    #[test]
    fn anything_but_a_field_is_refused() {
        for text in [
            "{{ toJson .Name }}",
            "{{ .Nope }}",
            "{{ .Name",
            "{{ $x := 1 }}",
        ] {
            assert!(check(text).is_err(), "{text}");
        }
        assert!(check("no template").is_ok());
    }
}
