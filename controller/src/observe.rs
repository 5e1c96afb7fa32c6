//! What a session's Job and Pod say about its outcome, as a pure function of the objects:
//! every way a pod can die ends in `Failed` with a reason, so no session stays `Running`.

use cairn_api::duration::format_seconds;
use cairn_api::result::AgentResult;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The outcome of a Job as far as it is known.
#[derive(Clone, Debug, PartialEq)]
pub enum JobObservation {
    /// The Job is gone (deleted by someone, or never created).
    Missing,
    /// Created, not finished.
    Running,
    /// Finished successfully, with the agent's result if it wrote one.
    Succeeded { result: Option<AgentResult> },
    /// Failed: a short reason (a condition reason) and a message with the container's words.
    Failed { reason: String, message: String },
}

/// Waiting reasons that mean the container will not start without someone changing something.
const STUCK_WAITING: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
];

/// Reads the outcome from the Job and its Pods at `now` (newest first does not matter: a Job
/// of ours has `backoffLimit: 0`, so one Pod). Its Pod must exist and have started its
/// containers within `start_bound` of the Job's and the Pod's creation (the install's
/// `--pending-timeout`): a Pod that can never be created (a missing ServiceAccount, a quota, a
/// policy), scheduled (a nodeSelector no node has) or started (a volume that never attaches)
/// must not leave the session Running forever.
///
/// Only what cairn made counts: a Job whose controller is not `owner` (the session or
/// Repository, by uid) fails the session, and a Pod counts only when its controller is that
/// Job. A namespace user may create Jobs and Pods, with any name and labels; their termination
/// messages must not become a session's result.
pub fn observe(
    job: Option<&Job>,
    pods: &[Pod],
    now: Timestamp,
    owner: &str,
    start_bound: SignedDuration,
) -> JobObservation {
    let Some(job) = job else {
        return JobObservation::Missing;
    };
    if !controlled_by(&job.metadata, owner) {
        return JobObservation::Failed {
            reason: "JobNotOurs".into(),
            message: format!(
                "Job {} exists but cairn did not create it for this object; delete it and run \
                 again",
                job.metadata.name.as_deref().unwrap_or_default()
            ),
        };
    }
    let job_uid = job.metadata.uid.as_deref().unwrap_or_default();
    let pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| controlled_by(&p.metadata, job_uid))
        .collect();
    let pods = pods.as_slice();
    if pods.is_empty()
        && let Some(created) = job.metadata.creation_timestamp.as_ref()
        && now.duration_since(created.0) > start_bound
    {
        return JobObservation::Failed {
            reason: "PodNotCreated".into(),
            message: format!(
                "Job {} has had no Pod for {}; `kubectl describe job` shows why (e.g. a missing ServiceAccount, a quota or a policy)",
                job.metadata.name.as_deref().unwrap_or_default(),
                format_seconds(start_bound.as_secs())
            ),
        };
    }
    // A pod that failed tells more than the Job's condition: look at pods first. A Job that
    // retries (the wipe Job's `backoffLimit`) replaces a pod that died; only one that cannot
    // start is final before the Job says so.
    let retries = job.spec.as_ref().and_then(|s| s.backoff_limit).unwrap_or(6) > 0;
    for &pod in pods {
        let died = if retries { None } else { pod_failure(pod) };
        let failure = died
            .or_else(|| statuses(pod).find_map(container_stuck))
            .or_else(|| not_started(pod, now, start_bound));
        if let Some(failure) = failure {
            return failure;
        }
    }
    let status = job.status.as_ref();
    let condition = |t: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if condition("Complete").is_some() || status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        let result = pods
            .iter()
            .find_map(|p| main_container_message(p))
            .and_then(|m| AgentResult::from_termination_message(&m));
        return match result {
            Some(AgentResult::Failure(f)) => JobObservation::Failed {
                reason: "AgentFailed".into(),
                message: format!("{}: {}", f.phase, f.reason),
            },
            result => JobObservation::Succeeded { result },
        };
    }
    if let Some(c) = condition("Failed") {
        let message = pods
            .iter()
            .find_map(|p| main_container_message(p))
            .or_else(|| c.message.clone())
            .unwrap_or_default();
        return JobObservation::Failed {
            reason: c.reason.clone().unwrap_or_else(|| "JobFailed".into()),
            message,
        };
    }
    JobObservation::Running
}

