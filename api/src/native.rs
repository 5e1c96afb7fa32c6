//! Native snapshots: a Repository with `driver: Native` holds the server's own snapshots
//! (the Elasticsearch/OpenSearch `_snapshot` API), not restic data. This file owns the driver
//! marker, the mapping of a Repository's backend onto a server-side snapshot repository, and
//! the names and metadata that tie a snapshot to its namespace and configuration.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::repository::{Backend, Provider};

/// What a Repository holds, and so which Tasks may use it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StorageDriver {
    /// A restic-format repository written by cairn's agent (the default).
    #[default]
    Restic,
    /// The server's own snapshots, written by the database's data nodes through its
    /// `_snapshot` API; credentials stay in the cluster's keystore.
    Native,
}

impl StorageDriver {
    /// `restic` or `native`: the Snapshot objects' `driver` column and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restic => "restic",
            Self::Native => "native",
        }
    }

    /// The catalog's backup and restore Tasks for this driver, for messages that say what
    /// would be valid.
    pub fn catalog_tasks(self) -> &'static str {
        match self {
            Self::Restic => "elasticsearch-backup / elasticsearch-restore",
            Self::Native => "elasticsearch-snapshot / elasticsearch-snapshot-restore",
        }
    }
}

/// The first path segment of every native repository's objects in a bucket: restic
/// repositories may not use it, so the two kinds of files never share a prefix.
pub const NATIVE_PREFIX: &str = "cairn-native";

/// The providers a native repository may use, for messages that list what is valid.
pub const NATIVE_PROVIDERS: &str = "local (the server's fs type), s3, gcs, azure";

/// Where a native repository lives, as the Job passes it to the agent (its flags) and as
/// admission reads it from a Repository: the one input of [`Self::server_repository`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NativeLocation {
    /// `local`, `s3`, `gcs` or `azure`.
    pub provider: String,
    pub bucket: String,
    pub prefix: String,
    pub endpoint: String,
    pub region: String,
    /// `local` only: the directory on the cluster's nodes, under their `path.repo`.
    pub path: String,
    /// The Repository's namespace, which cairn appends to every location (the Job passes it;
    /// admission leaves it empty). The cluster's own credentials write the files, so a tenant
    /// naming another tenant's bucket, prefix or directory must still land elsewhere: under
    /// its own namespace, never on another's snapshots.
    pub namespace: String,
}

/// A server-side snapshot repository: the body of `PUT _snapshot/<name>`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ServerRepository {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub settings: Map<String, Value>,
}

impl ServerRepository {
    /// The settings that say where a repository of this type keeps its files: the ones two
    /// registrations must agree on to be the same repository.
    fn location_keys(&self) -> &'static [&'static str] {
        match self.kind {
            "fs" => &["location"],
            "s3" => &["bucket", "base_path", "endpoint"],
            "gcs" => &["bucket", "base_path"],
            "azure" => &["container", "base_path"],
            _ => &[],
        }
    }

    /// How the registration the server answered (`GET _snapshot/<name>`'s value: `type` and
    /// `settings`, every setting a string) differs from this one in where the snapshots live:
    /// the type and the location settings ([`Self::location_keys`]; how the server reaches
    /// them, its throttles and `readonly` may differ); `None` when it does not.
    pub fn mismatch(&self, registered: &Value) -> Option<String> {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => "(none)".into(),
            other => other.to_string(),
        };
        let mut differences = Vec::new();
        let kind = registered["type"].as_str().unwrap_or("(none)");
        if kind != self.kind {
            differences.push(format!("type {kind} instead of {}", self.kind));
        }
        for key in self.location_keys() {
            let ours = text(self.settings.get(*key).unwrap_or(&Value::Null));
            let got = text(&registered["settings"][*key]);
            if got != ours {
                differences.push(format!("{key} {got:?} instead of {ours:?}"));
            }
        }
        (!differences.is_empty()).then(|| differences.join(", "))
    }
}

impl NativeLocation {
    /// The location a Repository's backend names (no check: see [`Self::server_repository`]).
    pub fn of(backend: &Backend) -> Self {
        let provider = backend.provider().map(|p| p.as_str()).unwrap_or_default();
        Self {
            provider: provider.into(),
            bucket: backend.bucket().unwrap_or_default().into(),
            prefix: backend.prefix().unwrap_or_default().into(),
            endpoint: backend.endpoint(),
            region: backend
                .s3
                .as_ref()
                .and_then(|s| s.region.clone())
                .unwrap_or_default(),
            path: backend.local_path(),
            namespace: String::new(),
        }
    }

