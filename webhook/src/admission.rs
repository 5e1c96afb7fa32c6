//! The admission decision as a pure function: an AdmissionRequest, the lookups from the watch
//! caches and the install settings in, an AdmissionResponse out. The server around it only
//! decodes, times and encodes.

use cairn_api::defaults::{
    default_backup_configuration, default_backup_session, default_repository,
    default_restore_session, patch,
};
use cairn_api::resolve::{InstallSettings, resolve_backup_job, resolve_restore_job};
use cairn_api::validation::{
    ExecAccess, Lookups, Policy, Validate, Verdict, check_exec_access, check_user_written_session,
    exec_hooks_written, needs_spec_rules,
};
use cairn_api::{
    BackupBlueprint, BackupConfiguration, BackupSession, Function, Repository, RestoreSession,
    Snapshot, Task,
};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Which webhook endpoint a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

/// Declares [`Kind`] from the served types: each variant is named after its type, and the
/// type's own [`kube::Resource::kind`] names it on the wire, so serving a kind is one line.
macro_rules! served_kinds {
    ($($kind:ident),* $(,)?) => {
        /// The kinds this webhook serves (group `cairn.dev`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Kind {
            $($kind),*
        }

        impl Kind {
            const ALL: &[Kind] = &[$(Kind::$kind),*];

            /// The kind's name, as its type says.
            pub fn name(self) -> std::borrow::Cow<'static, str> {
                match self {
                    $(Self::$kind => <$kind as kube::Resource>::kind(&())),*
                }
            }
        }
    };
}

served_kinds!(
    Repository,
    BackupConfiguration,
    BackupSession,
    RestoreSession,
    Task,
    Function,
    Snapshot,
    BackupBlueprint,
);

/// Every served kind, for messages.
pub const SERVED_KINDS: &str = "Repository, BackupConfiguration, BackupSession, RestoreSession, Task, \
     Function, Snapshot, BackupBlueprint (cairn.dev)";

impl Kind {
    pub fn from_gvk(group: &str, kind: &str) -> Option<Self> {
        if group != cairn_api::common::GROUP {
            return None;
        }
        Self::ALL.iter().copied().find(|k| k.name() == kind)
    }
}

/// The outcome of one review, for the response and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Patched,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Patched => "patched",
            Self::Denied => "denied",
        }
    }
}

/// Reviews one request. Never panics; every denial names the field and what would be valid.
#[tracing::instrument(skip_all, fields(
    endpoint = ?endpoint,
    kind = %req.kind.kind,
    namespace = req.namespace.as_deref().unwrap_or_default(),
    name = %req.name,
    operation = ?req.operation,
))]
pub fn review(
    endpoint: Endpoint,
    req: &AdmissionRequest<DynamicObject>,
    lookups: &dyn Lookups,
    install: &InstallSettings,
) -> (AdmissionResponse, Outcome) {
    let resp = AdmissionResponse::from(req);
    let Some(kind) = Kind::from_gvk(&req.kind.group, &req.kind.kind) else {
        let reason = format!(
            "cairn's webhook does not serve {}/{} {}; it serves {SERVED_KINDS}",
            req.kind.group, req.kind.version, req.kind.kind
        );
        return (resp.deny(reason), Outcome::Denied);
    };
    // Deletion and connect never wait on our rules.
    if !matches!(req.operation, Operation::Create | Operation::Update) {
        return (resp, Outcome::Allowed);
    }
    let Some(object) = req.object.as_ref() else {
        return (
            resp.deny("the request has no object to review"),
            Outcome::Denied,
        );
    };
    let new = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => {
            return (
                resp.deny(format!("cannot read the object: {e}")),
                Outcome::Denied,
            );
        }
    };
    let old = req
        .old_object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok());
    if kind == Kind::Snapshot {
        return snapshot_write(resp, req, &new, old.as_ref(), &install.controller_user);
    }
    if req.operation == Operation::Update && !needs_spec_rules(old.as_ref(), &new) {
        return (resp, Outcome::Allowed);
    }
    // Only the mutating webhook sees what the user wrote: by the time the validating one runs,
    // our own preview is in the object.
    if endpoint == Endpoint::Mutate
        && req.operation == Operation::Create
        && matches!(kind, Kind::BackupSession | Kind::RestoreSession)
    {
        let written = new
            .pointer("/spec/jobTemplate")
            .is_some_and(|t| !t.is_null());
        let verdict = check_user_written_session(written);
        if !verdict.allowed() {
            let reason = format!("{} rejected: {}", kind.name(), verdict.error_message());
            return (resp.deny(reason), Outcome::Denied);
        }
    }
    match endpoint {
        Endpoint::Validate => validate(kind, resp, &new, old.as_ref(), lookups, &install.policy),
        Endpoint::Mutate => mutate(kind, resp, req.operation.clone(), new, lookups, install),
    }
}

