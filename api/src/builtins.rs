//! What cairn sets for every Job and nobody may shadow: the built-in variables of Task and
//! Function strings (`runtime.md`, "The Job"), the environment variables and labels the Job
//! carries. One table each; the resolver sets exactly these, admission denies a param, an env
//! entry or a pod label that names one, and the README lists them from here.

/// A variable the resolver sets for every Job, with what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltIn {
    pub name: &'static str,
    pub meaning: &'static str,
}

const fn var(name: &'static str, meaning: &'static str) -> BuiltIn {
    BuiltIn { name, meaning }
}

/// Every built-in variable, in the order the README lists them. A test checks that the
/// resolver sets exactly these.
pub const BUILT_IN_VARIABLES: &[BuiltIn] = &[
    var("NAMESPACE", "the session's namespace"),
    var(
        "BACKUP_SESSION",
        "the BackupSession's name (empty for a restore)",
    ),
    var(
        "RESTORE_SESSION",
        "the RestoreSession's name (empty for a backup)",
    ),
    var("INVOKER_KIND", "BackupConfiguration or RestoreSession"),
    var("INVOKER_NAME", "the invoker's name"),
    var("AGENT_IMAGE", "the install's cairn-agent image"),
    var("REPOSITORY_NAME", "the Repository's name"),
    var("REPOSITORY_NAMESPACE", "the Repository's namespace"),
    var(
        "REPOSITORY_PROVIDER",
        "local, s3, gcs, azure, swift, b2 or rest",
    ),
    var("REPOSITORY_BUCKET", "the bucket or container"),
    var("REPOSITORY_PREFIX", "the prefix inside the bucket"),
    var("REPOSITORY_ENDPOINT", "the S3 endpoint or REST server URL"),
    var("REPOSITORY_REGION", "the S3 region"),
    var("REPOSITORY_INSECURE_TLS", "s3.insecureTLS, true or false"),
    var("REPOSITORY_SECRET_NAME", "the storage Secret's name"),
    var("REPOSITORY_URL", "the repository in restic's notation"),
    var(
        "REPOSITORY_PATH",
        "a local repository's path inside the Job",
    ),
    var(
        "REPOSITORY_SECRET_DIR",
        "where the storage Secret is mounted",
    ),
    var("MAX_CONNECTIONS", "the backend's connection limit"),
    var("TARGET_KIND", "the target's kind (AppBinding)"),
    var("TARGET_NAME", "the AppBinding's name"),
    var("TARGET_NAMESPACE", "the AppBinding's namespace"),
    var("TARGET_APP_VERSION", "the AppBinding's spec.version"),
    var("TARGET_APP_TYPE", "the AppBinding's spec.type"),
    var(
        "TARGET_URL",
        "the database's URL, without any credentials written into it",
    ),
    var(
        "TARGET_INSECURE_SKIP_TLS_VERIFY",
        "the AppBinding's clientConfig.insecureSkipTLSVerify",
    ),
    var(
        "TARGET_SERVER_NAME",
        "the AppBinding's clientConfig.serverName",
    ),
    var(
        "TARGET_SECRET_DIR",
        "where the AppBinding's Secret is mounted",
    ),
    var("TARGET_ARGS", "target.args joined with spaces"),
    var(
        "ARGS_MATCH",
        "the --match of Stash's Task param args: a regular expression on index names",
    ),
    var(
        "ARGS_SKIP",
        "backup only: the types --ignoreType or --includeType of Stash's Task param args leave out",
    ),
    var("HOSTNAME", "the target alias: the snapshots' host"),
    var("SOURCE_HOSTNAME", "whose snapshots a restore reads"),
    var(
        "SOURCE_CONFIGURATION",
        "the configuration whose snapshots a restore reads (empty: any of the namespace's)",
    ),
    var("RESTORE_SNAPSHOTS", "the snapshots a restore rule names"),
    var("INTERIM_DATA_DIR", "the interim volume's data directory"),
    var("ENABLE_CACHE", "false when tempDir.disableCaching"),
    var("RETENTION_KEEP_LAST", "retentionPolicy.keepLast"),
    var("RETENTION_KEEP_HOURLY", "retentionPolicy.keepHourly"),
    var("RETENTION_KEEP_DAILY", "retentionPolicy.keepDaily"),
    var("RETENTION_KEEP_WEEKLY", "retentionPolicy.keepWeekly"),
    var("RETENTION_KEEP_MONTHLY", "retentionPolicy.keepMonthly"),
    var("RETENTION_KEEP_YEARLY", "retentionPolicy.keepYearly"),
    var(
        "RETENTION_KEEP_TAGS",
        "retentionPolicy.keepTags, comma-separated",
    ),
    var("RETENTION_PRUNE", "retentionPolicy.prune"),
    var("RETENTION_DRY_RUN", "retentionPolicy.dryRun"),
];

