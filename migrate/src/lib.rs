//! Stash manifests to cairn's. cairn keeps Stash's kinds and field names, so most of a migration
//! is the `apiVersion`; what cairn cannot carry is removed and said, never dropped silently:
//! the hooks cairn does not run (template functions, named ports), Stash's workload backups (a target that
//! is not an AppBinding, a `VolumeSnapshotter` driver), batch kinds, a root `runAsUser` the restricted install refuses,
//! Stash's `args` flags cairn does not read, and any field cairn's types do not know. Each
//! migrated object is then checked by cairn's own admission rules (the objects of the same
//! input serve as the lookups), and what admission would refuse or warn about is reported too.

use std::collections::BTreeSet;

use anyhow::Context;
use cairn_api::defaults::Direction;
use cairn_api::stash_args;
use cairn_api::validation::{LookupTable, Policy, Validate, Verdict};
use cairn_api::{
    BackupBlueprint, BackupConfiguration, BackupSession, Function, Repository, RestoreSession, Task,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// cairn's API version of every kind it shares with Stash.
pub const CAIRN_API_VERSION: &str = "cairn.dev/v1alpha1";

/// cairn's catalog (in every install), for the lookups of admission's rules.
const CATALOG_TASKS: &str = include_str!("../../manifests/catalog/tasks.yaml");
const CATALOG_FUNCTIONS: &str = include_str!("../../manifests/catalog/functions.yaml");

/// The kinds cairn shares with Stash.
const SHARED_KINDS: [&str; 7] = [
    "Repository",
    "BackupConfiguration",
    "BackupSession",
    "RestoreSession",
    "Task",
    "Function",
    "BackupBlueprint",
];

/// What a migration made: the YAML to apply, and what a person must read.
#[derive(Debug, Default)]
pub struct Migration {
    /// cairn's manifests, and the other documents unchanged, as a YAML stream.
    pub yaml: String,
    /// `<Kind>/<name>: <what was changed>`.
    pub changes: Vec<String>,
    /// `<Kind>/<name>: <what was left out and why>`.
    pub not_carried: Vec<String>,
    /// `<Kind>/<name>: <path>: <message>` that cairn's admission would refuse.
    pub refusals: Vec<String>,
    /// `<Kind>/<name>: <path>: <message>` that cairn's admission would warn about.
    pub warnings: Vec<String>,
}

impl Migration {
    /// Every line of the report, by section.
    pub fn report(&self) -> Vec<String> {
        let section = |title: &str, lines: &[String]| {
            let mut out = vec![format!("# {title}: {}", lines.len())];
            out.extend(lines.iter().map(|l| format!("  {l}")));
            out
        };
        [
            section("changed", &self.changes),
            section("not carried", &self.not_carried),
            section("admission would refuse", &self.refusals),
            section("admission would warn", &self.warnings),
        ]
        .concat()
    }
}

/// Migrates a YAML stream of Stash manifests (any other documents pass unchanged).
pub fn migrate(input: &str) -> anyhow::Result<Migration> {
    let mut m = Migration::default();
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let value = Value::deserialize(doc).with_context(|| format!("document {}", i + 1))?;
        if value.is_null() {
            continue;
        }
        if let Some(kept) = migrate_object(value, &mut m) {
            docs.push(kept);
        }
    }
    check(&docs, &mut m);
    for doc in &docs {
        m.yaml.push_str("---\n");
        m.yaml
            .push_str(&serde_yaml::to_string(doc).context("writing YAML")?);
    }
    Ok(m)
}

/// `Kind/name` of an object.
fn id(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// One document: cairn's object, or the document unchanged, or `None` when it cannot be
/// carried at all.
fn migrate_object(mut obj: Value, m: &mut Migration) -> Option<Value> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    if !api_version.starts_with("stash.appscode.com/") {
        return Some(obj);
    }
    let who = id(&obj);
    let kind = obj["kind"].as_str().unwrap_or_default();
    if !SHARED_KINDS.contains(&kind) {
        m.not_carried.push(format!(
            "{who}: cairn has no {kind}; write one BackupConfiguration (or RestoreSession) per \
             database"
        ));
        return None;
    }
    if let Some(why) = workload_only(&obj) {
        m.not_carried.push(format!("{who}: {why}"));
        return None;
    }
    obj["apiVersion"] = Value::from(CAIRN_API_VERSION);
    m.changes.push(format!(
        "{who}: apiVersion {api_version} → {CAIRN_API_VERSION}"
    ));
    drop_refused_hooks(&mut obj, &who, m);
    drop_root_user(&mut obj, &who, m);
    report_dump_args(&obj, &who, m);
    drop_unknown_fields(&mut obj, &who, m);
    Some(obj)
}

