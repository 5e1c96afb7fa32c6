//! Admission rules for Repository: each rule with objects it admits and objects it refuses,
//! asserting the exact field path and that the message says what would be valid.

use cairn_api::Repository;
use cairn_api::validation::{LookupTable, Policy, Verdict, validate_repository};
use proptest::prelude::*;
use serde_json::{Value, json};

fn repo(spec: Value) -> Repository {
    serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "Repository",
        "metadata": {"name": "repo", "namespace": "demo"},
        "spec": spec,
    }))
    .expect("test object deserializes")
}

fn with_status(mut r: Repository, snapshots: i64) -> Repository {
    r.status = Some(
        serde_json::from_value(json!({"snapshotCount": snapshots})).expect("status deserializes"),
    );
    r
}

fn s3_spec(s3: Value) -> Value {
    json!({"backend": {"storageSecretName": "repo-secret", "s3": s3}})
}

fn s3_bucket(bucket: &str) -> Value {
    s3_spec(json!({"endpoint": "https://s3.amazonaws.com", "bucket": bucket}))
}

fn s3_endpoint(endpoint: &str) -> Value {
    s3_spec(json!({"endpoint": endpoint, "bucket": "backups"}))
}

fn rest_url(url: &str) -> Value {
    json!({"backend": {"storageSecretName": "repo-secret", "rest": {"url": url}}})
}

fn local(mount_path: &str) -> Value {
    json!({"backend": {"storageSecretName": "repo-secret", "local": {
        "mountPath": mount_path,
        "persistentVolumeClaim": {"claimName": "backups"},
    }}})
}

fn selector(selector: Value) -> Value {
    json!({
        "backend": {"storageSecretName": "repo-secret", "gcs": {"bucket": "b"}},
        "usagePolicy": {"allowedNamespaces": {"from": "Selector", "selector": selector}},
    })
}

