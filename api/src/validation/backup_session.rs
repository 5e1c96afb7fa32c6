//! Admission rules for BackupSession (`admission.md`, "BackupSession").
//!
//! On CREATE the invoker must be a BackupConfiguration that exists in the session's namespace.
//! Unlike other references this one is a rejection, not a warning: a session is one run, made
//! now, and the webhook resolves its Job from the invoker at this very moment. On UPDATE the
//! spec is immutable (the webhook's own CREATE-time mutation of `jobTemplate` and `retryLeft`
//! is part of the stored object, so an UPDATE that leaves the spec as stored passes).

use super::{Lookups, Verdict};
use crate::BackupSession;
use crate::backup_session::BackupSessionSpec;
use crate::common::GROUP;
use crate::naming::{LABEL_INVOKER_KIND, LABEL_INVOKER_NAME, label_value};

/// The one supported invoker kind.
const INVOKER_KIND: &str = "BackupConfiguration";

/// Every error and warning of a BackupSession (`old` is set on UPDATE).
pub fn validate_backup_session(
    new: &BackupSession,
    old: Option<&BackupSession>,
    lookups: &dyn Lookups,
) -> Verdict {
    let mut v = Verdict::default();
    if let Some(old) = old {
        // Never block deletion; otherwise the only rule of an UPDATE is immutability: the
        // invoker may be gone by now, and status and finalizer updates must still pass.
        if new.metadata.deletion_timestamp.is_none() {
            check_immutable(&old.spec, &new.spec, &mut v);
        }
        return v;
    }

    let invoker = &new.spec.invoker;
    if invoker.kind != INVOKER_KIND {
        let what = if invoker.kind.is_empty() {
            "is empty".to_string()
        } else {
            format!("{:?} is not supported", invoker.kind)
        };
        v.error(
            "spec.invoker.kind",
            format!("{what}: the only supported invoker kind is {INVOKER_KIND}"),
        );
    }
    if let Some(group) = invoker
        .api_group
        .as_deref()
        .filter(|g| !g.is_empty() && *g != GROUP)
    {
        // Only a BackupConfiguration of ours is looked up, whatever the group says (a Stash
        // manifest may still say stash.appscode.com): admitted, but say so.
        v.warn(
            "spec.invoker.apiGroup",
            format!("{group:?} is ignored: the invoker is a {INVOKER_KIND} of {GROUP}; set apiGroup: {GROUP} or leave it out"),
        );
    }

    let namespace = new.metadata.namespace.as_deref().unwrap_or_default();
    if invoker.name.is_empty() {
        v.error(
            "spec.invoker.name",
            format!("is empty: name the {INVOKER_KIND} (in namespace {namespace:?}) to run"),
        );
    } else if let Some(config) = lookups
        .backup_configuration(namespace, &invoker.name)
        .filter(|_| invoker.kind == INVOKER_KIND)
    {
        if let Some(left) = new.spec.retry_left.filter(|l| *l > config.max_retry()) {
            v.error(
                "spec.retryLeft",
                format!(
                    "{left} is more than {INVOKER_KIND} {namespace}/{}'s retryConfig.maxRetry \
                     ({}): leave it out (cairn sets it) or set at most that",
                    invoker.name,
                    config.max_retry()
                ),
            );
        }
    } else if invoker.kind == INVOKER_KIND {
        v.error(
            "spec.invoker.name",
            format!(
                "{INVOKER_KIND} {namespace}/{} does not exist: a session runs an existing \
                 {INVOKER_KIND} of its own namespace; create it first or name an existing one",
                invoker.name
            ),
        );
    }
    check_invoker_labels(new, &mut v);
    v
}

/// The invoker labels, written by cairn at CREATE, must say what the spec says: a label naming
/// another configuration would mislead every `kubectl get -l` and dashboard.
fn check_invoker_labels(new: &BackupSession, v: &mut Verdict) {
    let labels = new.metadata.labels.clone().unwrap_or_default();
    let invoker = &new.spec.invoker;
    for (key, want) in [
        (LABEL_INVOKER_KIND, invoker.kind.clone()),
        (LABEL_INVOKER_NAME, label_value(&invoker.name)),
    ] {
        if let Some(got) = labels.get(key).filter(|got| **got != want) {
            v.error(
                format!("metadata.labels[{key}]"),
                format!(
                    "{got:?} does not match spec.invoker ({want:?}): cairn writes this label; \
                     leave it out"
                ),
            );
        }
    }
}

/// A session written by a user may not carry its Job: cairn resolves it (the stored
/// `spec.jobTemplate` is only a preview, written by the webhook at CREATE).
pub fn check_user_written_session(job_template_set: bool) -> Verdict {
    let mut v = Verdict::default();
    if job_template_set {
        v.error(
            "spec.jobTemplate",
            "only cairn writes it (the webhook shows there the Job it will run, resolved from \
             the configuration, its Task and Functions, the Repository and the AppBinding; the \
             controller builds that Job again when the session starts): leave it out",
        );
    }
    v
}

/// One error per changed field of `spec`, each saying the whole spec is immutable.
fn check_immutable(old: &BackupSessionSpec, new: &BackupSessionSpec, v: &mut Verdict) {
    if old == new {
        return;
    }
    let advice = "create a new BackupSession to run the backup again";
    if old.invoker != new.invoker {
        v.error(
            "spec.invoker",
            format!(
                "spec is immutable once created: invoker changed from {}/{} to {}/{}; {advice}",
                old.invoker.kind, old.invoker.name, new.invoker.kind, new.invoker.name
            ),
        );
    }
    if old.retry_left != new.retry_left {
        let show = |r: Option<i32>| r.map_or_else(|| "unset".to_string(), |r| r.to_string());
        v.error(
            "spec.retryLeft",
            format!(
                "spec is immutable once created: retryLeft changed from {} to {}; {advice}",
                show(old.retry_left),
                show(new.retry_left)
            ),
        );
    }
    if old.job_template != new.job_template {
        v.error(
            "spec.jobTemplate",
            format!(
                "spec is immutable once created: jobTemplate changed (it is resolved by the \
                 webhook at creation; do not edit it); {advice}"
            ),
        );
    }
}
