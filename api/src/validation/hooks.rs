//! Admission rules for `spec.hooks`: each handler as [`Handler::refusals`] says, at its
//! field's path (templates only in post hooks); and whether the writer of an `exec` hook may
//! exec themselves, from the API server's answer the webhook fetched ([`ExecAccess`]).

use super::Verdict;
use crate::hooks::{BackupHooks, Handler, RestoreHooks};

/// `spec.hooks` of a BackupConfiguration.
pub(crate) fn check_backup_hooks(v: &mut Verdict, hooks: Option<&BackupHooks>) {
    let Some(h) = hooks else { return };
    check_handler(v, "spec.hooks.preBackup", h.pre_backup.as_ref(), false);
    let post = h.post_backup.as_ref().map(|p| &p.handler);
    check_handler(v, "spec.hooks.postBackup", post, true);
}

/// `spec.hooks` of a RestoreSession.
pub(crate) fn check_restore_hooks(v: &mut Verdict, hooks: Option<&RestoreHooks>) {
    let Some(h) = hooks else { return };
    check_handler(v, "spec.hooks.preRestore", h.pre_restore.as_ref(), false);
    let post = h.post_restore.as_ref().map(|p| &p.handler);
    check_handler(v, "spec.hooks.postRestore", post, true);
}

fn check_handler(v: &mut Verdict, path: &str, handler: Option<&Handler>, templates: bool) {
    let Some(handler) = handler else { return };
    for (below, why) in handler.refusals(templates) {
        v.error(join(path, &below), why);
    }
    if handler.exec.is_none() && handler.container_name.is_some() {
        v.warn(
            join(path, "containerName"),
            "used only by exec hooks and named ports: ignored for this hook",
        );
    }
}

fn join(path: &str, below: &str) -> String {
    if below.is_empty() {
        path.to_string()
    } else {
        format!("{path}.{below}")
    }
}

/// What the API server answered when asked (a SubjectAccessReview) whether the user who writes
/// an object may `create pods/exec` in its namespace. An `exec` hook runs with the controller's
/// right, so only someone who holds that right themselves may write one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecAccess {
    Allowed,
    /// Not allowed, or not known: the reason.
    Denied(String),
}

/// The hooks of `spec.hooks` in `hooks` (an object's `spec.hooks` as JSON) that are `exec`.
fn exec_hooks(hooks: Option<&serde_json::Value>) -> Vec<(&str, &serde_json::Value)> {
    let Some(hooks) = hooks.and_then(|h| h.as_object()) else {
        return Vec::new();
    };
    hooks
        .iter()
        .filter_map(|(name, h)| h.get("exec").map(|e| (name.as_str(), e)))
        .collect()
}

/// The `exec` hooks an object `new` writes (as JSON; those it adds or changes against `old`),
/// by path (`spec.hooks.preBackup.exec`): whoever writes them must be allowed to exec.
/// Unchanged ones were checked for whoever wrote them, so a re-apply is not asked again.
pub fn exec_hooks_written(new: &serde_json::Value, old: Option<&serde_json::Value>) -> Vec<String> {
    let before = exec_hooks(old.and_then(|o| o.pointer("/spec/hooks")));
    exec_hooks(new.pointer("/spec/hooks"))
        .into_iter()
        .filter(|hook| !before.contains(hook))
        .map(|(name, _)| format!("spec.hooks.{name}.exec"))
        .collect()
}

/// The verdict on the `exec` hooks at `paths`, given the API server's answer.
pub fn check_exec_access(paths: &[String], access: &ExecAccess) -> Verdict {
    let mut v = Verdict::default();
    if let ExecAccess::Denied(why) = access {
        for path in paths {
            v.error(
                path.clone(),
                format!(
                    "an exec hook runs in the target's pods with the controller's right, so \
                     whoever writes it must be allowed to create pods/exec in this namespace \
                     themselves: {why}"
                ),
            );
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_added_or_changed_exec_hooks_are_asked_for() {
        let exec = |c: &str| {
            json!({"spec": {"hooks": {"preBackup": {"exec": {"command": [c]}},
            "postBackup": {"httpGet": {"host": "h", "port": 80}}}}})
        };
        assert_eq!(
            exec_hooks_written(&exec("sync"), None),
            ["spec.hooks.preBackup.exec"]
        );
        assert!(exec_hooks_written(&exec("sync"), Some(&exec("sync"))).is_empty());
        assert_eq!(
            exec_hooks_written(&exec("fsfreeze"), Some(&exec("sync"))),
            ["spec.hooks.preBackup.exec"]
        );
        assert!(exec_hooks_written(&json!({"spec": {}}), None).is_empty());
    }

    #[test]
    fn a_denied_user_is_refused_at_each_exec_hook_with_the_reason() {
        let paths = ["spec.hooks.preBackup.exec".to_string()];
        assert!(check_exec_access(&paths, &ExecAccess::Allowed).allowed());
        let v = check_exec_access(&paths, &ExecAccess::Denied("no RBAC rule".into()));
        assert_eq!(v.errors.len(), 1);
        assert_eq!(v.errors[0].path, "spec.hooks.preBackup.exec");
        assert!(
            v.errors[0].message.contains("pods/exec")
                && v.errors[0].message.contains("no RBAC rule")
        );
    }
}
