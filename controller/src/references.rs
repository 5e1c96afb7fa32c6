//! `Repository.status.references`: the BackupConfigurations and RestoreSessions that use a
//! Repository, from any namespace, read from the controller's stores. Written by its own field
//! manager (`cairn-references`, server-side apply of that one field), so the backup results'
//! writer and this one never undo each other; written only when it changed.

use cairn_api::repository::{RepositoryStatus, TypedObjectReference};
use cairn_api::{Repository, RestoreSession};
use kube::{Api, Resource, ResourceExt};

use crate::context::Context;
use crate::error::Result;
use crate::status::{self, Manager};
use crate::stores::Stores;

fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> TypedObjectReference {
    TypedObjectReference {
        api_group: Some(K::group(&()).into_owned()),
        kind: K::kind(&()).into_owned(),
        name: obj.name_any(),
        namespace: obj.namespace(),
    }
}

/// Whether an object in `own` referring to `name` in `namespace` (empty: its own) means `repo`.
pub fn means(
    repo: &Repository,
    own: Option<String>,
    r: &cairn_api::common::ObjectReference,
) -> bool {
    let own = own.unwrap_or_default();
    repo.metadata.name.as_deref() == Some(r.name.as_str())
        && repo.namespace().as_deref() == Some(r.namespace_or(&own))
}

/// The configurations and restore sessions that use `repo`, in a stable order.
pub fn of(repo: &Repository, stores: &Stores) -> Vec<TypedObjectReference> {
    let mut out: Vec<TypedObjectReference> = stores
        .configurations
        .state()
        .iter()
        .filter(|c| means(repo, c.namespace(), &c.spec.repository))
        .map(|c| reference(c.as_ref()))
        .collect();
    out.extend(
        stores
            .restores
            .state()
            .iter()
            .filter(|r| means(repo, r.namespace(), &r.spec.repository))
            .map(|r| reference::<RestoreSession>(r.as_ref())),
    );
    out.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    out
}

/// Writes `repo`'s references when they changed.
pub async fn update(repo: &Repository, ctx: &Context) -> Result<()> {
    let references = of(repo, &ctx.stores);
    let current = repo.status.as_ref().map(|s| s.references.as_slice());
    if current.unwrap_or_default() == references.as_slice() {
        return Ok(());
    }
    let api: Api<Repository> =
        Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    let status = RepositoryStatus {
        references,
        ..Default::default()
    };
    status::apply(&api, repo, Manager::References, false, &status).await
}
