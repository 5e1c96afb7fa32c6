//! Admission rules (`shared/spec/admission.md`) as pure functions: each kind's `validate` takes
//! the new object, the old one on UPDATE, and the [`Lookups`] the webhook feeds from its watch
//! caches, and returns every error and warning of the object at once.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::{AppBinding, BackupConfiguration, Function, Repository, Task};

mod backup_blueprint;
mod backup_configuration;
mod backup_session;
mod hooks;
pub mod job;
mod native;
mod repository;
mod restore_session;
mod shared;
mod snapshot;
mod task;

pub use crate::duration::parse_go_duration;
pub use backup_blueprint::validate_backup_blueprint;
pub use backup_configuration::validate_backup_configuration;
pub use backup_session::{check_user_written_session, validate_backup_session};
pub use hooks::{ExecAccess, check_exec_access, exec_hooks_written};
pub use repository::validate_repository;
pub use restore_session::validate_restore_session;
pub use shared::{parse_quantity, usage_policy_admits};
pub use task::{validate_function, validate_task};

/// What the install decides for admission (flags of the webhook and the controller).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The Pod Security Standard every Job must meet (`jobPodSecurity`; restricted by default).
    pub job_pod_security: crate::pod_security::PodSecurityLevel,
}

/// One reason an object is rejected: the field path and what is wrong and what would be valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.retentionPolicy.keepLast`.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Something that may work later or is risky: admitted, and shown by kubectl as `Warning: ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldWarning {
    /// JSON path of the field.
    pub path: String,
    /// What may go wrong.
    pub message: String,
}

impl fmt::Display for FieldWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every error and warning found in one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<FieldWarning>,
}

impl Verdict {
    /// Records an error at `path`.
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Records a warning at `path`.
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(FieldWarning {
            path: path.into(),
            message: message.into(),
        });
    }

    /// True when the object is admitted.
    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }

    /// Adds the findings of another check.
    pub fn extend(&mut self, other: Verdict) {
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }

    /// All errors as one message, one per line, as the webhook returns it.
    pub fn error_message(&self) -> String {
        self.errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What validation may look up about other objects. The webhook answers from watch caches;
/// tests answer from literals ([`LookupTable`]). `None` means "not there (yet)": a missing
/// referenced object is a warning, never a rejection, since GitOps tools create in any order.
pub trait Lookups {
    fn repository(&self, namespace: &str, name: &str) -> Option<Arc<Repository>>;
    fn app_binding(&self, namespace: &str, name: &str) -> Option<Arc<AppBinding>>;
    fn backup_configuration(&self, namespace: &str, name: &str)
    -> Option<Arc<BackupConfiguration>>;
    fn task(&self, name: &str) -> Option<Arc<Task>>;
    fn function(&self, name: &str) -> Option<Arc<Function>>;
    /// Labels of a namespace; `None` when the namespace is not known.
    fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>>;
}

/// A [`Lookups`] made of plain maps: for tests, and for callers that already hold the objects.
#[derive(Clone, Debug, Default)]
pub struct LookupTable {
    /// Keyed by (namespace, name).
    pub repositories: BTreeMap<(String, String), Arc<Repository>>,
    pub app_bindings: BTreeMap<(String, String), Arc<AppBinding>>,
    pub backup_configurations: BTreeMap<(String, String), Arc<BackupConfiguration>>,
    /// Keyed by name (cluster-scoped).
    pub tasks: BTreeMap<String, Arc<Task>>,
    pub functions: BTreeMap<String, Arc<Function>>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_string(), name.to_string())
}

fn ns_of<K: kube::Resource>(obj: &K) -> String {
    obj.meta().namespace.clone().unwrap_or_default()
}

fn name_of<K: kube::Resource>(obj: &K) -> String {
    obj.meta().name.clone().unwrap_or_default()
}

