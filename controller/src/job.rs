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

/// Whether a session created at `created` should wait for `error` to go away.
pub fn wait_for_resolution(
    error: &cairn_api::resolve::ResolveError,
    created: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> bool {
    let young = created
        .and_then(|c| crate::scheduling::to_chrono(&c.0))
        .is_none_or(|c| chrono::Utc::now() - c < RESOLVE_GRACE);
    error.may_resolve_later() && young
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
}

/// Starts a session's work, the same for backups and restores: its interim PVC (when templated)
/// and its Job, both owned by the session. Returns the session's timeout (from `timeOut`).
pub async fn launch(client: &Client, l: Launch<'_>) -> Result<Option<chrono::Duration>> {
    if let Some(tpl) = l.interim {
        ensure_interim_pvc(client, l.namespace, l.session, l.owner.clone(), tpl).await?;
    }
    let labels = session_labels(l.session);
    ensure_job(client, l.namespace, l.job_name, labels, l.owner, l.template).await?;
    Ok(l.time_out
        .and_then(|t| cairn_api::validation::parse_go_duration(t).ok()))
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
    let now = k8s_openapi::jiff::Timestamp::now();
    let cached = observe(job.as_deref(), &pods, now, owner_uid);
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

/// A duration as `1h2m3s` (what `sessionDuration` shows).
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Bytes as `12.3 MiB` (what `totalSize` shows).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humane_numbers() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(3725), "1h2m5s");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
