//! What a user may ask of the Job cairn runs for them: Task params that do not name a built-in
//! variable, `target.args` from the agent's flag table, runtime settings within the install's
//! Pod Security Standard, environment variables and pod labels that do not shadow cairn's.
//!
//! Admission reports these at the user's field paths; the resolver refuses the same findings
//! before it builds a Job, so an object admitted while the webhook was away runs nothing more.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::{Policy, Verdict};
use crate::builtins::{is_built_in_variable, is_injector_key, is_reserved_label, reserved_env};
use crate::common::{Param, RuntimeSettings, TaskRef};
use crate::defaults::Direction;
use crate::pod_security::{self, PodSecurityLevel};

/// The parts of a BackupConfiguration or RestoreSession that shape its Job, at their paths
/// (`spec.task`, `spec.target.args`, `spec.runtimeSettings`).
#[derive(Clone, Copy, Debug)]
pub struct JobRequest<'a> {
    pub direction: Direction,
    pub task: Option<&'a TaskRef>,
    pub target_args: &'a [String],
    pub runtime_settings: Option<&'a RuntimeSettings>,
}

impl<'a> From<&'a crate::BackupConfiguration> for JobRequest<'a> {
    fn from(c: &'a crate::BackupConfiguration) -> Self {
        Self {
            direction: Direction::Backup,
            task: c.spec.task.as_ref(),
            target_args: &c.spec.target.args,
            runtime_settings: c.spec.runtime_settings.as_ref(),
        }
    }
}

impl<'a> From<&'a crate::RestoreSession> for JobRequest<'a> {
    fn from(r: &'a crate::RestoreSession) -> Self {
        Self {
            direction: Direction::Restore,
            task: r.spec.task.as_ref(),
            target_args: &r.spec.target.args,
            runtime_settings: r.spec.runtime_settings.as_ref(),
        }
    }
}

impl JobRequest<'_> {
    /// Every rule of this module, at the paths of the object's spec.
    pub fn check(&self, v: &mut Verdict, policy: &Policy) {
        check_task_params(v, "spec.task", self.task, self.direction);
        check_target_args(v, "spec.target.args", self.target_args, self.direction);
        check_job_settings(
            v,
            "spec.runtimeSettings",
            self.runtime_settings,
            policy.job_pod_security,
        );
    }
}

/// A Task param may not name a built-in variable: cairn's values are never shadowed. Stash's
/// `args` param (elasticdump's flags) is translated where cairn has the meaning
/// ([`crate::stash_args`]): a flag it cannot read is an error, one it has no meaning for a
/// warning naming what to use instead.
pub fn check_task_params(
    v: &mut Verdict,
    path: &str,
    task: Option<&TaskRef>,
    direction: Direction,
) {
    let Some(task) = task else { return };
    check_params(v, &format!("{path}.params"), &task.params);
    for (i, p) in task.params.iter().enumerate() {
        if p.name != crate::stash_args::ARGS_PARAM {
            continue;
        }
        let at = format!("{path}.params[{i}].value");
        match crate::stash_args::translate(&p.value, direction) {
            Ok(t) => {
                for (flag, instead) in t.unread {
                    v.warn(
                        at.clone(),
                        format!("Stash's elasticdump flag {flag} is not read by cairn: {instead}"),
                    );
                }
            }
            Err(errors) => errors.into_iter().for_each(|e| v.error(at.clone(), e)),
        }
    }
}

/// Params (of a Task reference or a Task's step, at `path`) may not name a built-in variable,
/// and those with fixed meanings (`existing`, `onFailure`, `waitTimeout`) take only those.
pub fn check_params(v: &mut Verdict, path: &str, params: &[Param]) {
    for (i, p) in params.iter().enumerate() {
        if let Some(why) = crate::task_params::check_param(&p.name, &p.value) {
            v.error(format!("{path}[{i}].value"), why);
        }
        if is_built_in_variable(&p.name) {
            v.error(
                format!("{path}[{i}].name"),
                format!(
                    "{:?} is a built-in variable that cairn sets for every Job; a param may not \
                     replace it: choose another name (Task params are the Task's own, \
                     lower-case variables such as include, exclude, waitTimeout)",
                    p.name
                ),
            );
        }
    }
}

/// Every item of `target.args` must be a tuning flag of the agent for this direction.
pub fn check_target_args(v: &mut Verdict, path: &str, args: &[String], direction: Direction) {
    for (i, arg) in args.iter().enumerate() {
        if let Some(why) = crate::agent_flags::check_arg(arg, direction) {
            v.error(format!("{path}[{i}]"), why);
        }
    }
}

/// Runtime settings may not take the Job past the install's Pod Security Standard, set an
/// environment variable cairn sets or that carries the repository's credentials, or a pod label
/// that routes the pod to a session. A token mount is ignored, with a warning.
pub fn check_job_settings(
    v: &mut Verdict,
    path: &str,
    settings: Option<&RuntimeSettings>,
    level: PodSecurityLevel,
) {
    let Some(settings) = settings else { return };
    let pod = settings.pod.as_ref();
    let container = settings.container.as_ref();
    check_job_security(v, path, settings, level);
    check_container_env(v, path, container);
    check_pod_placement(v, path, pod);
    check_pod_metadata(v, path, pod);
    if pod.and_then(|p| p.automount_service_account_token) == Some(true) {
        v.warn(
            format!("{path}.pod.automountServiceAccountToken"),
            "ignored: cairn's Jobs never mount a ServiceAccount token (the agent needs no \
             Kubernetes API access; its result travels in the termination message)",
        );
    }
}