/// A write of a Snapshot: the controller's, or a user's annotation ([`Snapshot::check_write`]).
fn snapshot_write(
    resp: AdmissionResponse,
    req: &AdmissionRequest<DynamicObject>,
    new: &Value,
    old: Option<&Value>,
    controller: &str,
) -> (AdmissionResponse, Outcome) {
    let new: Snapshot = match typed(Kind::Snapshot, new) {
        Ok(s) => s,
        Err(reason) => return (resp.deny(reason), Outcome::Denied),
    };
    let old: Option<Snapshot> = old.and_then(|o| serde::Deserialize::deserialize(o).ok());
    let user = req.user_info.username.as_deref().unwrap_or_default();
    let verdict = new.check_write(old.as_ref(), user, controller);
    if verdict.allowed() {
        (resp, Outcome::Allowed)
    } else {
        let reason = format!("Snapshot rejected: {}", verdict.error_message());
        (resp.deny(reason), Outcome::Denied)
    }
}

/// The `exec` hooks a request writes (paths), for which the server asks the API server whether
/// the request's user may exec: on the validating endpoint, at create and update.
pub fn exec_hooks_to_check(
    endpoint: Endpoint,
    req: &AdmissionRequest<DynamicObject>,
) -> Vec<String> {
    let writes = matches!(req.operation, Operation::Create | Operation::Update);
    let Some(new) = req.object.as_ref().filter(|_| writes) else {
        return Vec::new();
    };
    if endpoint != Endpoint::Validate || Kind::from_gvk(&req.kind.group, &req.kind.kind).is_none() {
        return Vec::new();
    }
    exec_hooks_written(&new.data, req.old_object.as_ref().map(|o| &o.data))
}

/// `answer` with the check of the `exec` hooks at `paths` against the API server's `access`
/// answer: denied, with the reason, when the user may not exec.
pub fn with_exec_access(
    req: &AdmissionRequest<DynamicObject>,
    answer: (AdmissionResponse, Outcome),
    paths: &[String],
    access: &ExecAccess,
) -> (AdmissionResponse, Outcome) {
    let verdict = check_exec_access(paths, access);
    if verdict.allowed() || answer.1 == Outcome::Denied {
        return answer;
    }
    let reason = format!("{} rejected: {}", req.kind.kind, verdict.error_message());
    (answer.0.deny(reason), Outcome::Denied)
}

fn typed<K: DeserializeOwned>(kind: Kind, v: &Value) -> Result<K, String> {
    // Read from the borrowed tree: no copy of the object first. The error names the field
    // (`spec.backend.s3.bucket: invalid type: ...`), not only what was wrong.
    serde_path_to_error::deserialize(v).map_err(|e| {
        format!(
            "{} does not match its schema at {}: {}",
            kind.name(),
            e.path(),
            e.inner()
        )
    })
}

fn validate(
    kind: Kind,
    resp: AdmissionResponse,
    new: &Value,
    old: Option<&Value>,
    lookups: &dyn Lookups,
    policy: &Policy,
) -> (AdmissionResponse, Outcome) {
    fn run<K: Validate + DeserializeOwned>(
        kind: Kind,
        new: &Value,
        old: Option<&Value>,
        lookups: &dyn Lookups,
        policy: &Policy,
    ) -> Result<Verdict, String> {
        let new: K = typed(kind, new)?;
        // An old object that no longer parses (written by an older version) must not block
        // the update: judge the new one alone.
        let old: Option<K> = old.and_then(|o| K::deserialize(o).ok());
        Ok(new.validate(old.as_ref(), lookups, policy))
    }
    let verdict = match kind {
        Kind::Repository => run::<Repository>(kind, new, old, lookups, policy),
        Kind::BackupConfiguration => run::<BackupConfiguration>(kind, new, old, lookups, policy),
        Kind::BackupSession => run::<BackupSession>(kind, new, old, lookups, policy),
        Kind::RestoreSession => run::<RestoreSession>(kind, new, old, lookups, policy),
        Kind::Task => run::<Task>(kind, new, old, lookups, policy),
        Kind::Function => run::<Function>(kind, new, old, lookups, policy),
        Kind::Snapshot => return (resp, Outcome::Allowed),
        Kind::BackupBlueprint => run::<BackupBlueprint>(kind, new, old, lookups, policy),
    };
    let verdict = match verdict {
        Ok(v) => v,
        Err(reason) => return (resp.deny(reason), Outcome::Denied),
    };
    let mut resp = resp;
    if !verdict.warnings.is_empty() {
        resp.warnings = Some(verdict.warnings.iter().map(ToString::to_string).collect());
    }
    if verdict.allowed() {
        (resp, Outcome::Allowed)
    } else {
        let reason = format!("{} rejected: {}", kind.name(), verdict.error_message());
        (resp.deny(reason), Outcome::Denied)
    }
}

