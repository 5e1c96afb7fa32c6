//! Admission rules for `spec.hooks`: each handler as [`Handler::refusals`] says, at its
//! field's path (templates only in post hooks).

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
