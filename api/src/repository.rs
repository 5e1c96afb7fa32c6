//! The Repository kind: where snapshots live (one restic-format repository per object).

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, NFSVolumeSource,
    PersistentVolumeClaimVolumeSource,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A restic-format repository on a storage backend.
// kube-derive takes one `printcolumn(...)` per column, which clippy sees as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.dev",
    version = "v1alpha1",
    kind = "Repository",
    namespaced,
    status = "RepositoryStatus",
    shortname = "repo",
    category = "cairn",
    category = "backup",
    derive = "PartialEq",
    derive = "Default",
    doc = "Repository is where cairn keeps snapshots: one restic-format repository on S3, GCS, Azure, B2, Swift, a REST server or a local volume.",
    printcolumn(
        name = "Integrity",
        type_ = "boolean",
        json_path = ".status.integrity",
        description = "Result of the last repository check"
    ),
    printcolumn(
        name = "Size",
        type_ = "string",
        json_path = ".status.totalSize",
        description = "Size of the repository"
    ),
    printcolumn(
        name = "Snapshots",
        type_ = "integer",
        json_path = ".status.snapshotCount",
        description = "Number of snapshots"
    ),
    printcolumn(
        name = "Last-Backup",
        type_ = "date",
        json_path = ".status.lastBackupTime",
        description = "Time of the last successful backup"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    /// What the repository holds: `Restic` (the default), a restic-format repository the
    /// agent writes; or `Native`, the server's own snapshots (its `_snapshot` API), written by
    /// the database's data nodes with credentials from the cluster's keystore. Native
    /// repositories are used by the `elasticsearch-snapshot` Tasks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<crate::native::StorageDriver>,
    /// The storage backend: exactly one provider block, and the Secret with the repository
    /// password and the provider credentials.
    pub backend: Backend,
    /// Delete the repository's data from the backend when this object is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_out: Option<bool>,
    /// Which namespaces' BackupConfigurations and RestoreSessions may use this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_policy: Option<UsagePolicy>,
    /// Check the repository's integrity on a schedule (cairn's; none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_check: Option<IntegrityCheck>,
}

/// A scheduled integrity check: `cairn-agent check` in a Job of the Repository's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegrityCheck {
    /// When to check, a five-field cron expression in UTC (e.g. `0 3 * * *`).
    pub schedule: String,
    /// Which packs' data each check reads: `all`, `n/m`, or `day/m` (a different m-th each
    /// day, so m days read everything; the default is `day/7`). Empty reads the
    /// structure only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_data_subset: Option<String>,
}

impl IntegrityCheck {
    /// The subset a check reads: `day/7` unless set.
    pub fn read_data_subset(&self) -> &str {
        self.read_data_subset.as_deref().unwrap_or("day/7")
    }
}

/// The storage backend of a repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// Secret in the Repository's namespace with `RESTIC_PASSWORD` and the provider credentials.
    /// Required for `driver: Restic`; unused for `driver: Native`.
    #[serde(default)]
    pub storage_secret_name: String,
    /// A volume mounted into the Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSpec>,
    /// Amazon S3 or an S3-compatible server (MinIO, Ceph RGW, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    /// Google Cloud Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsSpec>,
    /// Azure Blob Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSpec>,
    /// OpenStack Swift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swift: Option<SwiftSpec>,
    /// Backblaze B2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b2: Option<B2Spec>,
    /// A restic REST server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<RestServerSpec>,
}

/// The storage providers, as named in `spec.backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Local,
    S3,
    Gcs,
    Azure,
    Swift,
    B2,
    Rest,
}

impl Provider {
    /// The field name of the provider block, also the value of `REPOSITORY_PROVIDER`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::S3 => "s3",
            Self::Gcs => "gcs",
            Self::Azure => "azure",
            Self::Swift => "swift",
            Self::B2 => "b2",
            Self::Rest => "rest",
        }
    }
}

/// Every provider name, for messages that list what is valid.
pub const PROVIDERS: &str = "local, s3, gcs, azure, swift, b2, rest";