/// The pod these settings make meets the install's Pod Security Standard.
fn check_job_security(
    v: &mut Verdict,
    path: &str,
    settings: &RuntimeSettings,
    level: PodSecurityLevel,
) {
    let pod = settings.pod.as_ref();
    let container = settings.container.as_ref();
    // The pod these settings make, built as the resolver builds it: every finding is one of
    // the user's fields, since cairn's own defaults meet `restricted`.
    let preview = PodSpec {
        security_context: Some(pod_security::pod_context(
            pod.and_then(|p| p.security_context.as_ref()),
        )),
        containers: vec![Container {
            name: "agent".into(),
            security_context: Some(pod_security::container_context([
                container.and_then(|c| c.security_context.as_ref())
            ])),
            ..Default::default()
        }],
        ..Default::default()
    };
    let annotations = pod.and_then(|p| p.pod_annotations.as_ref());
    for violation in pod_security::check_pod(annotations, &preview) {
        if violation.applies_at(level) {
            v.error(user_path(path, &violation.path), violation.message());
        }
    }
}

/// No env name cairn sets, and an own prefix for every envFrom.
fn check_container_env(
    v: &mut Verdict,
    path: &str,
    container: Option<&crate::common::ContainerRuntimeSettings>,
) {
    for (i, env) in container
        .and_then(|c| c.env.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(why) = reserved_env(&env.name) {
            v.error(
                format!("{path}.container.env[{i}].name"),
                format!("{:?} may not be set here: {why}", env.name),
            );
        }
    }
    for (i, from) in container
        .and_then(|c| c.env_from.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        // Every key of a ConfigMap or Secret becomes a variable: only a prefix of the user's
        // own keeps them off cairn's names.
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let probe = format!("{prefix}X");
        if prefix.is_empty() || reserved_env(&probe).is_some() || prefix.contains("PROXY") {
            v.error(
                format!("{path}.container.envFrom[{i}].prefix"),
                format!(
                    "{}: set a prefix of your own (e.g. APP_) so no key of the ConfigMap or \
                     Secret can replace a variable cairn sets or the repository's credentials",
                    if prefix.is_empty() {
                        "is not set".to_string()
                    } else {
                        format!("{prefix:?} is cairn's")
                    }
                ),
            );
        }
    }
}

/// No injector key among the pod's labels and annotations, and no label cairn writes.
fn check_pod_metadata(
    v: &mut Verdict,
    path: &str,
    pod: Option<&crate::common::PodRuntimeSettings>,
) {
    let labels: Option<&BTreeMap<String, String>> = pod.and_then(|p| p.pod_labels.as_ref());
    let annotations = pod.and_then(|p| p.pod_annotations.as_ref());
    for (field, key) in annotations
        .into_iter()
        .flat_map(|a| a.keys())
        .map(|k| ("podAnnotations", k))
        .chain(
            labels
                .into_iter()
                .flat_map(|l| l.keys())
                .map(|k| ("podLabels", k)),
        )
    {
        if is_injector_key(key) {
            v.error(
                format!("{path}.pod.{field}[{key}]"),
                "steers a sidecar or secret injector, which would add containers of its own \
                 choosing to cairn's pod: leave it out (cairn's Jobs talk to the database and \
                 the repository directly)",
            );
        }
    }
    for key in labels.into_iter().flat_map(|l| l.keys()) {
        if is_reserved_label(key) {
            v.error(
                format!("{path}.pod.podLabels[{key}]"),
                "cairn and the Job controller write this label (it ties the pod to its session \
                 and Job): choose a key outside cairn.dev/, batch.kubernetes.io/, job-name, \
                 controller-uid and app.kubernetes.io/managed-by",
            );
        }
    }
}

/// Where the pod runs is the scheduler's to decide, within the node selector, affinity and
/// tolerations a user may set: not a node named outright (past the scheduler, cordons and
/// taints) nor a priority class of the cluster's own components (which preempts other pods).
fn check_pod_placement(
    v: &mut Verdict,
    path: &str,
    pod: Option<&crate::common::PodRuntimeSettings>,
) {
    let Some(pod) = pod else { return };
    if pod.node_name.as_deref().is_some_and(|n| !n.is_empty()) {
        v.error(
            format!("{path}.pod.nodeName"),
            "may not be set: it bypasses the scheduler, cordons and taints; choose nodes with \
             nodeSelector or affinity instead",
        );
    }
    if let Some(class) = pod
        .priority_class_name
        .as_deref()
        .filter(|c| c.starts_with("system-"))
    {
        v.error(
            format!("{path}.pod.priorityClassName"),
            format!(
                "{class:?} is for the cluster's own components and would preempt other pods: \
                 use a PriorityClass of your own"
            ),
        );
    }
    if pod.priority.is_some() {
        v.error(
            format!("{path}.pod.priority"),
            "may not be set: the PriorityClass named by priorityClassName decides it",
        );
    }
}

/// A path in the preview pod as the path of the user's field it came from.
fn user_path(base: &str, pod_path: &str) -> String {
    for (pod_prefix, user_prefix) in [
        ("spec.securityContext", "pod.securityContext"),
        (
            "spec.containers[0].securityContext",
            "container.securityContext",
        ),
        ("metadata.annotations", "pod.podAnnotations"),
    ] {
        if let Some(rest) = pod_path.strip_prefix(pod_prefix) {
            return format!("{base}.{user_prefix}{rest}");
        }
    }
    format!("{base} ({pod_path})")
}