/// Why an object is one of Stash's workload backups, which cairn does not do.
fn workload_only(obj: &Value) -> Option<String> {
    let spec = &obj["spec"];
    if spec["driver"] == "VolumeSnapshotter" {
        return Some(
            "driver VolumeSnapshotter: cairn backs up the database through its API; use your CSI \
             driver's VolumeSnapshots or Velero for volumes"
                .into(),
        );
    }
    let kind = spec["target"]["ref"]["kind"].as_str()?;
    (kind != "AppBinding").then(|| {
        format!(
            "target {kind}: cairn backs up Elasticsearch and OpenSearch through an AppBinding, \
             not workloads' volumes"
        )
    })
}

/// Removes each hook cairn does not run (with the reason admission gives), and `spec.hooks`
/// when none is left; the hooks cairn runs stay as written.
fn drop_refused_hooks(obj: &mut Value, who: &str, m: &mut Migration) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let Some(hooks) = spec.get_mut("hooks").and_then(Value::as_object_mut) else {
        return;
    };
    let refused: Vec<(String, String)> = hooks
        .iter()
        .filter_map(|(name, v)| Some((name.clone(), cairn_api::hooks::refusal_of(name, v)?)))
        .collect();
    for (name, why) in refused {
        hooks.remove(&name);
        m.not_carried
            .push(format!("{who}: spec.hooks.{name} removed: {why}"));
    }
    if hooks.is_empty() {
        spec.remove("hooks");
        m.not_carried.push(format!(
            "{who}: spec.hooks removed: no hook cairn runs is left; run the others yourself \
             around the session"
        ));
    }
}

/// Removes `runAsUser: 0` (and `runAsNonRoot: false`) from the runtime settings: the default
/// install refuses root, and cairn's agent needs none.
fn drop_root_user(obj: &mut Value, who: &str, m: &mut Migration) {
    for part in ["container", "pod"] {
        let path = format!("/spec/runtimeSettings/{part}/securityContext");
        let Some(context) = obj.pointer_mut(&path).and_then(Value::as_object_mut) else {
            continue;
        };
        if context.get("runAsUser") == Some(&Value::from(0)) {
            context.remove("runAsUser");
            m.not_carried.push(format!(
                "{who}: spec.runtimeSettings.{part}.securityContext.runAsUser: 0 removed: the \
                 default install runs every Job as non-root (jobPodSecurity: restricted); \
                 cairn's agent runs as 65534"
            ));
        }
        if context.get("runAsNonRoot") == Some(&Value::from(false)) {
            context.remove("runAsNonRoot");
            m.not_carried.push(format!(
                "{who}: spec.runtimeSettings.{part}.securityContext.runAsNonRoot: false removed"
            ));
        }
        if context.is_empty()
            && let Some(settings) = obj
                .pointer_mut(&format!("/spec/runtimeSettings/{part}"))
                .and_then(Value::as_object_mut)
        {
            settings.remove("securityContext");
        }
    }
}

/// Stash's Task param `args` (elasticdump's flags) stays as written: admission translates
/// `--match`, `--ignoreType` and `--includeType` for cairn's agent. Says so, and names every
/// flag cairn does not read.
fn report_dump_args(obj: &Value, who: &str, m: &mut Migration) {
    let direction = match obj["kind"].as_str() {
        Some("RestoreSession") => Direction::Restore,
        _ => Direction::Backup,
    };
    let params = obj.pointer("/spec/task/params").and_then(Value::as_array);
    for p in params.into_iter().flatten() {
        if p["name"] != stash_args::ARGS_PARAM {
            continue;
        }
        let value = p["value"].as_str().unwrap_or_default();
        // Flags that cannot be read at all are admission's errors (see `check`).
        let Ok(t) = stash_args::translate(value, direction) else {
            continue;
        };
        m.changes.push(format!(
            "{who}: spec.task.params args kept: cairn's agent applies its --match, \
             --ignoreType and --includeType"
        ));
        for (flag, instead) in t.unread {
            m.not_carried.push(format!(
                "{who}: spec.task.params args {flag} is not read by cairn: {instead}"
            ));
        }
    }
}