/// Whether `name` is a built-in variable (exact name: variables are case-sensitive).
pub fn is_built_in_variable(name: &str) -> bool {
    BUILT_IN_VARIABLES.iter().any(|b| b.name == name)
}

/// Environment variables cairn sets in every Job container (they steer the agent).
pub const RESERVED_ENV: &[&str] = &[
    "HOME",
    "CAIRN_TMP_DIR",
    "CAIRN_TARGET_CA_CERT",
    "CAIRN_NICE",
    "CAIRN_IONICE_CLASS",
    "CAIRN_IONICE_CLASS_DATA",
    "CAIRN_TERMINATION_LOG",
    "CAIRN_LIVE_PODS",
    "CAIRN_LAUNCHED_AT",
    "CAIRN_CLUSTER_ID",
];
/// Prefixes of environment variables that carry the repository's credentials, password and
/// CA, which come only from the storage Secret (restic's and its backends' names).
pub const RESERVED_ENV_PREFIXES: &[&str] = &[
    "CAIRN_",
    "RESTIC_",
    "AWS_",
    "GOOGLE_",
    "AZURE_",
    "B2_",
    "OS_",
    "ST_",
    "REST_SERVER_",
    "CA_CERT_",
    "SSL_CERT_",
];
/// Variables that send the agent's traffic (with the database's and the repository's
/// credentials) elsewhere, in any case.
pub const TRAFFIC_ENV: &[&str] = &["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"];

/// Why an environment variable name is cairn's, or `None` when a user may set it.
pub fn reserved_env(name: &str) -> Option<&'static str> {
    if RESERVED_ENV.contains(&name) {
        return Some("cairn sets it for the agent");
    }
    if TRAFFIC_ENV.iter().any(|t| t.eq_ignore_ascii_case(name)) {
        return Some("it would route the agent's traffic, with the credentials it carries");
    }
    RESERVED_ENV_PREFIXES
        .iter()
        .any(|p| name.starts_with(p))
        .then_some(
            "the repository's password, credentials and CA come only from the Repository's \
             storage Secret",
        )
}

/// Prefixes of pod annotation and label keys that make other admission webhooks add
/// containers of the writer's choosing (service meshes, secret injectors) to cairn's pod.
pub const INJECTOR_KEY_PREFIXES: &[&str] = &[
    "sidecar.istio.io/",
    "proxy.istio.io/",
    "traffic.sidecar.istio.io/",
    "istio.io/",
    "linkerd.io/",
    "config.linkerd.io/",
    "config.alpha.linkerd.io/",
    "vault.hashicorp.com/",
    "dapr.io/",
    "consul.hashicorp.com/",
];

/// Whether a pod annotation or label key steers a sidecar injector.
pub fn is_injector_key(key: &str) -> bool {
    INJECTOR_KEY_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Label prefixes on a Job's pod that only cairn and the Job controller write: they route the
/// pod to its session and its Job.
pub const RESERVED_LABEL_PREFIXES: &[&str] = &[
    "cairn.dev/",
    "app.kubernetes.io/managed-by",
    "batch.kubernetes.io/",
    "job-name",
    "controller-uid",
];

/// Whether a pod label key is cairn's or the Job controller's.
pub fn is_reserved_label(key: &str) -> bool {
    RESERVED_LABEL_PREFIXES.iter().any(|p| key.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_variable_names() {
        let mut names: Vec<&str> = BUILT_IN_VARIABLES.iter().map(|b| b.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BUILT_IN_VARIABLES.len());
        assert!(names.iter().all(|n| crate::vars::is_valid_name(n)));
    }

    #[test]
    fn reserved_env_names() {
        assert!(reserved_env("RESTIC_PASSWORD").is_some());
        assert!(reserved_env("CAIRN_TARGET_CA_CERT").is_some());
        assert!(reserved_env("HOME").is_some());
        assert!(reserved_env("GOMAXPROCS").is_none());
        assert!(reserved_env("https_proxy").is_some());
        assert!(reserved_env("CA_CERT_DATA").is_some());
        assert!(is_injector_key("sidecar.istio.io/proxyImage"));
        assert!(is_reserved_label("cairn.dev/session"));
        assert!(!is_reserved_label("team"));
    }
}
