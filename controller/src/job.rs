//! The Job side of a session, shared by BackupSession and RestoreSession: create the interim
//! PVC and the Job (owned by the session), read the Job's outcome, delete it at the deadline.

use std::collections::BTreeMap;

use cairn_api::common::PersistentVolumeClaimTemplate;
use cairn_api::naming::{
    LABEL_MANAGED_BY, LABEL_SESSION, MANAGED_BY, interim_pvc_name, label_value,
};
use k8s_openapi::api::batch::v1::{Job, JobTemplateSpec};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};

use crate::context::Context;
use crate::error::Result;
use crate::observe::{JobObservation, observe};

/// How long after its creation a session waits for a referenced object its Job needs (a watch
/// cache behind the API server, or objects applied together) before it fails.
pub const RESOLVE_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);
/// How often a session waiting for such an object looks again.
pub const RESOLVE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a session created at `created` is within [`RESOLVE_GRACE`]: what it needs may yet
/// reach the controller's caches.
pub fn young(created: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> bool {
    created
        .and_then(|c| crate::scheduling::to_chrono(&c.0))
        .is_none_or(|c| chrono::Utc::now() - c < RESOLVE_GRACE)
}

/// Whether a session created at `created` should wait for `error` to go away.
pub fn wait_for_resolution(
    error: &cairn_api::resolve::ResolveError,
    created: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> bool {
    error.may_resolve_later() && young(created)
}

/// The owner reference that ties a Job or PVC to its session (deleted with it).
pub fn owner_of<K: Resource<DynamicType = ()>>(obj: &K) -> Option<OwnerReference> {
    obj.controller_owner_ref(&())
}

/// The labels of a session's Job and PVC: managed by cairn, naming the session.
pub fn session_labels(session: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_SESSION.to_string(), label_value(session)),
    ])
}

fn merged(
    ours: BTreeMap<String, String>,
    theirs: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut l = theirs.cloned().unwrap_or_default();
    l.extend(ours);
    l
}

/// Creates the session's interim PVC from the template; an existing one is kept.
pub async fn ensure_interim_pvc(
    client: &Client,
    namespace: &str,
    session: &str,
    owner: Option<OwnerReference>,
    template: &PersistentVolumeClaimTemplate,
) -> Result<String> {
    let name = interim_pvc_name(
        session,
        template.metadata.name.as_deref().unwrap_or("interim"),
    );
    let pvc = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.into()),
            labels: Some(merged(
                session_labels(session),
                template.metadata.labels.as_ref(),
            )),
            annotations: template.metadata.annotations.clone(),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(template.claim_spec()),
        status: None,
    };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), &pvc).await {
        Ok(_) => Ok(name),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(name),
        Err(e) => Err(e.into()),
    }
}

/// Creates a Job from its template, with `labels` added; an existing one (a retried reconcile)
/// is kept.
pub async fn ensure_job(
    client: &Client,
    namespace: &str,
    job_name: &str,
    labels: BTreeMap<String, String>,
    owner: Option<OwnerReference>,
    template: &JobTemplateSpec,
) -> Result<()> {
    let meta = template.metadata.clone().unwrap_or_default();
    let job = Job {
        metadata: ObjectMeta {
            name: Some(job_name.into()),
            namespace: Some(namespace.into()),
            labels: Some(merged(labels, meta.labels.as_ref())),
            annotations: meta.annotations,
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    };
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), &job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What a session's work is started from (see [`launch`]).
pub struct Launch<'a> {
    pub namespace: &'a str,
    /// The session's name: its Job and interim PVC are labelled with it.
    pub session: &'a str,
    /// The session, as the owner of its Job and PVC.
    pub owner: Option<OwnerReference>,
    /// The interim PVC to create first, when templated.
    pub interim: Option<&'a PersistentVolumeClaimTemplate>,
    pub job_name: &'a str,
    pub template: &'a JobTemplateSpec,
    /// The session's `timeOut` (a Go duration), which sets its deadline.
    pub time_out: Option<&'a str>,
    /// The deadline without a `timeOut`.
    pub default_deadline: std::time::Duration,
    /// What the agent judges lock holders by (see [`lock_holders`]).
    pub holders: LockHolders,
}

/// What the agent needs to tell a lock of a pod of cairn's that no longer runs from a live one
/// (`CAIRN_LIVE_PODS`, `CAIRN_LAUNCHED_AT`, `CAIRN_CLUSTER_ID`; see the agent's `lock` module).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LockHolders {
    /// The names of cairn's pods that have not finished.
    pub live_pods: Vec<String>,
    /// The cluster's identity ([`crate::stores::Stores::cluster_id`]).
    pub cluster_id: String,
}

/// The lock holders now, from the caches: all of cairn's unfinished pods, whatever their
/// Repository (two Repositories may name the same storage). A pod that wrote a lock before
/// this launch has been in the cache for the seconds its start took, far longer than the
/// cache lags.
pub fn lock_holders(ctx: &Context) -> LockHolders {
    let mut names: Vec<String> = ctx
        .stores
        .pods
        .state()
        .iter()
        .filter(|p| !pod_ended(p))
        .map(|p| p.name_any())
        .collect();
    names.sort();
    LockHolders {
        live_pods: names,
        cluster_id: ctx.stores.cluster_id(),
    }
}

/// Whether no process of `pod` runs any more: its phase says so, or (the kubelet reports
/// container states before the phase) every container has terminated.
fn pod_ended(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return true;
    }
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    !containers.is_empty()
        && containers
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
}

