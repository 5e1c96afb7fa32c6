//! Admission rules for `spec.hooks`: each handler as [`Handler::refusals`] says, and post hooks
//! refused until cairn runs them, each at its field's path.

use super::Verdict;
use crate::hooks::{BackupHooks, Handler, PostHook, RestoreHooks};

/// `spec.hooks` of a BackupConfiguration.
pub(crate) fn check_backup_hooks(v: &mut Verdict, hooks: Option<&BackupHooks>) {
    let Some(h) = hooks else { return };
    check_pre(v, "spec.hooks.preBackup", h.pre_backup.as_ref());
    check_post(v, "spec.hooks.postBackup", h.post_backup.as_ref());
}

/// `spec.hooks` of a RestoreSession.
pub(crate) fn check_restore_hooks(v: &mut Verdict, hooks: Option<&RestoreHooks>) {
    let Some(h) = hooks else { return };
    check_pre(v, "spec.hooks.preRestore", h.pre_restore.as_ref());
    check_post(v, "spec.hooks.postRestore", h.post_restore.as_ref());
}

fn check_pre(v: &mut Verdict, path: &str, handler: Option<&Handler>) {
    let Some(handler) = handler else { return };
    for (below, why) in handler.refusals() {
        v.error(join(path, &below), why);
    }
    if handler.exec.is_none() && handler.container_name.is_some() {
        v.warn(
            join(path, "containerName"),
            "used only by exec hooks and named ports: ignored for this hook",
        );
    }
}

fn check_post(v: &mut Verdict, path: &str, hook: Option<&PostHook>) {
    if let Some(hook) = hook {
        v.error(path, hook.refusal());
    }
}

fn join(path: &str, below: &str) -> String {
    if below.is_empty() {
        path.to_string()
    } else {
        format!("{path}.{below}")
    }
}
