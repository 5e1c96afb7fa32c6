//! Auto-backup: reconciling an AppBinding against the BackupBlueprint its annotation names
//! (`blueprint.cairn.dev/name`, or Stash's `stash.appscode.com/backup-blueprint`). The
//! blueprint makes its Repository and BackupConfiguration ([`BackupBlueprint::generate`]); they
//! are server-side applied with their own field manager, owned by the AppBinding (deleting it
//! deletes them), labelled with the blueprint, kept in step with it, and deleted when the
//! annotation goes. An object of a generated name that cairn did not make for this AppBinding is
//! never adopted, changed or deleted: the clash shows on the blueprint's status and as an event
//! on the AppBinding. The storage Secret is the admin's: the controller reads no Secret, and a
//! missing one shows on the generated configuration (`BackendSecretFound`) once a session runs.
//! Which objects exist is read from the watch caches: an object created by someone else in the
//! moment between the cache's view and the apply would be taken over (the cache is the one
//! lookup every reconcile here has).

use std::sync::Arc;

use cairn_api::backup_blueprint::{
    BackupBlueprintStatus, BlueprintTarget, Generated, LABEL_BLUEPRINT, REASON_NAME_CLASH,
    REASON_UNRESOLVED, blueprint_of, generated_for, generated_name,
};
use cairn_api::{AppBinding, BackupBlueprint, BackupConfiguration, Repository};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::instrument;

use crate::conditions;
use crate::context::Context;
use crate::error::Result;
use crate::status::{self, Manager};

/// Field manager of the generated objects.
pub const GENERATED_MANAGER: &str = "cairn-blueprints";

/// The objects of an AppBinding's generated name, as the caches hold them.
struct Existing {
    repository: Option<Arc<Repository>>,
    configuration: Option<Arc<BackupConfiguration>>,
}

impl Existing {
    fn of(ctx: &Context, app: &AppBinding) -> Self {
        let ns = app.namespace().unwrap_or_default();
        let name = generated_name(&app.name_any());
        Self {
            repository: ctx
                .stores
                .repositories
                .get(&ObjectRef::new(&name).within(&ns)),
            configuration: ctx
                .stores
                .configurations
                .get(&ObjectRef::new(&name).within(&ns)),
        }
    }

    /// The first object of the generated name that cairn did not make for `app`, as
    /// `Kind namespace/name`.
    fn foreign(&self, app: &AppBinding) -> Option<String> {
        let repo = self
            .repository
            .as_deref()
            .filter(|r| !generated_for(*r, app));
        let config = self
            .configuration
            .as_deref()
            .filter(|c| !generated_for(*c, app));
        repo.map(describe).or_else(|| config.map(describe))
    }

    /// The blueprint the existing generated objects were made from.
    fn blueprint(&self, app: &AppBinding) -> Option<String> {
        let label = |labels: &std::collections::BTreeMap<String, String>| {
            labels.get(LABEL_BLUEPRINT).cloned()
        };
        let repo = self
            .repository
            .as_deref()
            .filter(|r| generated_for(*r, app));
        let config = self
            .configuration
            .as_deref()
            .filter(|c| generated_for(*c, app));
        repo.and_then(|r| label(r.labels()))
            .or_else(|| config.and_then(|c| label(c.labels())))
    }
}

fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{} {}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// What a blueprint makes for `app` now, or why it makes nothing (a reason and a message).
fn plan(
    blueprint: &BackupBlueprint,
    app: &AppBinding,
    existing: &Existing,
) -> Result<Generated, (&'static str, String)> {
    if let Some(foreign) = existing.foreign(app) {
        return Err((
            REASON_NAME_CLASH,
            format!(
                "{foreign} exists and was not made by a blueprint for this AppBinding: cairn leaves \
             it alone and makes nothing for this AppBinding; rename or delete that object, or \
             remove the annotation"
            ),
        ));
    }
    blueprint
        .generate(app)
        .map_err(|e| (REASON_UNRESOLVED, e.join("; ")))
}

