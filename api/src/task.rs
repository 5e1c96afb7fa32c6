//! The Task and Function kinds: the steps a backup or restore Job runs, as containers.

use k8s_openapi::api::core::v1::{ContainerPort, Volume, VolumeMount};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ContainerRuntimeSettings, Param};

/// One container of a backup or restore Job. Strings may use `${VARIABLE}` and
/// `${VARIABLE:=default}`.
// kube-derive takes one `printcolumn(...)` per column, which clippy sees as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.dev",
    version = "v1alpha1",
    kind = "Function",
    shortname = "fn",
    category = "cairn",
    category = "backup",
    derive = "PartialEq",
    derive = "Default",
    doc = "Function is one container of a backup or restore Job, used by Tasks as a step. Strings may use ${VARIABLE} and ${VARIABLE:=default}.",
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        description = "Container image"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    /// Container image.
    pub image: String,
    /// Entrypoint of the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments of the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Working directory of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Ports the container exposes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Volumes (from the Task's `volumes`) mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Container settings (resources, security context, env, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_settings: Option<ContainerRuntimeSettings>,
}

/// The steps of a backup or restore, each a Function.
// kube-derive takes one `printcolumn(...)` per column, which clippy sees as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.dev",
    version = "v1alpha1",
    kind = "Task",
    category = "cairn",
    category = "backup",
    derive = "PartialEq",
    derive = "Default",
    doc = "Task lists the steps of a backup or restore Job: each step is a Function, run in order; the last one is the Job's main container.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// Which Repositories the Task works with: `Restic` (the default) or `Native` (the
    /// server's own snapshots; see the Repository's `driver`). A configuration or restore
    /// may only pair a Task with a Repository of the same driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<crate::native::StorageDriver>,
    /// The steps, in order. All but the last run as init containers.
    pub steps: Vec<FunctionRef>,
    /// Volumes the steps mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
}

impl TaskSpec {
    /// Which Repositories the Task works with (`Restic` unless set).
    pub fn driver(&self) -> crate::native::StorageDriver {
        self.driver.unwrap_or_default()
    }
}

/// One step of a Task.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionRef {
    /// Name of the Function.
    pub name: String,
    /// Values for the Function's variables in this step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
}
