//! Dereference once: the objects a BackupConfiguration or RestoreSession names (its
//! Repository, AppBinding, Task and the Task's Functions), looked up in one pure step from
//! [`Lookups`]. Job resolution, admission's reference checks and the controller's conditions all
//! read the [`Dereferenced`] value.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common::{ObjectReference, TaskRef};
use crate::defaults::{CatalogDefaults, Direction};
use crate::validation::Lookups;
use crate::{AppBinding, Function, Repository, Task};

/// What an object refers to, and from which namespace.
#[derive(Clone, Copy, Debug)]
pub struct References<'a> {
    pub direction: Direction,
    /// The referring object's namespace (the default of the Repository's).
    pub namespace: &'a str,
    pub repository: &'a ObjectReference,
    /// Name of the AppBinding in `namespace`.
    pub target: &'a str,
    pub task: Option<&'a TaskRef>,
}

impl<'a> From<&'a crate::BackupConfiguration> for References<'a> {
    fn from(c: &'a crate::BackupConfiguration) -> Self {
        Self {
            direction: Direction::Backup,
            namespace: c.metadata.namespace.as_deref().unwrap_or_default(),
            repository: &c.spec.repository,
            target: &c.spec.target.r#ref.name,
            task: c.spec.task.as_ref(),
        }
    }
}

impl<'a> From<&'a crate::RestoreSession> for References<'a> {
    fn from(r: &'a crate::RestoreSession) -> Self {
        Self {
            direction: Direction::Restore,
            namespace: r.metadata.namespace.as_deref().unwrap_or_default(),
            repository: &r.spec.repository,
            target: &r.spec.target.r#ref.name,
            task: r.spec.task.as_ref(),
        }
    }
}

/// The referenced objects; `None` (or an entry of `missing_functions`) for what is not there.
#[derive(Clone, Debug, Default)]
pub struct Dereferenced {
    /// (namespace, name) of the Repository, its namespace defaulted.
    pub repository_key: (String, String),
    pub repository: Option<Arc<Repository>>,
    /// Labels of the referring namespace, looked up when the Repository was found (its usage
    /// policy may need them).
    pub namespace_labels: Option<BTreeMap<String, String>>,
    pub app_binding: Option<Arc<AppBinding>>,
    /// The Task's name: the given one, else (when a catalog is given) the AppBinding's or the
    /// catalog's default; `None` without a catalog and a given name.
    pub task_name: Option<String>,
    pub task: Option<Arc<Task>>,
    /// The Task's Functions by name, and (step index, Function name) of the missing ones.
    pub functions: BTreeMap<String, Arc<Function>>,
    pub missing_functions: Vec<(usize, String)>,
}

impl Dereferenced {
    /// Looks up what `refs` names. Without `catalog` only a Task named by the user is looked
    /// up; with it, an empty name takes the AppBinding's default Task, or the catalog's while
    /// the AppBinding is missing.
    pub fn of(
        refs: &References<'_>,
        lookups: &dyn Lookups,
        catalog: Option<&CatalogDefaults>,
    ) -> Self {
        let repo_ns = refs.repository.namespace_or(refs.namespace).to_string();
        let repository_key = (repo_ns, refs.repository.name.clone());
        let repository = lookups.repository(&repository_key.0, &repository_key.1);
        let namespace_labels = repository
            .as_ref()
            .and_then(|_| lookups.namespace_labels(refs.namespace));
        let app_binding = lookups.app_binding(refs.namespace, refs.target);
        let task_name = task_name(refs, app_binding.as_deref(), repository.as_deref(), catalog);
        // A Task of that name, else the catalog's for one of Stash's versioned names.
        let task = task_name.as_deref().and_then(|n| {
            lookups.task(n).or_else(|| {
                let stash = catalog.cloned().unwrap_or_default();
                lookups.task(stash.stash_task(n)?)
            })
        });
        let mut found = Self {
            repository_key,
            repository,
            namespace_labels,
            app_binding,
            task_name,
            task,
            ..Self::default()
        };
        found.look_up_functions(lookups);
        found
    }

    fn look_up_functions(&mut self, lookups: &dyn Lookups) {
        let Some(task) = self.task.clone() else {
            return;
        };
        for (i, step) in task.spec.steps.iter().enumerate() {
            match lookups.function(&step.name) {
                Some(f) => {
                    self.functions.insert(step.name.clone(), f);
                }
                None => self.missing_functions.push((i, step.name.clone())),
            }
        }
    }
}

/// The name of the Task `refs` runs, when it can be told (see [`Dereferenced::of`]).
fn task_name(
    refs: &References<'_>,
    app: Option<&AppBinding>,
    repository: Option<&Repository>,
    catalog: Option<&CatalogDefaults>,
) -> Option<String> {
    if let Some(name) = refs.task.and_then(TaskRef::given_name) {
        return Some(name.to_string());
    }
    // Without the AppBinding (yet), the catalog's default: what a session would run now.
    Some(TaskRef::name_or_default(
        refs.task,
        app,
        repository,
        refs.direction,
        catalog?,
    ))
}
