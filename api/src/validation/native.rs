//! Admission rules that hang on a Repository's `driver` (`README.md`, "Native snapshots"):
//! what a `Native` Repository may and may not say, the prefix restic repositories leave to
//! native ones, and the pairing of a Task with a Repository of the same driver.

use super::Verdict;
use crate::Repository;
use crate::native::{NATIVE_PREFIX, StorageDriver};
use crate::repository::Backend;
use crate::task::Task;

const BACKEND: &str = "spec.backend";

/// The driver-dependent rules of a Repository. A `Native` one names the server's location:
/// no storage Secret (credentials stay in the cluster's keystore), no volume for the Job, a
/// provider the server has a repository type for, no restic-only feature. A `Restic` one may
/// not use the prefix native repositories own.
pub(super) fn check_repository_driver(repo: &Repository, v: &mut Verdict) {
    let backend = &repo.spec.backend;
    match repo.spec.driver() {
        StorageDriver::Restic => check_restic_prefix(backend, v),
        StorageDriver::Native => check_native(repo, v),
    }
}

fn check_restic_prefix(backend: &Backend, v: &mut Verdict) {
    let Some(prefix) = backend.prefix() else {
        return;
    };
    if prefix.split('/').next() == Some(NATIVE_PREFIX) {
        let provider = backend.provider().map(|p| p.as_str()).unwrap_or("s3");
        v.error(
            format!("{BACKEND}.{provider}.prefix"),
            format!(
                "{prefix:?} starts with {NATIVE_PREFIX:?}, where native Repositories keep the \
                 server's snapshot files; restic and snapshot files never share a prefix: \
                 choose another prefix"
            ),
        );
    }
}

fn check_native(repo: &Repository, v: &mut Verdict) {
    let backend = &repo.spec.backend;
    if let Some((field, why)) = backend.native_problem() {
        v.error(format!("{BACKEND}.{field}"), why);
    }
    if !backend.storage_secret_name.is_empty() {
        v.warn(
            format!("{BACKEND}.storageSecretName"),
            "is unused with driver: Native: the server reads its repository credentials from \
             its own keystore (e.g. s3.client.default.access_key), and there is no restic \
             password; remove it",
        );
    }
    if let Some(local) = &backend.local {
        for source in local.volume_sources() {
            v.error(
                format!("{BACKEND}.local.{source}"),
                "must not be set with driver: Native: the cluster's data nodes write the \
                 snapshot files to local.mountPath on their own filesystem (a directory under \
                 their path.repo), and cairn's Job mounts nothing; remove the volume source",
            );
        }
    }
    if backend.s3.as_ref().and_then(|s| s.insecure_tls) == Some(true) {
        v.error(
            format!("{BACKEND}.s3.insecureTLS"),
            "cannot apply with driver: Native: the server's S3 client settings \
             (elasticsearch.yml, its keystore) decide TLS; remove it",
        );
    }
    if repo.spec.integrity_check.is_some() {
        v.error(
            "spec.integrityCheck",
            "runs restic's check and cannot read a native repository; remove it (every native \
             backup verifies the repository with the server's _verify)",
        );
    }
    if repo.spec.wipe_out == Some(true) {
        v.error(
            "spec.wipeOut",
            "cairn does not delete a native repository's files: the server owns them; set \
             wipeOut: false and delete snapshots with DELETE _snapshot/<repository>/<snapshot>",
        );
    }
}

/// A Task and a Repository of different drivers never work together: the error is at the
/// Task's name (`path`, e.g. `spec.task.name`).
pub(crate) fn check_task_driver(
    v: &mut Verdict,
    path: &str,
    task: Option<&Task>,
    repo: Option<&Repository>,
) {
    if let (Some(task), Some(repo)) = (task, repo)
        && let Some(why) = crate::native::driver_mismatch(task, repo)
    {
        v.error(path, why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::StorageDriver::Native;
    use crate::repository::{LocalSpec, S3Spec};
    use k8s_openapi::api::core::v1::EmptyDirVolumeSource;

    fn native(backend: Backend) -> Repository {
        let mut r = Repository::new("es", Default::default());
        r.spec.driver = Some(Native);
        r.spec.backend = backend;
        r
    }

    fn errors(r: &Repository) -> Vec<String> {
        let mut v = Verdict::default();
        check_repository_driver(r, &mut v);
        v.errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn native_local_needs_no_secret_and_no_volume() {
        let local = |empty_dir| Backend {
            local: Some(LocalSpec {
                mount_path: "/var/backups/es".into(),
                empty_dir,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(errors(&native(local(None))).is_empty());
        let errs = errors(&native(local(Some(EmptyDirVolumeSource::default()))));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.backend.local.emptyDir:"),
            "{errs:?}"
        );
    }

    #[test]
    fn native_refuses_providers_and_restic_features_all_at_once() {
        let mut r = native(Backend {
            b2: Some(Default::default()),
            ..Default::default()
        });
        r.spec.wipe_out = Some(true);
        let errs = errors(&r);
        assert!(errs[0].starts_with("spec.backend.b2:"), "{errs:?}");
        assert!(errs[0].contains("s3, gcs, azure"), "{errs:?}");
        assert!(errs[1].starts_with("spec.wipeOut:"), "{errs:?}");
    }

    #[test]
    fn restic_may_not_use_the_native_prefix() {
        let mut r = native(Backend {
            s3: Some(S3Spec {
                bucket: "b".into(),
                prefix: Some("/cairn-native/x".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(errors(&r).is_empty());
        r.spec.driver = None;
        let errs = errors(&r);
        assert!(errs[0].starts_with("spec.backend.s3.prefix:"), "{errs:?}");
    }

    #[test]
    fn mixing_drivers_names_the_valid_tasks() {
        let repo = native(Backend::default());
        let task = Task::new("elasticsearch-backup", Default::default());
        let mut v = Verdict::default();
        check_task_driver(&mut v, "spec.task.name", Some(&task), Some(&repo));
        let errs: Vec<String> = v.errors.iter().map(|e| e.to_string()).collect();
        assert!(errs[0].starts_with("spec.task.name:"), "{errs:?}");
        assert!(errs[0].contains("elasticsearch-snapshot / elasticsearch-snapshot-restore"));
    }
}