/// What a case expects: admitted with no errors, or an error at exactly `path` whose message
/// contains every one of the fragments.
enum Expect {
    Ok,
    Err(&'static str, &'static [&'static str]),
}

fn assert_verdict(name: &str, v: &Verdict, expect: &Expect) {
    match expect {
        Expect::Ok => assert!(v.errors.is_empty(), "{name}: unexpected {:?}", v.errors),
        Expect::Err(path, fragments) => {
            let found = v
                .errors
                .iter()
                .any(|e| e.path == *path && fragments.iter().all(|f| e.message.contains(f)));
            assert!(
                found,
                "{name}: expected an error at {path} containing {fragments:?}, got {:?}",
                v.errors
            );
        }
    }
}

fn run(cases: &[(&str, Value, Expect)]) {
    let lookups = LookupTable::default();
    for (name, spec, expect) in cases {
        let v = validate_repository(&repo(spec.clone()), None, &lookups, &Policy::default());
        assert_verdict(name, &v, expect);
    }
}

const ONE_OF_PROVIDERS: &str = "set exactly one of local, s3, gcs, azure, swift, b2, rest";
const BUCKET_RULE: &str = "3 to 63 characters of lowercase letters, digits, dots and hyphens";
const KEY_RULE: &str = "a label key is an optional DNS subdomain prefix";
const VALUE_RULE: &str = "a label value is empty or at most 63 letters";
const OPS: &str = "use one of In, NotIn, Exists, DoesNotExist";
const ALL_SOURCES: &str = "set exactly one of hostPath, nfs, persistentVolumeClaim, csi, emptyDir";
const MOUNT_RULE: &str = "use an absolute path other than / that is not /cairn or under it";

#[test]
fn full_valid_repositories_have_no_errors_or_warnings() {
    let s3 = json!({
        "backend": {
            "storageSecretName": "repo-secret",
            "s3": {
                "endpoint": "https://s3.eu-west-1.amazonaws.com",
                "bucket": "es-backups.prod-1",
                "prefix": "demo/es",
                "region": "eu-west-1",
                "insecureTLS": false,
            },
        },
        "wipeOut": false,
        "usagePolicy": {"allowedNamespaces": {"from": "Same"}},
    });
    let local = json!({
        "backend": {
            "storageSecretName": "repo-secret",
            "local": {
                "mountPath": "/repository",
                "subPath": "demo",
                "nfs": {"server": "nfs.storage", "path": "/exports/backups"},
            },
        },
    });
    let lookups = LookupTable::default();
    // An nfs volume needs an install that allows the baseline Pod Security Standard.
    let baseline = Policy {
        job_pod_security: cairn_api::pod_security::PodSecurityLevel::Baseline,
    };
    for spec in [s3, local] {
        let v = validate_repository(&repo(spec.clone()), None, &lookups, &baseline);
        assert_eq!(v, Verdict::default(), "{spec}");
    }
}

#[test]
fn exactly_one_provider() {
    run(&[
        ("one", s3_bucket("backups"), Expect::Ok),
        (
            "none",
            json!({"backend": {"storageSecretName": "s"}}),
            Expect::Err(
                "spec.backend",
                &["no provider block is set", ONE_OF_PROVIDERS],
            ),
        ),
        (
            "two",
            json!({"backend": {"storageSecretName": "s", "s3": {"bucket": "a-b"}, "gcs": {"bucket": "b"}}}),
            Expect::Err(
                "spec.backend",
                &["2 provider blocks are set (s3, gcs)", ONE_OF_PROVIDERS],
            ),
        ),
        (
            "three",
            json!({"backend": {"storageSecretName": "s", "rest": {"url": "http://r"},
                "b2": {"bucket": "b"}, "swift": {"container": "c"}}}),
            Expect::Err(
                "spec.backend",
                &[
                    "3 provider blocks are set (swift, b2, rest)",
                    ONE_OF_PROVIDERS,
                ],
            ),
        ),
    ]);
}

#[test]
fn required_provider_fields() {
    let with = |provider: &str, block: Value| {
        let mut backend = json!({"storageSecretName": "s"});
        backend[provider] = block;
        json!({"backend": backend})
    };
    run(&[
        ("s3 ok", with("s3", json!({"bucket": "abc"})), Expect::Ok),
        (
            "s3 empty",
            with("s3", json!({"bucket": ""})),
            Expect::Err(
                "spec.backend.s3.bucket",
                &["is empty", "set the name of the S3 bucket"],
            ),
        ),
        ("gcs ok", with("gcs", json!({"bucket": "b"})), Expect::Ok),
        (
            "gcs empty",
            with("gcs", json!({"bucket": ""})),
            Expect::Err(
                "spec.backend.gcs.bucket",
                &["is empty", "set the name of the GCS bucket"],
            ),
        ),
        ("b2 ok", with("b2", json!({"bucket": "b"})), Expect::Ok),
        (
            "b2 empty",
            with("b2", json!({"bucket": ""})),
            Expect::Err(
                "spec.backend.b2.bucket",
                &["is empty", "set the name of the B2 bucket"],
            ),
        ),
        (
            "azure ok",
            with("azure", json!({"container": "c"})),
            Expect::Ok,
        ),
        (
            "azure empty",
            with("azure", json!({"container": ""})),
            Expect::Err(
                "spec.backend.azure.container",
                &["is empty", "set the name of the Azure blob container"],
            ),
        ),
        (
            "swift ok",
            with("swift", json!({"container": "c"})),
            Expect::Ok,
        ),
        (
            "swift empty",
            with("swift", json!({"container": ""})),
            Expect::Err(
                "spec.backend.swift.container",
                &["is empty", "set the name of the Swift container"],
            ),
        ),
        (
            "rest ok",
            rest_url("https://rest.example.com:8000/repo"),
            Expect::Ok,
        ),
        (
            "rest empty",
            rest_url(""),
            Expect::Err(
                "spec.backend.rest.url",
                &["is empty", "https://rest.example.com:8000/repo"],
            ),
        ),
        ("local ok", local("/repository"), Expect::Ok),
        (
            "local empty",
            local(""),
            Expect::Err("spec.backend.local.mountPath", &["is empty", MOUNT_RULE]),
        ),
    ]);
}

#[test]
fn s3_bucket_names() {
    let long_ok = "a".repeat(63);
    let too_long = "a".repeat(64);
    let bucket = "spec.backend.s3.bucket";
    run(&[
        ("plain", s3_bucket("backups"), Expect::Ok),
        ("dots and hyphens", s3_bucket("es-backups.v2"), Expect::Ok),
        ("shortest", s3_bucket("a1b"), Expect::Ok),
        ("longest", s3_bucket(&long_ok), Expect::Ok),
        ("three numbers is not an IP", s3_bucket("1.2.3"), Expect::Ok),
        ("xn-- inside", s3_bucket("abc-xn--d"), Expect::Ok),
        (
            "too short",
            s3_bucket("ab"),
            Expect::Err(
                bucket,
                &[
                    "\"ab\" is not a valid S3 bucket name",
                    "2 characters long",
                    BUCKET_RULE,
                ],
            ),
        ),
        (
            "too long",
            s3_bucket(&too_long),
            Expect::Err(bucket, &["64 characters long", BUCKET_RULE]),
        ),
        (
            "uppercase and underscore",
            s3_bucket("My_Bucket"),
            Expect::Err(bucket, &["it contains 'M', '_', 'B'", BUCKET_RULE]),
        ),
        (
            "starts with hyphen",
            s3_bucket("-abc"),
            Expect::Err(
                bucket,
                &[
                    "does not start with a lowercase letter or digit",
                    BUCKET_RULE,
                ],
            ),
        ),
        (
            "ends with dot",
            s3_bucket("abc."),
            Expect::Err(
                bucket,
                &["does not end with a lowercase letter or digit", BUCKET_RULE],
            ),
        ),
        (
            "adjacent dots",
            s3_bucket("a..b"),
            Expect::Err(bucket, &["two adjacent dots", BUCKET_RULE]),
        ),
        (
            "IP address",
            s3_bucket("192.168.5.4"),
            Expect::Err(bucket, &["formatted as an IP address", BUCKET_RULE]),
        ),
        (
            "xn-- prefix",
            s3_bucket("xn--abc"),
            Expect::Err(bucket, &["reserved prefix \"xn--\"", BUCKET_RULE]),
        ),
        (
            "-s3alias suffix",
            s3_bucket("abc-s3alias"),
            Expect::Err(bucket, &["reserved suffix \"-s3alias\"", BUCKET_RULE]),
        ),
        (
            "non-ascii",
            s3_bucket("bäckups"),
            Expect::Err(bucket, &["it contains 'ä'", BUCKET_RULE]),
        ),
    ]);
}

#[test]
fn http_urls() {
    let endpoint = "spec.backend.s3.endpoint";
    let url = "spec.backend.rest.url";
    run(&[
        ("https", s3_endpoint("https://s3.amazonaws.com"), Expect::Ok),
        (
            "http with port",
            s3_endpoint("http://minio.storage:9000"),
            Expect::Ok,
        ),
        ("ipv6", s3_endpoint("http://[::1]:9000"), Expect::Ok),
        (
            "upper-case scheme",
            s3_endpoint("HTTPS://S3.example.com/"),
            Expect::Ok,
        ),
        ("empty endpoint means unset", s3_endpoint(""), Expect::Ok),
        (
            "no endpoint",
            s3_spec(json!({"bucket": "backups"})),
            Expect::Ok,
        ),
        (
            "no scheme",
            s3_endpoint("minio.storage:9000"),
            Expect::Err(
                endpoint,
                &[
                    "is not an http(s) URL",
                    "no scheme",
                    "http://minio.storage:9000",
                ],
            ),
        ),
        (
            "other scheme",
            s3_endpoint("s3://bucket"),
            Expect::Err(
                endpoint,
                &["the scheme is \"s3\"", "https://s3.amazonaws.com"],
            ),
        ),
        (
            "no host",
            s3_endpoint("https://:9000"),
            Expect::Err(endpoint, &["no host", "https://s3.amazonaws.com"]),
        ),
        (
            "bad port",
            s3_endpoint("http://minio:port"),
            Expect::Err(endpoint, &["port \"port\"", "https://s3.amazonaws.com"]),
        ),
        (
            "whitespace",
            s3_endpoint("http://minio storage"),
            Expect::Err(endpoint, &["contains ' '", "https://s3.amazonaws.com"]),
        ),
        (
            "s3 with user",
            s3_endpoint("https://key:secret@minio.example.com:9000"),
            Expect::Err(endpoint, &["AWS_SECRET_ACCESS_KEY"]),
        ),
        (
            "rest with user",
            rest_url("https://user:pw@rest.example.com/repo"),
            Expect::Err("spec.backend.rest.url", &["REST_SERVER_USERNAME"]),
        ),
        (
            "rest bare host",
            rest_url("rest.example.com"),
            Expect::Err(
                url,
                &[
                    "is not an http(s) URL",
                    "https://rest.example.com:8000/repo",
                ],
            ),
        ),
        (
            "rest only scheme",
            rest_url("http://"),
            Expect::Err(url, &["no host", "https://rest.example.com:8000/repo"]),
        ),
        (
            "rest port out of range",
            rest_url("http://rest:70000/"),
            Expect::Err(
                url,
                &[
                    "not a number from 1 to 65535",
                    "https://rest.example.com:8000/repo",
                ],
            ),
        ),
    ]);
}

#[test]
fn local_mount_paths() {
    let mount = "spec.backend.local.mountPath";
    run(&[
        ("absolute", local("/repository"), Expect::Ok),
        ("nested", local("/mnt/backups/"), Expect::Ok),
        ("looks like cairn", local("/cairnish"), Expect::Ok),
        ("cairn deeper", local("/data/cairn"), Expect::Ok),
        (
            "relative",
            local("repository"),
            Expect::Err(mount, &["is not an absolute path", MOUNT_RULE]),
        ),
        (
            "root",
            local("/"),
            Expect::Err(mount, &["root", MOUNT_RULE]),
        ),
        (
            "root twice",
            local("//"),
            Expect::Err(mount, &["root", MOUNT_RULE]),
        ),
        (
            "cairn",
            local("/cairn"),
            Expect::Err(mount, &["inside /cairn", MOUNT_RULE]),
        ),
        (
            "cairn slash",
            local("/cairn/"),
            Expect::Err(mount, &["inside /cairn", MOUNT_RULE]),
        ),
        (
            "under cairn",
            local("/cairn/tmp"),
            Expect::Err(mount, &["inside /cairn", MOUNT_RULE]),
        ),
        (
            "dot under cairn",
            local("/./cairn/x"),
            Expect::Err(mount, &["inside /cairn", MOUNT_RULE]),
        ),
        (
            "dot dot",
            local("/a/../cairn"),
            Expect::Err(mount, &["contains \"..\"", MOUNT_RULE]),
        ),
    ]);
}

#[test]
fn local_volume_sources() {
    let local_block = |block: Value| json!({"backend": {"storageSecretName": "s", "local": block}});
    run(&[
        (
            "emptyDir",
            local_block(json!({"mountPath": "/r", "emptyDir": {}})),
            Expect::Ok,
        ),
        (
            "hostPath",
            local_block(json!({"mountPath": "/r", "hostPath": {"path": "/data"}})),
            Expect::Err(
                "spec.backend.local.hostPath",
                &[
                    "baseline Pod Security Standard forbids",
                    "jobPodSecurity: privileged",
                ],
            ),
        ),
        (
            "nfs",
            local_block(json!({"mountPath": "/r", "nfs": {"server": "s", "path": "/e"}})),
            Expect::Err(
                "spec.backend.local.nfs",
                &[
                    "restricted Pod Security Standard forbids",
                    "jobPodSecurity: baseline",
                ],
            ),
        ),
        (
            "none",
            local_block(json!({"mountPath": "/r"})),
            Expect::Err(
                "spec.backend.local",
                &["no volume source is set", ALL_SOURCES],
            ),
        ),
        (
            "two",
            local_block(json!({"mountPath": "/r", "hostPath": {"path": "/data"}, "emptyDir": {}})),
            Expect::Err(
                "spec.backend.local",
                &["2 volume sources are set (hostPath, emptyDir)", ALL_SOURCES],
            ),
        ),
    ]);
}

#[test]
fn storage_secret_name() {
    let secret =
        |name: &str| json!({"backend": {"storageSecretName": name, "gcs": {"bucket": "b"}}});
    let path = "spec.backend.storageSecretName";
    run(&[
        ("set", secret("repo-secret"), Expect::Ok),
        ("dotted", secret("repo.secret"), Expect::Ok),
        (
            "empty",
            secret(""),
            Expect::Err(path, &["is empty", "holds RESTIC_PASSWORD"]),
        ),
        (
            "not a name",
            secret("Repo_Secret"),
            Expect::Err(
                path,
                &["is not a valid Secret name", "lowercase letters, digits"],
            ),
        ),
    ]);
}

#[test]
fn usage_policy_selectors() {
    let sel = "spec.usagePolicy.allowedNamespaces.selector";
    run(&[
        (
            "matchLabels",
            selector(json!({"matchLabels": {"team": "search"}})),
            Expect::Ok,
        ),
        (
            "prefixed key, empty value",
            selector(
                json!({"matchLabels": {"kubernetes.io/metadata.name": "", "a.b_c-d": "x.Y_z"}}),
            ),
            Expect::Ok,
        ),
        (
            "every operator",
            selector(json!({"matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": []},
            ]})),
            Expect::Ok,
        ),
        (
            "from Same without selector",
            json!({"backend": {"storageSecretName": "s", "gcs": {"bucket": "b"}},
                   "usagePolicy": {"allowedNamespaces": {"from": "Same"}}}),
            Expect::Ok,
        ),
        (
            "from Selector without selector",
            json!({"backend": {"storageSecretName": "s", "gcs": {"bucket": "b"}},
                   "usagePolicy": {"allowedNamespaces": {"from": "Selector"}}}),
            Expect::Err(
                sel,
                &[
                    "is missing",
                    "set a label selector on Namespaces",
                    "from: All",
                ],
            ),
        ),
        (
            "unknown operator",
            selector(
                json!({"matchExpressions": [{"key": "env", "operator": "Equals", "values": ["a"]}]}),
            ),
            Expect::Err(
                "spec.usagePolicy.allowedNamespaces.selector.matchExpressions[0].operator",
                &["\"Equals\" is not a selector operator", OPS],
            ),
        ),
        (
            "In without values",
            selector(json!({"matchExpressions": [{"key": "env", "operator": "In"}]})),
            Expect::Err(
                "spec.usagePolicy.allowedNamespaces.selector.matchExpressions[0].values",
                &["is empty", "needs at least one value"],
            ),
        ),
        (
            "NotIn with empty values",
            selector(json!({"matchExpressions": [
                {"key": "env", "operator": "Exists"},
                {"key": "env", "operator": "NotIn", "values": []},
            ]})),
            Expect::Err(
                "spec.usagePolicy.allowedNamespaces.selector.matchExpressions[1].values",
                &["is empty", "operator NotIn needs at least one value"],
            ),
        ),
        (
            "Exists with values",
            selector(
                json!({"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["x"]}]}),
            ),
            Expect::Err(
                "spec.usagePolicy.allowedNamespaces.selector.matchExpressions[0].values",
                &["operator Exists takes none", "use In or NotIn"],
            ),
        ),
        (
            "DoesNotExist with values",
            selector(
                json!({"matchExpressions": [{"key": "env", "operator": "DoesNotExist", "values": ["x"]}]}),
            ),
            Expect::Err(
                "spec.usagePolicy.allowedNamespaces.selector.matchExpressions[0].values",
                &["operator DoesNotExist takes none"],
            ),
        ),
        (
            "bad expression key",
            selector(json!({"matchExpressions": [{"key": "-env", "operator": "Exists"}]})),
            Expect::Err(
                "spec.usagePolicy.allowedNamespaces.selector.matchExpressions[0].key",
                &["\"-env\" is not a valid label key", KEY_RULE],
            ),
        ),
        (
            "bad expression value",
            selector(
                json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["ok", "not ok"]}]}),
            ),
            Expect::Err(
                "spec.usagePolicy.allowedNamespaces.selector.matchExpressions[0].values[1]",
                &["\"not ok\" is not a valid label value", VALUE_RULE],
            ),
        ),
        (
            "bad matchLabels key",
            selector(json!({"matchLabels": {"Bad_Prefix/x": "y"}})),
            Expect::Err(
                "spec.usagePolicy.allowedNamespaces.selector.matchLabels",
                &["\"Bad_Prefix/x\" is not a valid label key", KEY_RULE],
            ),
        ),
        (
            "empty key name",
            selector(json!({"matchLabels": {"example.com/": "y"}})),
            Expect::Err(
                "spec.usagePolicy.allowedNamespaces.selector.matchLabels",
                &["is not a valid label key", KEY_RULE],
            ),
        ),
        (
            "bad matchLabels value",
            selector(json!({"matchLabels": {"team": "a/b"}})),
            Expect::Err(
                "spec.usagePolicy.allowedNamespaces.selector.matchLabels",
                &[
                    "the value \"a/b\" of \"team\" is not a valid label value",
                    VALUE_RULE,
                ],
            ),
        ),
    ]);
}