/// Whether `meta`'s controlling owner has `uid` (uids are unique and never reused).
fn controlled_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: &str,
) -> bool {
    !uid.is_empty()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == uid)
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let s = pod.status.as_ref();
    s.and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            s.and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
}

/// The failure a pod shows, if any.
fn pod_failure(pod: &Pod) -> Option<JobObservation> {
    let status = pod.status.as_ref()?;
    if let Some(evicted) = eviction(status) {
        return Some(evicted);
    }
    if let Some(failed) = statuses(pod).find_map(container_failure) {
        return Some(failed);
    }
    if status.phase.as_deref() == Some("Failed") {
        return Some(JobObservation::Failed {
            reason: status.reason.clone().unwrap_or_else(|| "PodFailed".into()),
            message: status
                .message
                .clone()
                .unwrap_or_else(|| "the pod failed".into()),
        });
    }
    None
}

/// A pod still `Pending` beyond `bound` after its creation, with the reason it gives: the
/// scheduler's (`Unschedulable`), or its container's (`ContainerCreating`, `PodInitializing`).
fn not_started(pod: &Pod, now: Timestamp, bound: SignedDuration) -> Option<JobObservation> {
    let status = pod.status.as_ref()?;
    let created = pod.metadata.creation_timestamp.as_ref()?;
    if status.phase.as_deref() != Some("Pending") || now.duration_since(created.0) <= bound {
        return None;
    }
    let waited = format_seconds(bound.as_secs());
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        let reason = c.reason.clone().unwrap_or_else(|| "Unschedulable".into());
        let said = c.message.as_deref().unwrap_or("no reason given");
        return Some(JobObservation::Failed {
            message: format!(
                "the pod was not scheduled within {waited} ({reason}: {said}); check \
                 runtimeSettings.pod (nodeSelector, affinity, tolerations) and the resources it \
                 requests"
            ),
            reason,
        });
    }
    let reason = statuses(pod)
        .find_map(|cs| cs.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .unwrap_or_else(|| "PodPending".into());
    Some(JobObservation::Failed {
        message: format!(
            "the pod was still {reason} after {waited}; `kubectl describe pod` shows why (e.g. \
             a volume that does not attach, an image still pulling)"
        ),
        reason,
    })
}

/// An eviction: by the kubelet (`reason: Evicted`), or through the Eviction API, preemption or
/// the kubelet under pressure in newer versions, which mark the Pod (`DisruptionTarget`) before
/// they delete it: its container then dies of SIGTERM or SIGKILL, which must not read as the
/// agent's own failure.
fn eviction(status: &PodStatus) -> Option<JobObservation> {
    if status.reason.as_deref() == Some("Evicted") {
        return Some(JobObservation::Failed {
            reason: "Evicted".into(),
            message: status
                .message
                .clone()
                .unwrap_or_else(|| "the pod was evicted".into()),
        });
    }
    let c = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")?;
    Some(JobObservation::Failed {
        reason: "Evicted".into(),
        message: format!(
            "the pod was evicted ({}): {}",
            c.reason.as_deref().unwrap_or("DisruptionTarget"),
            c.message.as_deref().unwrap_or("no message")
        ),
    })
}

/// A container stuck waiting for good.
fn container_stuck(cs: &ContainerStatus) -> Option<JobObservation> {
    let w = cs.state.as_ref()?.waiting.as_ref()?;
    let reason = w.reason.as_deref().filter(|r| STUCK_WAITING.contains(r))?;
    Some(JobObservation::Failed {
        reason: reason.to_string(),
        message: format!(
            "container {} cannot start: {}",
            cs.name,
            w.message.clone().unwrap_or_else(|| reason.to_string())
        ),
    })
}

/// A container stuck waiting for good, or ended with a non-zero code.
fn container_failure(cs: &ContainerStatus) -> Option<JobObservation> {
    if let Some(stuck) = container_stuck(cs) {
        return Some(stuck);
    }
    let t = cs.state.as_ref()?.terminated.as_ref()?;
    if t.exit_code == 0 {
        return None;
    }
    let reason = t.reason.clone().unwrap_or_else(|| "Error".into());
    if reason == "OOMKilled" {
        let message = format!(
            "container {} was killed for using too much memory (OOMKilled); raise runtimeSettings.container.resources.limits.memory",
            cs.name
        );
        return Some(JobObservation::Failed { reason, message });
    }
    let said = t
        .message
        .as_deref()
        .map(|m| match AgentResult::from_termination_message(m) {
            Some(AgentResult::Failure(f)) => format!("{}: {}", f.phase, f.reason),
            _ => last_line(m),
        })
        .unwrap_or_default();
    let message = if said.is_empty() {
        format!("container {} exited with code {}", cs.name, t.exit_code)
    } else {
        format!(
            "container {} exited with code {}: {said}",
            cs.name, t.exit_code
        )
    };
    Some(JobObservation::Failed {
        reason: "ContainerFailed".into(),
        message,
    })
}