impl Backend {
    /// The providers whose block is set (valid backends have exactly one).
    pub fn providers(&self) -> Vec<Provider> {
        let mut out = Vec::new();
        if self.local.is_some() {
            out.push(Provider::Local);
        }
        if self.s3.is_some() {
            out.push(Provider::S3);
        }
        if self.gcs.is_some() {
            out.push(Provider::Gcs);
        }
        if self.azure.is_some() {
            out.push(Provider::Azure);
        }
        if self.swift.is_some() {
            out.push(Provider::Swift);
        }
        if self.b2.is_some() {
            out.push(Provider::B2);
        }
        if self.rest.is_some() {
            out.push(Provider::Rest);
        }
        out
    }

    /// The one provider, if exactly one block is set.
    pub fn provider(&self) -> Option<Provider> {
        match self.providers().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// The URL the user wrote for an S3 endpoint or a REST server: (field under `backend`, value).
    pub fn endpoint_as_written(&self) -> Option<(&'static str, &str)> {
        match (&self.s3, &self.rest) {
            (Some(s3), _) => s3.endpoint.as_deref().map(|e| ("s3.endpoint", e)),
            (None, Some(rest)) => Some(("rest.url", rest.url.as_str())),
            _ => None,
        }
    }

    /// The endpoint without any `user:password@`: all a Job, a preview or a message may show
    /// (credentials belong in the storage Secret; admission refuses them here, and a Repository
    /// admitted without the webhook must not leak them either).
    pub fn endpoint(&self) -> String {
        self.endpoint_as_written()
            .map(|(_, url)| crate::appbinding::without_userinfo(url))
            .unwrap_or_default()
    }

    /// Bucket or container name of the backend, if it has one.
    pub fn bucket(&self) -> Option<&str> {
        if let Some(s) = &self.s3 {
            return Some(&s.bucket);
        }
        if let Some(g) = &self.gcs {
            return Some(&g.bucket);
        }
        if let Some(a) = &self.azure {
            return Some(&a.container);
        }
        if let Some(s) = &self.swift {
            return Some(&s.container);
        }
        if let Some(b) = &self.b2 {
            return Some(&b.bucket);
        }
        None
    }

    /// Prefix (folder) inside the bucket or container, if any, without leading or trailing `/`
    /// (restic and the object stores disagree on them; the object keeps what the user wrote).
    pub fn prefix(&self) -> Option<&str> {
        let p = if let Some(s) = &self.s3 {
            &s.prefix
        } else if let Some(g) = &self.gcs {
            &g.prefix
        } else if let Some(a) = &self.azure {
            &a.prefix
        } else if let Some(s) = &self.swift {
            &s.prefix
        } else if let Some(b) = &self.b2 {
            &b.prefix
        } else {
            &None
        };
        p.as_deref().map(|p| p.trim_matches('/'))
    }

    /// A local repository's path (`mountPath` joined with `subPath`): inside the Job for
    /// restic, on the cluster's nodes for a native repository; empty for other providers.
    pub fn local_path(&self) -> String {
        let Some(local) = &self.local else {
            return String::new();
        };
        match local.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => format!(
                "{}/{}",
                local.mount_path.trim_end_matches('/'),
                sub.trim_matches('/')
            ),
            None => local.mount_path.clone(),
        }
    }

    /// `maxConnections` of the providers that have it.
    pub fn max_connections(&self) -> Option<i64> {
        if let Some(g) = &self.gcs {
            return g.max_connections;
        }
        if let Some(a) = &self.azure {
            return a.max_connections;
        }
        if let Some(b) = &self.b2 {
            return b.max_connections;
        }
        None
    }
}

/// A repository on a volume mounted into the Job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalSpec {
    /// Where the volume is mounted in the Job; an absolute path other than `/` and `/cairn`.
    pub mount_path: String,
    /// Sub-path inside the volume that holds the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    /// A directory on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolumeSource>,
    /// An NFS export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NFSVolumeSource>,
    /// A PersistentVolumeClaim in the Job's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// A CSI volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi: Option<CSIVolumeSource>,
    /// An emptyDir (for tests and demos: the data goes with the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
}

impl LocalSpec {
    /// Names of the volume sources that are set (valid blocks have exactly one).
    pub fn volume_sources(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.host_path.is_some() {
            out.push("hostPath");
        }
        if self.nfs.is_some() {
            out.push("nfs");
        }
        if self.persistent_volume_claim.is_some() {
            out.push("persistentVolumeClaim");
        }
        if self.csi.is_some() {
            out.push("csi");
        }
        if self.empty_dir.is_some() {
            out.push("emptyDir");
        }
        out
    }