#[test]
fn selector_warnings() {
    let lookups = LookupTable::default();
    let empty = validate_repository(
        &repo(selector(json!({}))),
        None,
        &lookups,
        &Policy::default(),
    );
    assert!(empty.errors.is_empty(), "{:?}", empty.errors);
    assert_eq!(
        empty.warnings[0].path,
        "spec.usagePolicy.allowedNamespaces.selector"
    );
    assert!(empty.warnings[0].message.contains("from: All"));

    let ignored = repo(json!({
        "backend": {"storageSecretName": "s", "gcs": {"bucket": "b"}},
        "usagePolicy": {"allowedNamespaces": {"from": "All", "selector": {"matchLabels": {"a": "b"}}}},
    }));
    let v = validate_repository(&ignored, None, &lookups, &Policy::default());
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    assert!(v.warnings[0].message.contains("set from: Selector"));
}

#[test]
fn warnings() {
    let lookups = LookupTable::default();
    // (case, spec, expected warning as (path, fragment)).
    type Case = (&'static str, Value, Option<(&'static str, &'static str)>);
    let cases: &[Case] = &[
        ("plain", s3_bucket("backups"), None),
        (
            "insecureTLS",
            s3_spec(json!({"bucket": "backups", "insecureTLS": true})),
            Some(("spec.backend.s3.insecureTLS", "CA_CERT_DATA")),
        ),
        (
            "wipeOut",
            json!({"backend": {"storageSecretName": "repo-secret", "gcs": {"bucket": "b"}}, "wipeOut": true}),
            Some(("spec.wipeOut", "will be deleted")),
        ),
    ];
    for (name, spec, expect) in cases {
        let v = validate_repository(&repo(spec.clone()), None, &lookups, &Policy::default());
        assert!(v.errors.is_empty(), "{name}: {:?}", v.errors);
        match expect {
            None => assert!(v.warnings.is_empty(), "{name}: {:?}", v.warnings),
            Some((path, fragment)) => assert!(
                v.warnings
                    .iter()
                    .any(|w| w.path == *path && w.message.contains(fragment)),
                "{name}: {:?}",
                v.warnings
            ),
        }
    }
    // Admission does not look Secrets up: a storage Secret nobody created is no warning.
    let v = validate_repository(
        &repo(s3_bucket("backups")),
        None,
        &LookupTable::default(),
        &Policy::default(),
    );
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
}

#[test]
fn every_error_comes_back_at_once() {
    let r = repo(json!({
        "backend": {
            "storageSecretName": "",
            "s3": {"bucket": "Bad", "endpoint": "ftp://x"},
            "local": {"mountPath": "/cairn"},
        },
        "usagePolicy": {"allowedNamespaces": {"from": "Selector"}},
    }));
    let v = validate_repository(&r, None, &LookupTable::default(), &Policy::default());
    let mut paths: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        vec![
            "spec.backend",
            "spec.backend.local",
            "spec.backend.local.mountPath",
            "spec.backend.s3.bucket",
            "spec.backend.s3.endpoint",
            "spec.backend.storageSecretName",
            "spec.usagePolicy.allowedNamespaces.selector",
        ]
    );
}