/// Removes every field cairn's type of the kind does not know (a round trip through the type
/// drops it), saying which.
fn drop_unknown_fields(obj: &mut Value, who: &str, m: &mut Migration) {
    let known = match obj["kind"].as_str().unwrap_or_default() {
        "Repository" => round_trip::<Repository>(obj),
        "BackupConfiguration" => round_trip::<BackupConfiguration>(obj),
        "BackupSession" => round_trip::<BackupSession>(obj),
        "RestoreSession" => round_trip::<RestoreSession>(obj),
        "Task" => round_trip::<Task>(obj),
        "Function" => round_trip::<Function>(obj),
        "BackupBlueprint" => round_trip::<BackupBlueprint>(obj),
        _ => return,
    };
    let Some(known) = known else {
        // Not of the type's shape at all: admission will say why (see `check`).
        return;
    };
    let mut unknown = BTreeSet::new();
    collect_unknown(obj, &known, "", &mut unknown);
    for path in unknown {
        if remove_path(obj, &path) {
            m.not_carried.push(format!(
                "{who}: {} removed: cairn has no such field",
                path.trim_start_matches('/').replace('/', ".")
            ));
        }
    }
}

fn round_trip<K: DeserializeOwned + Serialize>(obj: &Value) -> Option<Value> {
    let typed: K = serde_json::from_value(obj.clone()).ok()?;
    serde_json::to_value(typed).ok()
}

/// JSON pointers of the fields of `obj` that `known` lacks (under `spec` only: metadata and
/// status are Kubernetes').
fn collect_unknown(obj: &Value, known: &Value, at: &str, out: &mut BTreeSet<String>) {
    let Value::Object(fields) = obj else { return };
    for (key, value) in fields {
        let path = format!("{at}/{key}");
        if at.is_empty() && key != "spec" {
            continue;
        }
        match known.get(key) {
            None if !value.is_null() => {
                out.insert(path);
            }
            Some(k) => collect_unknown(value, k, &path, out),
            None => {}
        }
    }
}

/// Removes the field at `pointer`; whether it was there.
fn remove_path(obj: &mut Value, pointer: &str) -> bool {
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return false;
    };
    (obj.pointer_mut(parent).and_then(Value::as_object_mut))
        .is_some_and(|o| o.remove(key).is_some())
}

/// cairn's admission rules over the migrated objects, with the input's objects as lookups.
fn check(docs: &[Value], m: &mut Migration) {
    let lookups = lookups(docs);
    let policy = Policy::default();
    for doc in docs.iter().filter(|d| d["apiVersion"] == CAIRN_API_VERSION) {
        let verdict = match doc["kind"].as_str().unwrap_or_default() {
            "Repository" => verdict::<Repository>(doc, &lookups, &policy),
            "BackupConfiguration" => verdict::<BackupConfiguration>(doc, &lookups, &policy),
            "BackupSession" => verdict::<BackupSession>(doc, &lookups, &policy),
            "RestoreSession" => verdict::<RestoreSession>(doc, &lookups, &policy),
            "Task" => verdict::<Task>(doc, &lookups, &policy),
            "Function" => verdict::<Function>(doc, &lookups, &policy),
            "BackupBlueprint" => verdict::<BackupBlueprint>(doc, &lookups, &policy),
            _ => continue,
        };
        let who = id(doc);
        match verdict {
            Ok(v) => {
                m.refusals
                    .extend((v.errors.iter()).map(|e| format!("{who}: {}: {}", e.path, e.message)));
                m.warnings.extend(
                    (v.warnings.iter()).map(|w| format!("{who}: {}: {}", w.path, w.message)),
                );
            }
            Err(e) => m.refusals.push(format!("{who}: {e}")),
        }
    }
}

fn verdict<K: Validate + DeserializeOwned>(
    doc: &Value,
    lookups: &LookupTable,
    policy: &Policy,
) -> Result<Verdict, serde_json::Error> {
    let typed: K = serde_json::from_value(doc.clone())?;
    Ok(typed.validate(None, lookups, policy))
}

