//! Status writes: server-side apply of the `api` crate's typed statuses, one field manager per
//! writer, so `kubectl get -o yaml --show-managed-fields` says who owns each field and a writer
//! never clears another's:
//!
//! | manager | writes |
//! |---|---|
//! | `cairn-sessions` | a session's whole status (its life is one reconcile's) |
//! | `cairn-schedule` | a configuration's status from its own reconcile |
//! | `cairn-blueprint-status` | a BackupBlueprint's whole status, from the AppBindings naming it |
//! | `cairn-backup-results` | what a successful backup writes elsewhere: the configuration's `lastSuccessfulSession`, the Repository's totals |
//! | `cairn-references` | a Repository's `references` |
//! | `cairn-repository-inventory` | a Repository's `inventory` |
//! | `cairn-integrity` | a Repository's `integrity`, `lastCheck` and `IntegrityVerified` condition |
//!
//! A writer always applies every field it owns (server-side apply removes what its manager
//! stops sending). Whole-status writes carry the object's `resourceVersion`, so a write built
//! from a stale copy is refused (409) and the reconcile runs again on a fresh one.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::Result;

/// Who writes a status field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Sessions,
    Schedule,
    BackupResults,
    References,
    Inventory,
    Blueprints,
    Integrity,
    Unlock,
}

impl Manager {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sessions => "cairn-sessions",
            Self::Schedule => "cairn-schedule",
            Self::BackupResults => "cairn-backup-results",
            Self::References => "cairn-references",
            Self::Inventory => "cairn-repository-inventory",
            Self::Blueprints => "cairn-blueprint-status",
            Self::Integrity => "cairn-integrity",
            Self::Unlock => "cairn-repository-unlock",
        }
    }
}

/// Applies `status` to `obj` as `manager`. With `guard`, only if `obj` is still current.
pub async fn apply<K>(
    api: &Api<K>,
    obj: &K,
    manager: Manager,
    guard: bool,
    status: &impl Serialize,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut metadata = json!({"name": obj.name_any()});
    if guard && let Some(version) = obj.resource_version() {
        metadata["resourceVersion"] = json!(version);
    }
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    let params = PatchParams::apply(manager.name()).force();
    api.patch_status(&obj.name_any(), &params, &Patch::Apply(body))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_writer_has_its_own_manager() {
        let all = [Manager::Sessions, Manager::Schedule, Manager::BackupResults];
        let names: std::collections::BTreeSet<_> = all.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), all.len());
        assert!(!names.contains(crate::context::MANAGER));
    }
}