#[test]
fn backend_changes_on_update() {
    let lookups = LookupTable::default();
    let old = with_status(repo(s3_bucket("backups")), 12);
    let cases: &[(&str, Value, i64, Expect)] = &[
        ("same bucket", s3_bucket("backups"), 12, Expect::Ok),
        (
            "other secret",
            s3_spec(json!({"endpoint": "https://s3.amazonaws.com", "bucket": "backups", "region": "eu-west-1"}))
                .pointer_set("/backend/storageSecretName", "rotated"),
            12,
            Expect::Ok,
        ),
        ("other bucket, no snapshots", s3_bucket("elsewhere"), 0, Expect::Ok),
        (
            "other bucket",
            s3_bucket("elsewhere"),
            12,
            Expect::Err(
                "spec.backend",
                &["the bucket or container changed", "12 snapshot(s)", "create a new Repository"],
            ),
        ),
        (
            "other prefix",
            s3_spec(json!({"endpoint": "https://s3.amazonaws.com", "bucket": "backups", "prefix": "x"})),
            1,
            Expect::Err("spec.backend", &["the prefix changed", "1 snapshot(s)", "create a new Repository"]),
        ),
        (
            "other provider",
            json!({"backend": {"storageSecretName": "repo-secret", "gcs": {"bucket": "backups"}}}),
            3,
            Expect::Err("spec.backend", &["the provider", "would orphan", "create a new Repository"]),
        ),
    ];
    for (name, spec, snapshots, expect) in cases {
        let old = with_status(old.clone(), *snapshots);
        let v = validate_repository(
            &repo(spec.clone()),
            Some(&old),
            &lookups,
            &Policy::default(),
        );
        assert_verdict(name, &v, expect);
    }
}