/// The agent's result in the pod's termination message, whether the pod succeeded or not.
pub fn agent_result(pod: &Pod) -> Option<AgentResult> {
    AgentResult::from_termination_message(&main_container_message(pod)?)
}

/// The termination message of the pod's main (last) container.
fn main_container_message(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|cs| cs.state.as_ref()?.terminated.as_ref()?.message.clone())
        .next_back()
}

/// The last non-empty line of a container's output (what `FallbackToLogsOnError` leaves).
fn last_line(text: &str) -> String {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim();
    line.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SESSION: &str = "session-uid";
    const JOB: &str = "job-uid";
    /// The start bound of these tests.
    const BOUND: SignedDuration = SignedDuration::from_secs(300);

    fn owned(uid: &str) -> serde_json::Value {
        json!([{"apiVersion": "v1", "kind": "X", "name": "o", "uid": uid, "controller": true}])
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("t")
    }

    #[test]
    fn a_job_without_a_pod_fails_after_the_grace_period() {
        let job: Job = serde_json::from_value(
            json!({"metadata": {"name": "j", "uid": JOB, "creationTimestamp": "2027-01-15T08:00:00Z",
                                "ownerReferences": owned(SESSION)}}),
        )
        .expect("job");
        let created = Timestamp::from_second(1_800_000_000).expect("t");
        let just_after = created
            .checked_add(SignedDuration::from_secs(60))
            .expect("t");
        let long_after = created
            .checked_add(SignedDuration::from_secs(301))
            .expect("t");
        assert_eq!(
            observe(Some(&job), &[], just_after, SESSION, BOUND),
            JobObservation::Running
        );
        assert!(
            matches!(observe(Some(&job), &[], long_after, SESSION, BOUND), JobObservation::Failed { reason, .. } if reason == "PodNotCreated")
        );
    }

    #[test]
    fn a_pod_pending_beyond_the_bound_fails_with_its_reason() {
        let running = job(json!([]));
        let created = "2027-01-15T08:00:00Z";
        let at = |secs: i64| Timestamp::from_second(1_800_000_000 + secs).expect("t");
        let unschedulable = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."}]});
        let creating = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]});
        for (status, want) in [
            (unschedulable, "Unschedulable"),
            (creating, "ContainerCreating"),
        ] {
            let mut p = pod(status);
            p.metadata.creation_timestamp = serde_json::from_value(json!(created)).expect("time");
            // 2027-01-15T08:00:00Z is 1_800_000_000.
            assert_eq!(
                observe(
                    Some(&running),
                    std::slice::from_ref(&p),
                    at(300),
                    SESSION,
                    BOUND
                ),
                JobObservation::Running,
                "{want} within the bound"
            );
            match observe(Some(&running), &[p], at(301), SESSION, BOUND) {
                JobObservation::Failed { reason, message } => {
                    assert_eq!(reason, want);
                    assert!(message.contains("5m0s"), "{message}");
                }
                other => panic!("{want}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_retrying_jobs_dead_pod_is_not_final_until_the_job_fails() {
        let mut retrying = job(json!([]));
        retrying.spec = Some(
            serde_json::from_value(json!({"backoffLimit": 2,
            "template": {"spec": {"containers": []}}}))
            .expect("spec"),
        );
        let died = json!({"phase": "Failed", "containerStatuses": [{"name": "c", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]});
        assert_eq!(
            observe(Some(&retrying), &[pod(died.clone())], now(), SESSION, BOUND),
            JobObservation::Running
        );
        let stuck = json!({"phase": "Pending", "containerStatuses": [{"name": "c", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]});
        assert!(matches!(
            observe(Some(&retrying), &[pod(stuck)], now(), SESSION, BOUND),
            JobObservation::Failed { reason, .. } if reason == "ImagePullBackOff"
        ));
        let mut failed = retrying.clone();
        failed.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "Failed",
            "status": "True", "reason": "BackoffLimitExceeded"}]}))
            .expect("status"),
        );
        assert!(matches!(
            observe(Some(&failed), &[pod(died)], now(), SESSION, BOUND),
            JobObservation::Failed { reason, .. } if reason == "BackoffLimitExceeded"
        ));
    }

    /// A session's Job (`backoffLimit: 0`, as cairn makes them) with `conditions`.
    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(
            json!({"metadata": {"name": "j", "uid": JOB, "ownerReferences": owned(SESSION)},
                   "spec": {"backoffLimit": 0, "template": {"spec": {"containers": []}}},
                   "status": {"conditions": conditions}}),
        )
        .expect("job")
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "ownerReferences": owned(JOB)}, "status": status}),
        )
        .expect("pod")
    }

    #[test]
    fn only_what_cairn_made_counts() {
        let msg = r#"{"kind":"backup","snapshot":"forged","time":"t","host":"h","indices":2,"documents":10,"totalBytes":5,"addedBytes":5,"durationSeconds":1.0}"#;
        let mut forged = pod(
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": msg}}}]}),
        );
        forged.metadata.owner_references = None;
        let complete = job(json!([{"type": "Complete", "status": "True"}]));
        // A user's Pod with the Job's labels is no Pod of the Job.
        assert_eq!(
            observe(Some(&complete), &[forged], now(), SESSION, BOUND),
            JobObservation::Succeeded { result: None }
        );
        // A Job of that name that the session does not control is not run, nor believed.
        assert!(matches!(
            observe(Some(&complete), &[], now(), "another-uid", BOUND),
            JobObservation::Failed { reason, .. } if reason == "JobNotOurs"
        ));
    }

    #[test]
    fn success_carries_the_agent_result() {
        let msg = r#"{"kind":"backup","snapshot":"abc","time":"t","host":"h","indices":2,"documents":10,"totalBytes":5,"addedBytes":5,"durationSeconds":1.0}"#;
        let p = pod(
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": msg}}}]}),
        );
        let o = observe(
            Some(&job(json!([{"type": "Complete", "status": "True"}]))),
            &[p],
            now(),
            SESSION,
            BOUND,
        );
        match o {
            JobObservation::Succeeded {
                result: Some(AgentResult::Backup(b)),
            } => assert_eq!(b.documents, 10),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_failure_mode_is_a_failure_with_its_reason() {
        let running = job(json!([]));
        let cases = [
            (
                json!({"phase": "Failed", "reason": "Evicted", "message": "node low on memory"}),
                "Evicted",
            ),
            // What the Eviction API leaves: a condition, then a container killed by signal.
            (
                json!({"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True",
                "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}],
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 137, "reason": "Error"}}}]}),
                "Evicted",
            ),
            (
                json!({"phase": "Failed", "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
                "OOMKilled",
            ),
            (
                json!({"phase": "Pending", "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}),
                "ImagePullBackOff",
            ),
            (
                json!({"phase": "Failed", "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 2, "reason": "Error", "message": "{\"kind\":\"failure\",\"phase\":\"connect\",\"reason\":\"connection refused\"}"}}}]}),
                "ContainerFailed",
            ),
        ];
        for (status, reason) in cases {
            match observe(Some(&running), &[pod(status)], now(), SESSION, BOUND) {
                JobObservation::Failed { reason: r, message } => {
                    assert_eq!(r, reason);
                    assert!(!message.is_empty());
                }
                other => panic!("{reason}: {other:?}"),
            }
        }
        assert_eq!(
            observe(None, &[], now(), SESSION, BOUND),
            JobObservation::Missing
        );
        assert_eq!(
            observe(Some(&running), &[], now(), SESSION, BOUND),
            JobObservation::Running
        );
        let failed = job(
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]),
        );
        assert!(matches!(
            observe(Some(&failed), &[], now(), SESSION, BOUND),
            JobObservation::Failed { .. }
        ));
    }

    #[test]
    fn the_agents_own_failure_message_is_kept() {
        let p = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "{\"kind\":\"failure\",\"phase\":\"connect\",\"reason\":\"connection refused\"}"}}}]}),
        );
        let JobObservation::Failed { message, .. } =
            observe(Some(&job(json!([]))), &[p], now(), SESSION, BOUND)
        else {
            panic!("not failed");
        };
        assert!(message.contains("connect: connection refused"), "{message}");
    }
}