fn mutate(
    kind: Kind,
    resp: AdmissionResponse,
    operation: Operation,
    new: Value,
    lookups: &dyn Lookups,
    install: &InstallSettings,
) -> (AdmissionResponse, Outcome) {
    let catalog = &install.catalog;
    let mut warnings = Vec::new();
    let result = match kind {
        Kind::Repository => defaulted(kind, &new, |r: &mut Repository| default_repository(r)),
        Kind::BackupConfiguration => defaulted(kind, &new, |c: &mut BackupConfiguration| {
            default_backup_configuration(c, lookups, catalog)
        }),
        // Session specs are immutable: they are defaulted and resolved once, at CREATE.
        Kind::BackupSession if operation == Operation::Create => {
            defaulted(kind, &new, |s: &mut BackupSession| {
                default_backup_session(s, lookups);
                if s.spec.job_template.is_none() && s.metadata.name.is_some() {
                    match resolve_backup_job(s, lookups, install) {
                        Ok(job) => s.spec.job_template = Some(job),
                        Err(e) => warnings.push(unresolved_warning(&e)),
                    }
                }
            })
        }
        Kind::RestoreSession if operation == Operation::Create => {
            defaulted(kind, &new, |r: &mut RestoreSession| {
                default_restore_session(r, lookups, catalog);
                if r.spec.job_template.is_none() && r.metadata.name.is_some() {
                    match resolve_restore_job(r, lookups, install) {
                        Ok(job) => r.spec.job_template = Some(job),
                        Err(e) => warnings.push(unresolved_warning(&e)),
                    }
                }
            })
        }
        _ => Ok(None),
    };
    let mut resp = resp;
    if !warnings.is_empty() {
        resp.warnings = Some(warnings);
    }
    match result {
        Ok(Some(p)) if !p.0.is_empty() => match resp.clone().with_patch(p) {
            Ok(r) => (r, Outcome::Patched),
            Err(e) => (
                resp.deny(format!("cannot encode the defaults: {e}")),
                Outcome::Denied,
            ),
        },
        Ok(_) => (resp, Outcome::Allowed),
        // An object that does not parse is left alone here: the API server's schema validation
        // (which runs after mutation) reports it with the field path.
        Err(_) => (resp, Outcome::Allowed),
    }
}

fn unresolved_warning(e: &cairn_api::resolve::ResolveError) -> String {
    format!(
        "spec.jobTemplate: not resolved yet ({e}); the controller resolves it when the session starts, or fails the session with this reason"
    )
}

/// Defaults an object with `f` and returns the JSON patch from the object to its defaulted form.
fn defaulted<K: DeserializeOwned + Serialize + Clone>(
    kind: Kind,
    v: &Value,
    f: impl FnOnce(&mut K),
) -> Result<Option<json_patch::Patch>, String> {
    let before: K = typed(kind, v)?;
    let mut after = before.clone();
    f(&mut after);
    patch(&before, &after)
        .map(Some)
        .map_err(|e| format!("cannot compute the defaults: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_its_name_and_listed_in_messages() {
        for kind in Kind::ALL {
            assert_eq!(
                Kind::from_gvk(cairn_api::common::GROUP, &kind.name()),
                Some(*kind)
            );
            assert!(SERVED_KINDS.contains(kind.name().as_ref()), "{kind:?}");
        }
        assert_eq!(Kind::from_gvk("other.dev", "Task"), None);
    }
}