#[test]
fn updates_that_leave_the_spec_alone_pass() {
    // Even an object stored before these rules existed can get finalizers, labels and status.
    let broken = repo(json!({"backend": {"storageSecretName": ""}}));
    let mut relabelled = broken.clone();
    relabelled
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("a".into(), "b".into());
    let v = validate_repository(
        &relabelled,
        Some(&broken),
        &LookupTable::default(),
        &Policy::default(),
    );
    assert_eq!(v, Verdict::default());

    let mut deleting = repo(json!({"backend": {"storageSecretName": ""}, "wipeOut": true}));
    deleting.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2024-01-01T00:00:00Z")).expect("time deserializes"));
    let v = validate_repository(
        &deleting,
        Some(&broken),
        &LookupTable::default(),
        &Policy::default(),
    );
    assert!(v.errors.is_empty(), "{:?}", v.errors);

    // A spec change of a live object does go through the rules.
    let v = validate_repository(
        &repo(s3_bucket("AB")),
        Some(&broken),
        &LookupTable::default(),
        &Policy::default(),
    );
    assert!(!v.errors.is_empty());
}

trait PointerSet {
    fn pointer_set(self, pointer: &str, value: &str) -> Self;
}

impl PointerSet for Value {
    fn pointer_set(mut self, pointer: &str, value: &str) -> Self {
        if let Some(slot) = self.pointer_mut(pointer) {
            *slot = json!(value);
        }
        self
    }
}