    /// The server's object-store base path: [`NATIVE_PREFIX`], the namespace, then the prefix.
    pub fn base_path(&self) -> String {
        [
            NATIVE_PREFIX,
            &self.namespace,
            self.prefix.trim_matches('/'),
        ]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/")
    }

    /// The `fs` location: the directory, then the namespace.
    fn fs_location(&self) -> String {
        match self.namespace.as_str() {
            "" => self.path.clone(),
            ns => format!("{}/{ns}", self.path.trim_end_matches('/')),
        }
    }

    /// The repository to register: `local` → `fs` at the path, `s3` → `s3` (bucket, base path,
    /// endpoint, region, path-style for a non-AWS endpoint), `gcs`, `azure`; `readonly` for a
    /// cluster that only restores. `Err` says what is missing or unsupported.
    pub fn server_repository(&self, readonly: bool) -> Result<ServerRepository, String> {
        let mut settings = Map::new();
        let kind = match self.provider.as_str() {
            "local" => {
                if !self.path.starts_with('/') || self.path.split('/').any(|p| p == "..") {
                    return Err(format!(
                        "local.mountPath {:?} must be an absolute path without \"..\": the \
                         directory on the cluster's nodes, under their path.repo",
                        self.path
                    ));
                }
                settings.insert("location".into(), json!(self.fs_location()));
                "fs"
            }
            "s3" => {
                self.s3_settings(&mut settings);
                "s3"
            }
            "gcs" | "azure" => {
                let key = if self.provider == "gcs" {
                    "bucket"
                } else {
                    "container"
                };
                settings.insert(key.into(), json!(self.bucket));
                settings.insert("base_path".into(), json!(self.base_path()));
                if self.provider == "gcs" {
                    "gcs"
                } else {
                    "azure"
                }
            }
            other => {
                return Err(format!(
                    "provider {other:?} has no native snapshot repository; use one of \
                     {NATIVE_PROVIDERS}"
                ));
            }
        };
        if readonly {
            settings.insert("readonly".into(), json!(true));
        }
        Ok(ServerRepository { kind, settings })
    }

    /// An S3 repository's settings: the endpoint's host and protocol as the server's client
    /// wants them, path-style addressing for anything but AWS (MinIO, Ceph need it).
    fn s3_settings(&self, settings: &mut Map<String, Value>) {
        settings.insert("bucket".into(), json!(self.bucket));
        settings.insert("base_path".into(), json!(self.base_path()));
        if let Some((scheme, host)) = self.endpoint.split_once("://") {
            let host = host.trim_end_matches('/');
            settings.insert("endpoint".into(), json!(host));
            settings.insert("protocol".into(), json!(scheme.to_ascii_lowercase()));
            if !host.ends_with("amazonaws.com") {
                settings.insert("path_style_access".into(), json!(true));
            }
        }
        if !self.region.is_empty() {
            settings.insert("region".into(), json!(self.region));
        }
    }
}

/// Why the server (Java's `Matcher.appendReplacement`) and cairn (which works out the target
/// names beforehand, to check and, under `existing: overwrite`, delete them) could read a
/// `renameReplacement` differently: `$1y` is group 1 then `y` for Java, a group named `1y` for
/// Rust's regex; `$12` depends on the group count for Java; `\` escapes only for Java. `None`
/// when both read it alike.
pub fn rename_replacement_problem(replacement: &str) -> Option<String> {
    let bytes = replacement.as_bytes();
    let ambiguous = bytes.windows(3).any(|w| {
        w[0] == b'$' && w[1].is_ascii_digit() && (w[2].is_ascii_alphanumeric() || w[2] == b'_')
    });
    (ambiguous || replacement.contains('\\')).then(|| {
        format!(
            "renameReplacement {replacement:?}: the server (Java) and cairn read a group \
             reference followed by a letter, digit or _ (e.g. $1y, $12) or a backslash \
             differently, and cairn must know the restored names before the server makes them; \
             follow $1 with another character (e.g. copy-$1-x) or rename in two steps"
        )
    })
}

/// The name cairn registers a Repository under on the server: `cairn_<namespace>_<name>`
/// (`_` is in neither a namespace nor a Repository name, so two Repositories never share one).
pub fn server_repository_name(namespace: &str, name: &str) -> String {
    format!("cairn_{namespace}_{name}")
}

/// The metadata keys of a native snapshot (the server caps `metadata` near 1 KB: identity only).
pub const META_NAMESPACE: &str = "cairn.dev/namespace";
pub const META_CONFIGURATION: &str = "cairn.dev/configuration";
pub const META_SESSION: &str = "cairn.dev/session";
pub const META_HOST: &str = "cairn.dev/host";
/// Documents of the snapshot's indices when it started, which a whole restore checks.
pub const META_DOCUMENTS: &str = "cairn.dev/documents";