impl LookupTable {
    pub fn with_repository(mut self, r: Repository) -> Self {
        self.repositories
            .insert(key(&ns_of(&r), &name_of(&r)), Arc::new(r));
        self
    }
    pub fn with_app_binding(mut self, a: AppBinding) -> Self {
        self.app_bindings
            .insert(key(&ns_of(&a), &name_of(&a)), Arc::new(a));
        self
    }
    pub fn with_backup_configuration(mut self, c: BackupConfiguration) -> Self {
        self.backup_configurations
            .insert(key(&ns_of(&c), &name_of(&c)), Arc::new(c));
        self
    }
    pub fn with_task(mut self, t: Task) -> Self {
        self.tasks.insert(name_of(&t), Arc::new(t));
        self
    }
    pub fn with_function(mut self, f: Function) -> Self {
        self.functions.insert(name_of(&f), Arc::new(f));
        self
    }
    pub fn with_namespace(mut self, name: &str, labels: &[(&str, &str)]) -> Self {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.namespaces.insert(name.to_string(), labels);
        self
    }
    /// Adds every object of `other` (its entries win).
    pub fn extend(&mut self, other: LookupTable) {
        self.repositories.extend(other.repositories);
        self.app_bindings.extend(other.app_bindings);
        self.backup_configurations
            .extend(other.backup_configurations);
        self.tasks.extend(other.tasks);
        self.functions.extend(other.functions);
        self.namespaces.extend(other.namespaces);
    }

    /// How many objects the table holds.
    pub fn len(&self) -> usize {
        self.repositories.len()
            + self.app_bindings.len()
            + self.backup_configurations.len()
            + self.tasks.len()
            + self.functions.len()
            + self.namespaces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Lookups for LookupTable {
    fn repository(&self, namespace: &str, name: &str) -> Option<Arc<Repository>> {
        self.repositories.get(&key(namespace, name)).cloned()
    }
    fn app_binding(&self, namespace: &str, name: &str) -> Option<Arc<AppBinding>> {
        self.app_bindings.get(&key(namespace, name)).cloned()
    }
    fn backup_configuration(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<BackupConfiguration>> {
        self.backup_configurations
            .get(&key(namespace, name))
            .cloned()
    }
    fn task(&self, name: &str) -> Option<Arc<Task>> {
        self.tasks.get(name).cloned()
    }
    fn function(&self, name: &str) -> Option<Arc<Function>> {
        self.functions.get(name).cloned()
    }
    fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get(name).cloned()
    }
}

/// Whether an UPDATE must pass the spec rules. Updates of objects being deleted, and updates
/// that leave `spec` alone (finalizers, labels, annotations, status), are admitted as they are:
/// admission never blocks deletion or bookkeeping.
pub fn needs_spec_rules(old: Option<&serde_json::Value>, new: &serde_json::Value) -> bool {
    let Some(old) = old else { return true };
    let terminating = new
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if terminating {
        return false;
    }
    old.get("spec") != new.get("spec")
}

/// The admission rules of one kind, so the webhook can treat every kind alike.
pub trait Validate: Sized {
    /// Every error and warning of `self` (`old` is set on UPDATE) under the install's `policy`.
    fn validate(&self, old: Option<&Self>, lookups: &dyn Lookups, policy: &Policy) -> Verdict;
}

macro_rules! impl_validate {
    ($kind:ty, $f:path, with_policy) => {
        impl Validate for $kind {
            fn validate(
                &self,
                old: Option<&Self>,
                lookups: &dyn Lookups,
                policy: &Policy,
            ) -> Verdict {
                $f(self, old, lookups, policy)
            }
        }
    };
    ($kind:ty, $f:path) => {
        impl Validate for $kind {
            fn validate(&self, old: Option<&Self>, lookups: &dyn Lookups, _: &Policy) -> Verdict {
                $f(self, old, lookups)
            }
        }
    };
}

impl_validate!(Repository, validate_repository, with_policy);
impl_validate!(
    BackupConfiguration,
    validate_backup_configuration,
    with_policy
);
impl_validate!(crate::BackupSession, validate_backup_session);
impl_validate!(crate::RestoreSession, validate_restore_session, with_policy);
impl_validate!(Task, validate_task);
impl_validate!(Function, validate_function);
impl_validate!(
    crate::BackupBlueprint,
    validate_backup_blueprint,
    with_policy
);