/// The input's own objects, as admission would find them in the cluster.
fn lookups(docs: &[Value]) -> LookupTable {
    fn typed<K: DeserializeOwned>(d: &Value) -> Option<K> {
        serde_json::from_value(d.clone()).ok()
    }
    let mut table = LookupTable::default();
    // cairn's catalog, which every install has.
    let catalog = [CATALOG_TASKS, CATALOG_FUNCTIONS].map(|text| {
        serde_yaml::Deserializer::from_str(text)
            .filter_map(|d| Value::deserialize(d).ok())
            .collect::<Vec<_>>()
    });
    for doc in catalog.iter().flatten().chain(docs) {
        let cairn = doc["apiVersion"] == CAIRN_API_VERSION;
        let app = (doc["apiVersion"].as_str()).is_some_and(|v| v.starts_with("appcatalog."));
        table = match doc["kind"].as_str().unwrap_or_default() {
            "Repository" if cairn => typed(doc).map(|r| table.clone().with_repository(r)),
            "BackupConfiguration" if cairn => {
                typed(doc).map(|c| table.clone().with_backup_configuration(c))
            }
            "Task" if cairn => typed(doc).map(|t| table.clone().with_task(t)),
            "Function" if cairn => typed(doc).map(|f| table.clone().with_function(f)),
            "AppBinding" if app => typed(doc).map(|a| table.clone().with_app_binding(a)),
            _ => None,
        }
        .unwrap_or(table);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stash_objects_move_and_the_rest_stays() {
        let input = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: demo}\n---\n\
            apiVersion: stash.appscode.com/v1alpha1\nkind: Repository\n\
            metadata: {name: r, namespace: demo}\n\
            spec: {backend: {storageSecretName: s, local: {mountPath: /backup, emptyDir: {}}}, \
            somethingNew: 1}\n";
        let m = migrate(input).expect("migrates");
        assert!(m.yaml.contains("kind: Secret"), "{}", m.yaml);
        assert!(
            m.yaml.contains("apiVersion: cairn.dev/v1alpha1"),
            "{}",
            m.yaml
        );
        assert!(!m.yaml.contains("somethingNew"), "{}", m.yaml);
        assert_eq!(m.changes.len(), 1, "{:?}", m.changes);
        assert!(
            m.not_carried
                .iter()
                .any(|l| l.contains("spec.somethingNew removed")),
            "{:?}",
            m.not_carried
        );
        // Migrating what came out changes nothing more.
        let again = migrate(&m.yaml).expect("migrates");
        assert!(again.changes.is_empty() && again.not_carried.is_empty());
        assert_eq!(again.yaml, m.yaml);
    }

    #[test]
    fn what_cairn_does_not_do_is_left_out_and_said() {
        let input = "apiVersion: stash.appscode.com/v1beta1\nkind: BackupBatch\n\
            metadata: {name: b}\n---\napiVersion: stash.appscode.com/v1beta1\n\
            kind: BackupConfiguration\nmetadata: {name: v}\n\
            spec: {driver: VolumeSnapshotter, schedule: '@daily'}\n";
        let m = migrate(input).expect("migrates");
        assert_eq!(m.yaml, "");
        assert_eq!(m.not_carried.len(), 2, "{:?}", m.not_carried);
        assert!(m.not_carried[0].contains("no BackupBatch"));
        assert!(m.not_carried[1].contains("VolumeSnapshotter"));
    }

    #[test]
    fn what_admission_would_refuse_is_reported() {
        let input = "apiVersion: stash.appscode.com/v1beta1\nkind: BackupConfiguration\n\
            metadata: {name: c, namespace: demo}\n\
            spec: {schedule: 'every day', repository: {name: r}, \
            target: {ref: {apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: es}}, \
            retentionPolicy: {name: k, keepLast: 1}}\n";
        let m = migrate(input).expect("migrates");
        assert!(
            m.refusals.iter().any(|l| l.contains("spec.schedule")),
            "{:?}",
            m.refusals
        );
    }

    #[test]
    fn a_stash_blueprint_moves_and_a_shared_location_is_reported() {
        let input = "apiVersion: stash.appscode.com/v1beta1\nkind: BackupBlueprint\n\
            metadata: {name: es}\n\
            spec: {backend: {storageSecretName: s, gcs: {bucket: b, prefix: 'stash/${TARGET_NAME}'}}, \
            backupNamespace: stash, schedule: '0 3 * * *', retentionPolicy: {name: k, keepLast: 3}}\n";
        let m = migrate(input).expect("migrates");
        assert!(
            m.yaml.contains("apiVersion: cairn.dev/v1alpha1"),
            "{}",
            m.yaml
        );
        assert!(
            m.not_carried
                .iter()
                .any(|l| l.contains("spec.backupNamespace removed")),
            "{:?}",
            m.not_carried
        );
        assert!(
            m.refusals
                .iter()
                .any(|l| l.contains("spec.backend.gcs.prefix")),
            "{:?}",
            m.refusals
        );
    }
}