/// Who made a native snapshot: its name and metadata come from here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotIdentity {
    pub namespace: String,
    pub configuration: String,
    pub session: String,
    pub host: String,
}

impl SnapshotIdentity {
    /// `<namespace>_<configuration>_<session>`: no Kubernetes name holds a `_`, so the parts
    /// never run into each other (with dots, configuration `a.b` and session `c` would name
    /// what configuration `a` and session `b.c` name), and a session's name is unique in its
    /// namespace: names never collide, across namespaces sharing a repository either. Every
    /// part is a DNS name, which the server's snapshot-name rules all accept.
    pub fn snapshot_name(&self) -> String {
        format!("{}_{}_{}", self.namespace, self.configuration, self.session)
    }

    /// The snapshot's `metadata`.
    pub fn metadata(&self) -> Value {
        json!({
            META_NAMESPACE: self.namespace,
            META_CONFIGURATION: self.configuration,
            META_SESSION: self.session,
            META_HOST: self.host,
        })
    }

    /// Whether a snapshot's `metadata` says this namespace and configuration made it: the only
    /// snapshots this configuration's retention may delete.
    pub fn owns(&self, metadata: &Value) -> bool {
        metadata.get(META_NAMESPACE).and_then(Value::as_str) == Some(&self.namespace)
            && metadata.get(META_CONFIGURATION).and_then(Value::as_str) == Some(&self.configuration)
    }
}

/// Why `task` cannot work with `repo` (their drivers differ), naming the Tasks that would;
/// `None` when they match.
pub fn driver_mismatch(task: &crate::Task, repo: &crate::Repository) -> Option<String> {
    let (task_driver, repo_driver) = (task.spec.driver(), repo.spec.driver());
    (task_driver != repo_driver).then(|| {
        format!(
            "Task {:?} is a {} Task, but Repository {:?} has driver: {repo_driver:?}; use a {} \
             Task ({}) with it, or a Repository with driver: {task_driver:?}",
            task.metadata.name.as_deref().unwrap_or_default(),
            task_driver.as_str(),
            repo.metadata.name.as_deref().unwrap_or_default(),
            repo_driver.as_str(),
            repo_driver.catalog_tasks(),
        )
    })
}

/// Why `name` cannot name a native snapshot to restore, or `None`: `latest`, or a name the
/// server accepts (lowercase, no `\\ / * ? " < > | , #` or space, not starting with `_` or
/// `-`, at most 255 bytes).
pub fn snapshot_name_problem(name: &str) -> Option<String> {
    let bad = |c: char| c.is_ascii_uppercase() || "\\/*?\"<>|,# ".contains(c) || c.is_control();
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['_', '-'])
        && !name.chars().any(bad);
    (!ok).then(|| {
        format!(
            "{name:?} is not a native snapshot name: expected \"latest\" or a snapshot's name \
             as the server lists it (GET _snapshot/<repository>/_all), e.g. \
             \"<namespace>_<configuration>_<session>\" for cairn's own"
        )
    })
}

impl Backend {
    /// Why this backend cannot hold native snapshots, at its field path under `spec.backend`,
    /// or `None`.
    pub fn native_problem(&self) -> Option<(String, String)> {
        let provider = self.provider()?;
        if matches!(provider, Provider::Swift | Provider::B2 | Provider::Rest) {
            return Some((
                provider.as_str().into(),
                format!(
                    "driver Native keeps the server's own snapshots, and Elasticsearch and \
                     OpenSearch have no {} snapshot repository; use one of {NATIVE_PROVIDERS}, \
                     or driver: Restic",
                    provider.as_str()
                ),
            ));
        }
        NativeLocation::of(self)
            .server_repository(false)
            .err()
            .map(|why| ("local.mountPath".into(), why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(provider: &str) -> NativeLocation {
        NativeLocation {
            provider: provider.into(),
            bucket: "snaps".into(),
            prefix: "/team/a/".into(),
            endpoint: "http://minio.storage:9000/".into(),
            region: "eu-west-1".into(),
            path: "/var/backups/es".into(),
            namespace: String::new(),
        }
    }

    #[test]
    fn replacements_java_and_rust_read_differently_are_named() {
        for ok in ["copy-$1", "$1-x", "restored_$1.$2", "plain", "x$1"] {
            assert_eq!(rename_replacement_problem(ok), None, "{ok}");
        }
        for bad in ["x$1y", "$12", "$1_", "a\\1"] {
            let why = rename_replacement_problem(bad).expect(bad);
            assert!(why.contains("renameReplacement"), "{why}");
        }
    }

    #[test]
    fn the_namespace_ends_every_location_so_tenants_never_share_one() {
        for (provider, key, want) in [
            ("local", "location", "/var/backups/es/team-b"),
            ("s3", "base_path", "cairn-native/team-b/team/a"),
            ("gcs", "base_path", "cairn-native/team-b/team/a"),
        ] {
            let mut l = loc(provider);
            l.namespace = "team-b".into();
            let r = l.server_repository(false).unwrap();
            assert_eq!(r.settings[key], json!(want), "{provider}");
        }
    }

    #[test]
    fn local_maps_to_fs_under_its_path() {
        let r = loc("local").server_repository(true).unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"type": "fs", "settings": {"location": "/var/backups/es", "readonly": true}})
        );
        let mut relative = loc("local");
        relative.path = "backups/../x".into();
        assert!(relative.server_repository(false).is_err());
    }