    /// What is wrong with `mountPath`, or `None`: an absolute path, not the root, not in
    /// `/cairn` (the agent's own files) and not over the image's system directories (whose
    /// binaries, libraries and trust store a volume would replace).
    pub fn mount_path_problem(&self) -> Option<String> {
        let mount = &self.mount_path;
        let valid_mount =
            "use an absolute path other than / that is not /cairn or under it, e.g. /repository";
        if mount.is_empty() {
            return Some(format!(
                "is empty: set where the volume is mounted in the Job; {valid_mount}"
            ));
        } else if !mount.starts_with('/') {
            return Some(format!("{mount:?} is not an absolute path; {valid_mount}"));
        } else {
            // Compare by components so `/cairn/`, `//cairn` or `/./cairn` cannot slip past.
            let parts: Vec<&str> = mount
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .collect();
            if parts.contains(&"..") {
                return Some(format!("{mount:?} contains \"..\"; {valid_mount}"));
            } else if parts.is_empty() {
                return Some(format!(
                    "{mount:?} would mount the volume over the container's root; {valid_mount}"
                ));
            } else if parts[0] == "cairn" {
                return Some(format!(
                    "{mount:?} is inside /cairn, where the agent keeps its own files; {valid_mount}"
                ));
            } else if SYSTEM_DIRS.contains(&parts[0]) || parts[..] == ["var", "run"] {
                // Over the image's own files, a volume would replace the agent's binary, its
                // libraries or its trust store with whatever the volume holds.
                return Some(format!(
                    "{mount:?} is inside /{}, part of the image the agent runs from; \
                     {valid_mount}",
                    parts[0]
                ));
            }
        }

        None
    }

    /// The pod volume named `name` that mounts this repository in a Job.
    pub fn volume(&self, name: &str) -> k8s_openapi::api::core::v1::Volume {
        k8s_openapi::api::core::v1::Volume {
            name: name.to_string(),
            host_path: self.host_path.clone(),
            nfs: self.nfs.clone(),
            persistent_volume_claim: self.persistent_volume_claim.clone(),
            csi: self.csi.clone(),
            empty_dir: self.empty_dir.clone(),
            ..Default::default()
        }
    }
}

/// Top-level directories of the image a local repository may not be mounted over or under.
const SYSTEM_DIRS: &[&str] = &[
    "bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "proc", "run", "sbin", "sys", "usr",
];

/// Every local volume source, for messages that list what is valid.
pub const LOCAL_VOLUME_SOURCES: &str = "hostPath, nfs, persistentVolumeClaim, csi, emptyDir";

/// Amazon S3 or an S3-compatible server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// URL of the S3 server, e.g. `https://s3.amazonaws.com` or `http://minio.storage:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Name of the bucket.
    pub bucket: String,
    /// Folder inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Region of the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Do not verify the server's TLS certificate. Prefer `CA_CERT_DATA` in the storage Secret.
    #[serde(
        default,
        rename = "insecureTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub insecure_tls: Option<bool>,
}

/// Google Cloud Storage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsSpec {
    /// Name of the bucket.
    pub bucket: String,
    /// Folder inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Largest number of concurrent connections to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
}

/// Azure Blob Storage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureSpec {
    /// Name of the blob container.
    pub container: String,
    /// Folder inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Largest number of concurrent connections to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
}

/// OpenStack Swift.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwiftSpec {
    /// Name of the Swift container.
    pub container: String,
    /// Folder inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Backblaze B2.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct B2Spec {
    /// Name of the bucket.
    pub bucket: String,
    /// Folder inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Largest number of concurrent connections to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i64>,
}

/// A restic REST server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestServerSpec {
    /// URL of the REST server, e.g. `https://rest.example.com:8000/repo`.
    pub url: String,
}

/// Which namespaces may use a repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsagePolicy {
    /// The namespaces allowed to use this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
}

/// The namespaces allowed to use a repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// `Same` (the repository's own namespace, the default), `All`, or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<FromNamespaces>,
    /// Labels of the allowed namespaces; required when `from` is `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Where allowed namespaces come from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FromNamespaces {
    /// Only the repository's own namespace.
    #[default]
    Same,
    /// Every namespace.
    All,
    /// Namespaces whose labels match `selector`.
    Selector,
}