/// Tells every container of the Job which pods were live at its launch, when that was, and
/// in which cluster.
pub fn add_lock_holders(template: &mut JobTemplateSpec, holders: &LockHolders) {
    use k8s_openapi::api::core::v1::EnvVar;
    let env = [
        ("CAIRN_LIVE_PODS", holders.live_pods.join(",")),
        ("CAIRN_LAUNCHED_AT", chrono::Utc::now().to_rfc3339()),
        ("CAIRN_CLUSTER_ID", holders.cluster_id.clone()),
    ];
    let pod = template
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut());
    for c in pod.into_iter().flat_map(|p| p.containers.iter_mut()) {
        let vars = c.env.get_or_insert_with(Vec::new);
        for (name, value) in &env {
            vars.retain(|v| v.name != *name);
            vars.push(EnvVar {
                name: (*name).into(),
                value: Some(value.clone()),
                value_from: None,
            });
        }
    }
}

/// How long after the session's deadline the Job's own `activeDeadlineSeconds` ends it: the
/// controller ends it at the deadline; the Job's deadline holds when no controller runs.
const JOB_DEADLINE_MARGIN: i64 = 60;

/// Starts a session's work, the same for backups and restores: its interim PVC (when templated)
/// and its Job, both owned by the session. Returns the session's timeout (from `timeOut`, or
/// the default deadline).
pub async fn launch(client: &Client, l: Launch<'_>) -> Result<chrono::Duration> {
    let timeout = l
        .time_out
        .and_then(|t| cairn_api::validation::parse_go_duration(t).ok())
        .or_else(|| chrono::Duration::from_std(l.default_deadline).ok())
        .unwrap_or(chrono::Duration::MAX);
    if let Some(tpl) = l.interim {
        ensure_interim_pvc(client, l.namespace, l.session, l.owner.clone(), tpl).await?;
    }
    let mut template = l.template.clone();
    if let Some(spec) = template.spec.as_mut() {
        spec.active_deadline_seconds = timeout
            .num_seconds()
            .checked_add(JOB_DEADLINE_MARGIN)
            .filter(|s| *s > 0);
    }
    add_lock_holders(&mut template, &l.holders);
    let labels = session_labels(l.session);
    ensure_job(client, l.namespace, l.job_name, labels, l.owner, &template).await?;
    Ok(timeout)
}

/// The outcome of a Job, from the Job and its Pods. Read from the watch caches first; anything
/// but Running (which only waits) is confirmed with a live read, so a cache that lags (a Job
/// just created, a Pod's termination message not seen yet) decides nothing.
pub async fn job_outcome(
    ctx: &Context,
    namespace: &str,
    job_name: &str,
    owner_uid: &str,
) -> Result<JobObservation> {
    let job = ctx
        .stores
        .jobs
        .get(&ObjectRef::new(job_name).within(namespace));
    let pods: Vec<Pod> = ctx
        .stores
        .pods
        .state()
        .iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.labels().get("job-name").map(String::as_str) == Some(job_name)
        })
        .map(|p| p.as_ref().clone())
        .collect();
    let bound = k8s_openapi::jiff::SignedDuration::try_from(ctx.limits.start)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    let now = k8s_openapi::jiff::Timestamp::now();
    let cached = observe(job.as_deref(), &pods, now, owner_uid, bound);
    if matches!(cached, JobObservation::Running) {
        return Ok(cached);
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let job = jobs.get_opt(job_name).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await?;
    Ok(observe(
        job.as_ref(),
        &list.items,
        k8s_openapi::jiff::Timestamp::now(),
        owner_uid,
        bound,
    ))
}

/// Deletes the Job and (foreground) its Pods.
pub async fn delete_job(client: &Client, namespace: &str, job_name: &str) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    match jobs.delete(job_name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_ends_with_its_phase_or_its_last_container() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
            PodStatus,
        };
        let pod = |phase: &str, states: Vec<ContainerState>| Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(
                    states
                        .into_iter()
                        .map(|s| ContainerStatus {
                            state: Some(s),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let running = || ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        };
        let killed = || ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!pod_ended(&Pod::default()), "no status yet: may start");
        assert!(!pod_ended(&pod("Pending", vec![])));
        assert!(!pod_ended(&pod("Running", vec![running()])));
        assert!(!pod_ended(&pod("Running", vec![killed(), running()])));
        assert!(
            pod_ended(&pod("Running", vec![killed()])),
            "phase not updated yet"
        );
        assert!(pod_ended(&pod("Failed", vec![])));
        assert!(pod_ended(&pod("Succeeded", vec![running()])));
    }

    #[test]
    fn every_container_learns_the_live_pods() {
        use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
        let container = |name: &str| Container {
            name: name.into(),
            // A value a template may carry is replaced, never doubled.
            env: Some(vec![EnvVar {
                name: "CAIRN_LIVE_PODS".into(),
                value: Some("forged".into()),
                value_from: None,
            }]),
            ..Default::default()
        };
        let mut t = JobTemplateSpec {
            spec: Some(k8s_openapi::api::batch::v1::JobSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![container("a"), container("b")],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let holders = LockHolders {
            live_pods: vec!["p-1".into(), "p-2".into()],
            cluster_id: "c-1".into(),
        };
        add_lock_holders(&mut t, &holders);
        let pod = t.spec.unwrap().template.spec.unwrap();
        for c in pod.containers {
            let env = c.env.unwrap();
            let value = |n: &str| {
                let found: Vec<_> = env.iter().filter(|v| v.name == n).collect();
                assert_eq!(found.len(), 1, "{n}: {env:?}");
                found[0].value.clone().unwrap()
            };
            assert_eq!(value("CAIRN_LIVE_PODS"), "p-1,p-2");
            assert_eq!(value("CAIRN_CLUSTER_ID"), "c-1");
            assert!(chrono::DateTime::parse_from_rfc3339(&value("CAIRN_LAUNCHED_AT")).is_ok());
        }
    }
}