    #[test]
    fn s3_maps_bucket_base_path_endpoint_region_path_style() {
        let r = loc("s3").server_repository(false).unwrap();
        assert_eq!(r.kind, "s3");
        assert_eq!(
            Value::Object(r.settings),
            json!({"bucket": "snaps", "base_path": "cairn-native/team/a",
                   "endpoint": "minio.storage:9000", "protocol": "http",
                   "path_style_access": true, "region": "eu-west-1"})
        );
        let mut aws = loc("s3");
        aws.endpoint = "https://s3.eu-west-1.amazonaws.com".into();
        aws.prefix = String::new();
        let r = aws.server_repository(false).unwrap();
        assert_eq!(r.settings["base_path"], json!("cairn-native"));
        assert!(!r.settings.contains_key("path_style_access"));
    }

    #[test]
    fn gcs_azure_and_the_rest() {
        let g = loc("gcs").server_repository(false).unwrap();
        assert_eq!((g.kind, &g.settings["bucket"]), ("gcs", &json!("snaps")));
        let a = loc("azure").server_repository(false).unwrap();
        assert_eq!(a.settings["container"], json!("snaps"));
        let err = loc("b2").server_repository(false).unwrap_err();
        assert!(
            err.contains("local (the server's fs type), s3, gcs, azure"),
            "{err}"
        );
    }

    #[test]
    fn a_registration_elsewhere_is_told_apart() {
        let ours = ServerRepository {
            kind: "fs",
            settings: json!({"location": "/snapshots/team-a", "readonly": true})
                .as_object()
                .cloned()
                .unwrap(),
        };
        let same = json!({"type": "fs", "settings": {"location": "/snapshots/team-a",
                          "max_restore_bytes_per_sec": "0", "readonly": "false"}});
        assert_eq!(ours.mismatch(&same), None);
        let elsewhere = json!({"type": "fs", "settings": {"location": "/snapshots/team-b"}});
        assert_eq!(
            ours.mismatch(&elsewhere).as_deref(),
            Some(r#"location "/snapshots/team-b" instead of "/snapshots/team-a""#)
        );
        let s3 = json!({"type": "s3", "settings": {"bucket": "b"}});
        let why = ours.mismatch(&s3).unwrap();
        assert!(
            why.starts_with("type s3 instead of fs, location \"(none)\""),
            "{why}"
        );
    }

    #[test]
    fn names_and_ownership() {
        let id = SnapshotIdentity {
            namespace: "team-a".into(),
            configuration: "logs".into(),
            session: "logs-1733400000".into(),
            host: "host-0".into(),
        };
        assert_eq!(id.snapshot_name(), "team-a_logs_logs-1733400000");
        let dotted = |configuration: &str, session: &str| SnapshotIdentity {
            configuration: configuration.into(),
            session: session.into(),
            ..id.clone()
        };
        assert_ne!(
            dotted("a.b", "c").snapshot_name(),
            dotted("a", "b.c").snapshot_name()
        );
        assert!(id.metadata().to_string().len() < 1024);
        assert!(id.owns(&id.metadata()));
        let other = SnapshotIdentity {
            namespace: "team-b".into(),
            ..id.clone()
        };
        assert!(!id.owns(&other.metadata()));
        assert_eq!(server_repository_name("team-a", "es"), "cairn_team-a_es");
        assert!(snapshot_name_problem(&id.snapshot_name()).is_none());
        assert!(snapshot_name_problem("latest").is_none());
        assert!(snapshot_name_problem("Has Space").is_some());
        assert!(snapshot_name_problem("_x").is_some());
    }
}