#[instrument(skip_all, fields(
    namespace = %app.namespace().unwrap_or_default(),
    name = %app.name_any(),
))]
pub async fn reconcile(app: Arc<AppBinding>, ctx: Arc<Context>) -> Result<Action> {
    let existing = Existing::of(&ctx, &app);
    let previous = existing.blueprint(&app);
    let wanted = blueprint_of(&app).map(str::to_string);
    match &wanted {
        None => remove(&ctx, &app, &existing).await?,
        Some(name) => match ctx.stores.blueprints.get(&ObjectRef::new(name)) {
            None => {
                let note = format!(
                    "BackupBlueprint {name:?} does not exist: nothing is generated until it does"
                );
                ctx.event(app.as_ref(), true, "BlueprintNotFound", note)
                    .await;
            }
            Some(blueprint) => match plan(&blueprint, &app, &existing) {
                Ok(generated) => {
                    apply(&ctx, &generated.repository).await?;
                    apply(&ctx, &generated.configuration).await?;
                }
                Err((reason, why)) => ctx.event(app.as_ref(), true, reason, why).await,
            },
        },
    }
    for name in [previous, wanted].into_iter().flatten() {
        if let Some(blueprint) = ctx.stores.blueprints.get(&ObjectRef::new(&name)) {
            write_status(&ctx, &blueprint).await?;
        }
    }
    Ok(Action::await_change())
}

/// Server-side applies a generated object with its own field manager.
async fn apply<K>(ctx: &Context, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    );
    let params = PatchParams::apply(GENERATED_MANAGER).force();
    api.patch(&obj.name_any(), &params, &Patch::Apply(obj))
        .await?;
    Ok(())
}

/// Deletes what was generated for `app` (the annotation is gone); nothing else.
async fn remove(ctx: &Context, app: &AppBinding, existing: &Existing) -> Result<()> {
    if let Some(c) = existing
        .configuration
        .as_deref()
        .filter(|c| generated_for(*c, app))
    {
        delete(ctx, c).await?;
    }
    if let Some(r) = existing
        .repository
        .as_deref()
        .filter(|r| generated_for(*r, app))
    {
        delete(ctx, r).await?;
    }
    Ok(())
}

/// Deletes `obj` if it is still the object the cache showed (its UID).
async fn delete<K>(ctx: &Context, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    );
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.meta().uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&obj.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes a blueprint's status from every AppBinding naming it, as the caches hold them.
async fn write_status(ctx: &Context, blueprint: &BackupBlueprint) -> Result<()> {
    let name = blueprint.name_any();
    let mut targets: Vec<BlueprintTarget> = ctx
        .stores
        .app_bindings
        .state()
        .into_iter()
        .filter(|app| blueprint_of(app) == Some(name.as_str()))
        .map(|app| {
            let planned = plan(blueprint, &app, &Existing::of(ctx, &app));
            let (reason, message) = planned.err().unzip();
            BlueprintTarget {
                namespace: app.namespace().unwrap_or_default(),
                name: app.name_any(),
                generated: reason.is_none(),
                reason: reason.map(str::to_string),
                message,
            }
        })
        .collect();
    targets.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let old = blueprint.status.clone().unwrap_or_default();
    let status = BackupBlueprintStatus {
        conditions: status_conditions(old.conditions.clone(), &targets),
        targets,
    };
    if status == old {
        return Ok(());
    }
    let api: Api<BackupBlueprint> = Api::all(ctx.client.clone());
    status::apply(&api, blueprint, Manager::Blueprints, false, &status).await
}

/// `NameClash` and `Resolved`, from the targets' messages.
fn status_conditions(
    mut conditions: Vec<Condition>,
    targets: &[BlueprintTarget],
) -> Vec<Condition> {
    let now = conditions::now();
    let failing = |reason: &str| {
        targets
            .iter()
            .filter(|t| t.reason.as_deref() == Some(reason))
            .map(|t| {
                let m = t.message.as_deref().unwrap_or_default();
                format!("AppBinding {}/{}: {m}", t.namespace, t.name)
            })
            .collect::<Vec<_>>()
    };
    let clashes = failing(REASON_NAME_CLASH);
    let (status, reason, message) = match clashes.is_empty() {
        true => (
            "False",
            "NoClash",
            "every generated name is free or cairn's".to_string(),
        ),
        false => ("True", "ObjectNotGenerated", clashes.join("\n")),
    };
    conditions::set_status(
        &mut conditions,
        "NameClash",
        status,
        reason,
        message,
        None,
        &now,
    );
    let unresolved = failing(REASON_UNRESOLVED);
    let (ok, reason, message) = match unresolved.is_empty() {
        true => (
            true,
            "Resolved",
            "every target's variables resolve".to_string(),
        ),
        false => (false, "VariablesUnresolved", unresolved.join("\n")),
    };
    conditions::set(&mut conditions, "Resolved", ok, reason, message, None, &now);
    conditions
}