/// What cairn last observed of a repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Observations of the repository's state.
    /// A map list keyed by `type`, so each condition can have its own field manager.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Time of the first successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_backup_time: Option<Time>,
    /// Time of the last successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<Time>,
    /// Result of the last check of the repository's integrity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<bool>,
    /// Size of the repository, human readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    /// Size of the repository in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size_bytes: Option<i64>,
    /// Number of snapshots in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_count: Option<i64>,
    /// Snapshots removed by the retention policy after the last backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots_removed_on_last_cleanup: Option<i64>,
    /// The configurations and sessions that use this repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<TypedObjectReference>,
    /// The last scheduled integrity check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<CheckStatus>,
    /// The last inventory of its snapshots taken by a Job (at creation, and for each new value
    /// of the annotation `cairn.dev/inventory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<RepositoryInventory>,
    /// The last removal of locks whose holders are gone (for each new value of the annotation
    /// `cairn.dev/unlock`; `kubectl cairn unlock` sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock: Option<RepositoryUnlock>,
}

/// One scheduled integrity check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// The schedule slot it ran for.
    pub slot: Time,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Which packs' data it read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_data_subset: Option<String>,
    /// The snapshots it found damaged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged_snapshots: Option<i64>,
    /// Why it could not tell (the Job failed without a check result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Annotation on a Repository: set a new value (e.g. the time) to have its snapshots listed
/// again into Snapshot objects.
pub const INVENTORY_ANNOTATION: &str = "cairn.dev/inventory";

/// One inventory of a repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryInventory {
    /// The annotation's value it was taken for (empty: the one at creation).
    pub request: String,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// The snapshots it listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<i64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Annotation on a Repository: set a new value (e.g. the time) to have the locks whose
/// holders are gone removed from it (`cairn-agent unlock`); live locks are never removed.
pub const UNLOCK_ANNOTATION: &str = "cairn.dev/unlock";

/// One removal of stale locks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryUnlock {
    /// The annotation's value it ran for.
    pub request: String,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Locks removed: their holders were gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<i64>,
    /// Live locks, kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<i64>,
    /// Who holds the live locks (`a lock of <host> pid <pid> since <time>`), the first few.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RepositorySpec {
    /// What the repository holds (`Restic` unless set).
    pub fn driver(&self) -> crate::native::StorageDriver {
        self.driver.unwrap_or_default()
    }
}

impl Repository {
    /// The backend when the agent itself reads and writes it (driver Restic): the one whose
    /// storage Secret and local volume go into Jobs. `None` for a native repository, which
    /// the server reaches on its own.
    pub fn restic_backend(&self) -> Option<&Backend> {
        (self.spec.driver() == crate::native::StorageDriver::Restic).then_some(&self.spec.backend)
    }

    /// The inventory request now: the annotation's value, empty without one.
    pub fn inventory_request(&self) -> String {
        self.annotation(INVENTORY_ANNOTATION)
    }

    /// The unlock request now: the annotation's value, empty without one.
    pub fn unlock_request(&self) -> String {
        self.annotation(UNLOCK_ANNOTATION)
    }

    fn annotation(&self, key: &str) -> String {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
            .unwrap_or_default()
    }

    /// Whether an unlock was asked for (a value no unlock ran for yet); restic repositories
    /// only (a native one's locks are the server's).
    pub fn needs_unlock(&self) -> bool {
        let request = self.unlock_request();
        !request.is_empty()
            && self.restic_backend().is_some()
            && self
                .status
                .as_ref()
                .and_then(|s| s.unlock.as_ref())
                .is_none_or(|u| u.request != request)
    }

    /// Whether an inventory for the current request is still to be taken (restic
    /// repositories only: a native one's snapshots are the server's to list).
    pub fn needs_inventory(&self) -> bool {
        if self.restic_backend().is_none() {
            return false;
        }
        let request = self.inventory_request();
        self.status
            .as_ref()
            .and_then(|s| s.inventory.as_ref())
            .is_none_or(|i| i.request != request)
    }
}

/// A reference to an object of any kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypedObjectReference {
    /// API group of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// Namespace of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
