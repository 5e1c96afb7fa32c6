//! `exec` hooks: the controller runs the command itself, in a pod of the session's target: the
//! first Running pod (by name, so a StatefulSet's `-0` first) that the Service of the target
//! AppBinding (`clientConfig.service`) selects, in the hook's `containerName` (else the pod's
//! first container). No pod, or an AppBinding without a Service, fails the hook with the
//! reason. This needs `pods/exec` (with `get` on services and `list` on pods), which the
//! controller holds only when the install opts in ([`OPT_IN`]); without it the hook fails
//! naming the opt-in. Admission has checked that whoever wrote the hook may exec there too.

use std::time::Duration;

use cairn_api::hooks::ExecHook;
use cairn_api::validation::Lookups;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{AttachParams, ListParams};
use kube::{Api, ResourceExt};
use tokio::io::AsyncReadExt;

use crate::context::Context;

/// How the install grants the controller `pods/exec`.
pub const OPT_IN: &str = "exec hooks need the install's opt-in: the kustomize component \
     manifests/components/exec-hooks, or the Helm value execHooks.enabled=true";

/// How long a command may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(120);

/// How much of the command's output the hook's condition keeps (its end).
const OUTPUT_KEPT: usize = 300;

/// Runs the hook in `namespace`: `Ok` with what it did, or why it failed.
pub async fn run(ctx: &Context, namespace: &str, hook: &ExecHook) -> Result<String, String> {
    let (pod, container) = choose_pod(ctx, namespace, hook).await?;
    let what = format!("{} in pod {pod}, container {container}", hook.name);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let params = AttachParams::default()
        .container(container.as_str())
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let exec = async {
        let mut process = pods
            .exec(&pod, hook.command().to_vec(), &params)
            .await
            .map_err(|e| denied_or(e, &format!("exec into pod {pod}")))?;
        let mut output = Vec::new();
        if let Some(mut out) = process.stdout() {
            out.read_to_end(&mut output).await.ok();
        }
        if let Some(mut err) = process.stderr() {
            err.read_to_end(&mut output).await.ok();
        }
        let status = match process.take_status() {
            Some(s) => s.await,
            None => None,
        };
        Ok::<_, String>((status, String::from_utf8_lossy(&output).into_owned()))
    };
    let (status, output) = tokio::time::timeout(EXEC_TIMEOUT, exec)
        .await
        .map_err(|_| format!("{what}: did not end within {EXEC_TIMEOUT:?}"))??;
    let output = tail(output.trim());
    match status {
        Some(s) if s.status.as_deref() == Some("Success") => {
            Ok(format!("{what} succeeded; output: {output}"))
        }
        Some(s) => Err(format!(
            "{what} failed: {}; output: {output}",
            s.message.unwrap_or_default()
        )),
        None => Err(format!("{what}: the API server reported no exit status")),
    }
}

/// The pod and container the hook runs in.
async fn choose_pod(
    ctx: &Context,
    namespace: &str,
    hook: &ExecHook,
) -> Result<(String, String), String> {
    let binding = ctx
        .stores
        .app_binding(namespace, &hook.app_binding)
        .ok_or_else(|| format!("AppBinding {:?} not found", hook.app_binding))?;
    let service = binding.exec_service()?.to_string();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let svc = services
        .get(&service)
        .await
        .map_err(|e| denied_or(e, &format!("read Service {service}")))?;
    let selector = svc
        .spec
        .and_then(|s| s.selector)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("Service {service} selects no pods (no spec.selector)"))?;
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let labels = labels.join(",");
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&labels))
        .await
        .map_err(|e| denied_or(e, "list pods"))?;
    let pod = first_running(list.items)
        .ok_or_else(|| format!("no Running pod behind Service {service} ({labels})"))?;
    let container = container_of(&pod, hook.handler.container_name.as_deref())?;
    Ok((pod.name_any(), container))
}

/// The first Running pod, not being deleted, by name.
fn first_running(mut pods: Vec<Pod>) -> Option<Pod> {
    pods.retain(|p| {
        p.metadata.deletion_timestamp.is_none()
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    });
    pods.sort_by_key(|p| p.name_any());
    pods.into_iter().next()
}

/// `containerName` when the pod has it, else the pod's first container.
fn container_of(pod: &Pod, wanted: Option<&str>) -> Result<String, String> {
    let names: Vec<&str> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    match wanted {
        Some(w) if names.contains(&w) => Ok(w.to_string()),
        Some(w) => Err(format!(
            "containerName {w:?}: pod {} has containers {names:?}",
            pod.name_any()
        )),
        None => names
            .first()
            .map(|n| n.to_string())
            .ok_or_else(|| format!("pod {} has no containers", pod.name_any())),
    }
}

/// The error of `what`; a refusal names the opt-in.
fn denied_or(e: kube::Error, what: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            format!("the controller may not {what}: {OPT_IN}")
        }
        e => format!("cannot {what}: {e}"),
    }
}

/// The end of `s`, at most [`OUTPUT_KEPT`] bytes (on a character boundary).
fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(OUTPUT_KEPT);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "es"}, {"name": "sidecar"}]},
            "status": {"phase": phase}
        }))
        .expect("pod")
    }

    #[test]
    fn the_first_running_pod_by_name_is_chosen() {
        let pods = vec![
            pod("es-2", "Running"),
            pod("es-0", "Pending"),
            pod("es-1", "Running"),
        ];
        assert_eq!(
            first_running(pods).map(|p| p.name_any()),
            Some("es-1".into())
        );
        assert!(first_running(vec![pod("es-0", "Failed")]).is_none());
    }

    #[test]
    fn container_name_picks_the_container_or_names_the_ones_there_are() {
        let p = pod("es-0", "Running");
        assert_eq!(container_of(&p, None).as_deref(), Ok("es"));
        assert_eq!(container_of(&p, Some("sidecar")).as_deref(), Ok("sidecar"));
        let err = container_of(&p, Some("db")).expect_err("no such container");
        assert!(err.contains("\"es\", \"sidecar\""), "{err}");
    }

    #[test]
    fn a_refusal_names_the_opt_in() {
        let forbidden = kube::Error::Api(
            kube::core::Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let why = denied_or(forbidden, "exec into pod es-0");
        assert!(why.contains("manifests/components/exec-hooks"), "{why}");
        assert!(why.contains("execHooks.enabled"), "{why}");
        assert_eq!(tail("é".repeat(400).as_str()).len(), 300);
    }
}