proptest! {
    #[test]
    fn never_panics(s in any::<String>(), n in any::<i64>()) {
        let specs = [
            s3_spec(json!({"bucket": s, "endpoint": s, "prefix": s})),
            rest_url(&s),
            local(&s),
            json!({"backend": {"storageSecretName": s, "gcs": {"bucket": s}}}),
            selector(json!({"matchLabels": {s.clone(): s.clone()},
                "matchExpressions": [{"key": s, "operator": s, "values": [s]}]})),
        ];
        let old = with_status(repo(s3_bucket("backups")), n);
        for spec in specs {
            let r = repo(spec);
            let v = validate_repository(&r, Some(&old), &LookupTable::default(), &Policy::default());
            let _ = v.error_message();
            let _ = validate_repository(&r, None, &LookupTable::default(), &Policy::default());
        }
    }
}

/// A native Repository names the server's location: no storage Secret, no volume; restic-only
/// features and providers without a server repository type are refused, all at once, and a
/// restic Repository may not use the prefix native ones own.
#[test]
fn native_repositories() {
    let check = |spec: Value| {
        validate_repository(
            &repo(spec),
            None,
            &LookupTable::default(),
            &Policy::default(),
        )
    };
    let ok = check(json!({"driver": "Native", "backend": {"local": {"mountPath": "/snapshots"}}}));
    assert!(ok.errors.is_empty(), "{:?}", ok.errors);
    let s3 = check(
        json!({"driver": "Native", "backend": {"s3": {"bucket": "snaps", "prefix": "team"}}}),
    );
    assert!(s3.errors.is_empty(), "{:?}", s3.errors);
    let bad = check(
        json!({"driver": "Native", "wipeOut": true, "backend": {"storageSecretName": "s",
        "local": {"mountPath": "relative", "emptyDir": {}}}}),
    );
    let paths: Vec<&str> = bad.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.backend.local.mountPath",
            "spec.backend.local.emptyDir",
            "spec.wipeOut"
        ],
        "{:?}",
        bad.errors
    );
    assert!(
        bad.warnings
            .iter()
            .any(|w| w.path == "spec.backend.storageSecretName")
    );
    let rest = check(json!({"driver": "Native", "backend": {"rest": {"url": "https://r"}}}));
    assert_eq!(
        rest.errors[0].path, "spec.backend.rest",
        "{:?}",
        rest.errors
    );
    let restic = check(s3_spec(
        json!({"bucket": "snaps", "prefix": "cairn-native/x"}),
    ));
    assert_eq!(
        restic.errors[0].path, "spec.backend.s3.prefix",
        "{:?}",
        restic.errors
    );
    let unset = check(json!({"backend": {"local": {"mountPath": "/r", "emptyDir": {}}}}));
    assert_eq!(
        unset.errors[0].path, "spec.backend.storageSecretName",
        "{:?}",
        unset.errors
    );
}
