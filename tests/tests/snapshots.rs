//! Issue 20: a repository's snapshots as `Snapshot` objects, on the real node (webhook,
//! controller, each backup's Job on kubelet + containerd, the real agent against OpenSearch and
//! MinIO). The controller writes them from the inventory lines the agent leaves in its log, read
//! through `pods/log`; retention and a wipe remove them; users read and annotate them, never
//! create or edit them.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use cairn_api::{Repository, Snapshot};
use cairn_tests::ControlPlane;
use cairn_tests::forward::Forward;
use cairn_tests::http::bulk;
use cairn_tests::objects::{
    apply, configuration, failure, finished, fixture, phase, ready, session,
};
use cairn_tests::opensearch::OpenSearch;
use cairn_tests::s3::S3Server;
use cairn_tests::system::{OnNode, on_node, restricted_namespace};
use cairn_tests::wait_for;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

async fn env() -> &'static OnNode {
    static ENV: OnceCell<OnNode> = OnceCell::const_new();
    ENV.get_or_init(|| on_node(ControlPlane::shared(), "snapshots", &[]))
        .await
}

fn cp() -> &'static ControlPlane {
    ControlPlane::shared()
}

const PASSWORD: &str = "snapshots-password";
const BUCKET: &str = "snapshots";
const SESSION_TIME: Duration = Duration::from_secs(180);

/// The Snapshot objects of Repository `repo` of `ns`, by snapshot id.
async fn objects(ns: &str) -> Vec<Snapshot> {
    let api: Api<Snapshot> = Api::all(cp().client());
    let selector = format!("cairn.dev/repository=repo,cairn.dev/repository-namespace={ns}");
    api.list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Waits for `f` to give a value; past `timeout`, fails with `ns`'s events and the
/// controller's last words.
async fn until<T, Fut: Future<Output = Option<T>>>(
    timeout: Duration,
    what: &str,
    ns: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            let events = cp().kubectl(["get", "events", "-n", ns]);
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}\n{}",
                String::from_utf8_lossy(&events.stdout),
                env().await.controller.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl` as `user` (impersonated), with `stdin` when given: success and its words.
fn kubectl_as_with(user: &str, args: &[&str], stdin: Option<&Value>) -> (bool, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--as", user]);
    let out = match stdin {
        Some(object) => cp().kubectl_stdin(all, &object.to_string()),
        None => cp().kubectl(all),
    };
    let words = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), words)
}

fn kubectl_as(user: &str, args: &[&str]) -> (bool, String) {
    kubectl_as_with(user, args, None)
}

/// Binds `user` to the ClusterRole `role` in `ns`, and waits until `verb` on snapshots is
/// allowed (the aggregated rules reach the built-in roles through the aggregation controller).
async fn bind(ns: &str, user: &str, role: &str, verb: &str) {
    apply(
        cp(),
        &[
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{user}-{role}"), "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
        ],
    );
    wait_for(
        Duration::from_secs(60),
        &format!("{user} may {verb} snapshots through {role}"),
        || async {
            let (ok, words) = kubectl_as(
                user,
                &["auth", "can-i", verb, "snapshots.cairn.dev", "-n", ns],
            );
            (ok && words.trim() == "yes").then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_follow_the_repository_and_only_cairn_writes_them() {
    let env = env().await;
    let search = OpenSearch::start().expect("opensearch");
    let s3 = S3Server::start().expect("minio");
    s3.create_bucket(BUCKET).expect("bucket");
    let storage = Forward::start(env.node.host_ip(), s3.port()).expect("forward");
    let bridge = Forward::start(env.node.host_ip(), search.port()).expect("forward");
    let mut body = String::new();
    for i in 0..40 {
        body.push_str(&format!(
            "{}\n{}\n",
            json!({"index": {"_index": "orders", "_id": i}}),
            json!({"n": i})
        ));
    }
    tokio::task::block_in_place(|| bulk(&search.url(), body)).expect("bulk");

    let ns = restricted_namespace(cp(), "snapshots").await;
    let mut objs = fixture(
        &ns,
        &bridge.http_url(),
        &s3,
        &storage.http_url(),
        BUCKET,
        PASSWORD,
    );
    objs[2]["spec"]["wipeOut"] = json!(true);
    objs.push(configuration(
        &ns,
        "nightly",
        json!({"retentionPolicy": {"name": "two", "keepLast": 2, "prune": true}}),
    ));
    apply(cp(), &objs);
    ready(cp(), &ns, "nightly").await;
    for i in 1..=3 {
        let name = format!("b{i}");
        apply(cp(), &[session(&ns, &name, "nightly")]);
        let s = finished(cp(), &ns, &name, SESSION_TIME).await;
        assert_eq!(phase(&s), "Succeeded", "{name}: {:?}", failure(&s));
    }

    // Exactly the repository's snapshots, as restic lists them.
    let repository = format!("{}/{ns}", s3.restic_repository(BUCKET));
    let listed = s3
        .restic(&repository, PASSWORD, &["snapshots", "--json"])
        .expect("restic snapshots");
    let restic: BTreeSet<String> = serde_json::from_str::<Vec<Value>>(&listed)
        .expect("json")
        .iter()
        .filter_map(|s| s["id"].as_str().map(String::from))
        .collect();
    assert_eq!(restic.len(), 2, "keepLast 2: {listed}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = objects(&ns).await;
        let ids: BTreeSet<String> = got.iter().map(|s| s.spec.snapshot_id.clone()).collect();
        if ids == restic && got.iter().any(|s| s.spec.session.is_some()) {
            break got;
        }
        if std::time::Instant::now() > deadline {
            let events = cp().kubectl(["get", "events", "-n", &ns]);
            panic!(
                "the Snapshot objects are {ids:?}, restic lists {restic:?}\n{got:#?}\n{}\n{}",
                String::from_utf8_lossy(&events.stdout),
                env.controller.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for s in &got {
        assert_eq!(s.spec.documents, Some(40), "{s:?}");
        assert_eq!(s.spec.indices, Some(1));
        assert_eq!(s.spec.configuration.as_deref(), Some("nightly"));
        assert!(s.spec.total_bytes.is_some_and(|b| b > 0), "{s:?}");
    }
    let latest = got.iter().max_by_key(|s| s.spec.time.clone().map(|t| t.0));
    assert_eq!(
        latest.and_then(|s| s.spec.session.as_deref()),
        Some("b3"),
        "the newest snapshot names the session that made it"
    );
    let name = got[0].metadata.name.clone().expect("name");

    users_read_and_annotate_but_never_write(&ns, &name).await;
    an_adopted_repository_is_listed_by_its_inventory_job(&objs[0], &objs[2], &restic).await;

    // A user asks for one snapshot's data to go: that snapshot alone is forgotten, and its
    // object goes with it.
    let (ok, words) = kubectl_as(
        "editor",
        &[
            "annotate",
            "snapshots.cairn.dev",
            &name,
            "-n",
            &ns,
            "cairn.dev/forget=true",
        ],
    );
    assert!(ok, "{words}");
    let forgotten = got[0].spec.snapshot_id.clone();
    until(
        Duration::from_secs(120),
        "the forgotten snapshot's object to go",
        &ns,
        || async {
            let ids: BTreeSet<String> = objects(&ns)
                .await
                .into_iter()
                .map(|s| s.spec.snapshot_id)
                .collect();
            (ids.len() == 1 && !ids.contains(&forgotten)).then_some(())
        },
    )
    .await;
    let listed = s3
        .restic(&repository, PASSWORD, &["snapshots", "--json"])
        .expect("restic snapshots");
    assert!(!listed.contains(&forgotten), "{listed}");
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&listed)
            .expect("json")
            .len(),
        1
    );

    // Wipe: the data and every Snapshot object go.
    let out = cp().kubectl(["delete", "repository", "repo", "-n", &ns, "--wait=false"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(
        Duration::from_secs(180),
        "no Snapshot object left",
        || async { objects(&ns).await.is_empty().then_some(()) },
    )
    .await;
}

/// A second Repository on the same data, in another namespace (adopted: cairn made no backup
/// through it): its inventory Job lists the snapshots into its own namespace (their identity
/// names a namespace its usage policy does not admit), again for a new request, and its objects
/// go with it.
async fn an_adopted_repository_is_listed_by_its_inventory_job(
    secret: &Value,
    repository: &Value,
    restic: &BTreeSet<String>,
) {
    let other = restricted_namespace(cp(), "adopted").await;
    let (mut secret, mut repository) = (secret.clone(), repository.clone());
    secret["metadata"]["namespace"] = json!(other);
    repository["metadata"]["namespace"] = json!(other);
    repository["spec"]["wipeOut"] = json!(false);
    apply(cp(), &[secret, repository]);
    let listed = |request: &'static str| {
        let other = other.clone();
        async move {
            let api: Api<Repository> = Api::namespaced(cp().client(), &other);
            let r = api.get_opt("repo").await.ok()??;
            let inventory = r.status?.inventory?;
            (inventory.request == request).then_some(inventory)
        }
    };
    let inventory = until(Duration::from_secs(120), "the inventory", &other, || {
        listed("")
    })
    .await;
    assert_eq!(inventory.snapshots, Some(2), "{inventory:?}");
    let got = objects(&other).await;
    let ids: BTreeSet<String> = got.iter().map(|s| s.spec.snapshot_id.clone()).collect();
    assert_eq!(&ids, restic);
    assert!(
        got.iter()
            .all(|s| s.metadata.namespace.as_deref() == Some(other.as_str()))
    );
    let out = cp().kubectl([
        "annotate",
        "repository",
        "repo",
        "-n",
        &other,
        "cairn.dev/inventory=again",
    ]);
    assert!(out.status.success(), "{out:?}");
    let again = wait_for(Duration::from_secs(120), "the second inventory", || {
        listed("again")
    })
    .await;
    assert_eq!(again.snapshots, Some(2), "{again:?}");
    let out = cp().kubectl(["delete", "repository", "repo", "-n", &other]);
    assert!(out.status.success(), "{out:?}");
    wait_for(
        Duration::from_secs(60),
        "the adopted repository's objects to go",
        || async { objects(&other).await.is_empty().then_some(()) },
    )
    .await;
}

/// A user with `view` lists the Snapshots; one with `edit` may annotate one for forgetting but
/// not create or edit one; a user whom RBAC lets create them is refused by admission.
async fn users_read_and_annotate_but_never_write(ns: &str, name: &str) {
    let roles = cairn_tests::repo_root().join("manifests/user-roles/roles.yaml");
    let out = cp().kubectl(["apply", "-f", &roles.display().to_string()]);
    assert!(out.status.success(), "{out:?}");
    bind(ns, "viewer", "view", "list").await;
    bind(ns, "editor", "edit", "patch").await;
    let (ok, words) = kubectl_as(
        "viewer",
        &[
            "get",
            "snapshots.cairn.dev",
            "-n",
            ns,
            "-l",
            "cairn.dev/repository=repo",
            "--sort-by=.spec.time",
        ],
    );
    assert!(ok && words.contains(name), "{words}");

    let forged = json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Snapshot",
        "metadata": {"name": "forged", "namespace": ns},
        "spec": {"repository": {"name": "repo"}, "snapshotId": "f".repeat(64), "shortId": "ffffffff",
                 "hostname": "host-0", "driver": "restic"}});
    let (ok, words) = kubectl_as_with("editor", &["create", "-f", "-"], Some(&forged));
    assert!(!ok && words.contains("forbidden"), "{words}");
    apply(
        cp(),
        &[
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "snapshot-writer", "namespace": ns},
            "rules": [{"apiGroups": ["cairn.dev"], "resources": ["snapshots"], "verbs": ["create", "update", "patch"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "writer", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "snapshot-writer"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "writer"}]}),
        ],
    );
    let (ok, words) = kubectl_as_with("writer", &["create", "-f", "-"], Some(&forged));
    assert!(
        !ok && words.contains("written by cairn's controller"),
        "{words}"
    );
    let patch = r#"{"spec":{"documents":1}}"#;
    let (ok, words) = kubectl_as(
        "editor",
        &[
            "patch",
            "snapshots.cairn.dev",
            name,
            "-n",
            ns,
            "--type=merge",
            "-p",
            patch,
        ],
    );
    assert!(!ok && words.contains("cannot be edited"), "{words}");
    let (ok, words) = kubectl_as(
        "editor",
        &[
            "annotate",
            "snapshots.cairn.dev",
            name,
            "-n",
            ns,
            "note=kept",
        ],
    );
    assert!(ok, "{words}");
}

/// The data packs under `prefix` of the bucket, with their sizes.
fn packs(s3: &S3Server, prefix: &str) -> Vec<(String, usize)> {
    let path = format!("/{BUCKET}?list-type=2&prefix={prefix}%2Fdata%2F");
    let (status, body) = s3.signed_request("GET", &path, b"").expect("list");
    assert_eq!(status, 200, "{body}");
    body.split("<Contents>")
        .skip(1)
        .filter_map(|c| {
            let key = c.split_once("<Key>")?.1.split_once("</Key>")?.0;
            let size = c.split_once("<Size>")?.1.split_once("</Size>")?.0;
            Some((key.to_string(), size.parse().ok()?))
        })
        .collect()
}

/// Issue 20's integrity: a pack only the second snapshot uses is overwritten (same size, other
/// bytes); the scheduled full-read check marks the Repository and that Snapshot damaged, leaves
/// the first whole, says so in an event and in the metric.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_pack_marks_its_snapshot_and_the_repository() {
    let env = env().await;
    let search = OpenSearch::start().expect("opensearch");
    let s3 = S3Server::start().expect("minio");
    s3.create_bucket(BUCKET).expect("bucket");
    let storage = Forward::start(env.node.host_ip(), s3.port()).expect("forward");
    let bridge = Forward::start(env.node.host_ip(), search.port()).expect("forward");
    let docs = |index: &str, n: usize| {
        let mut body = String::new();
        for i in 0..n {
            body.push_str(&format!(
                "{}\n{}\n",
                json!({"index": {"_index": index, "_id": i}}),
                json!({"text": format!("{index} document {i} {}", "x".repeat(200))})
            ));
        }
        tokio::task::block_in_place(|| bulk(&search.url(), body)).expect("bulk");
    };
    docs("first", 50);
    let ns = restricted_namespace(cp(), "integrity").await;
    let mut objs = fixture(
        &ns,
        &bridge.http_url(),
        &s3,
        &storage.http_url(),
        BUCKET,
        PASSWORD,
    );
    objs.push(configuration(&ns, "nightly", json!({})));
    apply(cp(), &objs);
    ready(cp(), &ns, "nightly").await;
    let backup = |name: &'static str| {
        let ns = ns.clone();
        async move {
            apply(cp(), &[session(&ns, name, "nightly")]);
            let s = finished(cp(), &ns, name, SESSION_TIME).await;
            assert_eq!(phase(&s), "Succeeded", "{name}: {:?}", failure(&s));
            s.status.and_then(|st| st.snapshot).expect("snapshot").id
        }
    };
    let first = backup("b1").await;
    let before: BTreeSet<String> = packs(&s3, &ns).into_iter().map(|(k, _)| k).collect();
    docs("second", 50);
    let second = backup("b2").await;
    let (key, size) = packs(&s3, &ns)
        .into_iter()
        .filter(|(k, _)| !before.contains(k))
        .max_by_key(|(_, size)| *size)
        .expect("a pack of the second backup's own");
    let (status, body) = s3
        .signed_request("PUT", &format!("/{BUCKET}/{key}"), &vec![0u8; size])
        .expect("overwrite");
    assert_eq!(status, 200, "{body}");

    let mut repo = objs[2].clone();
    repo["spec"]["integrityCheck"] = json!({"schedule": "* * * * *", "readDataSubset": "all"});
    apply(cp(), &[repo]);
    let repos: Api<Repository> = Api::namespaced(cp().client(), &ns);
    let status = until(
        Duration::from_secs(180),
        "the check's verdict",
        &ns,
        || async {
            let st = repos.get_opt("repo").await.ok()??.status?;
            st.last_check.is_some().then_some(st)
        },
    )
    .await;
    assert_eq!(status.integrity, Some(false), "{status:?}");
    let check = status.last_check.expect("lastCheck");
    assert_eq!(check.damaged_snapshots, Some(1), "{check:?}");
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "IntegrityVerified")
        .expect("condition");
    assert_eq!(condition.status, "False", "{condition:?}");
    assert!(condition.message.contains(&second[..8]), "{condition:?}");

    let got = until(
        Duration::from_secs(30),
        "the Snapshots' integrity",
        &ns,
        || async {
            let got = objects(&ns).await;
            got.iter()
                .all(|s| s.status.as_ref().is_some_and(|st| st.integrity.is_some()))
                .then_some(got)
        },
    )
    .await;
    let integrity = |id: &str| {
        got.iter()
            .find(|s| s.spec.snapshot_id == id)
            .and_then(|s| s.status.as_ref()?.integrity)
    };
    assert_eq!(integrity(&second), Some(false), "{got:#?}");
    assert_eq!(integrity(&first), Some(true), "{got:#?}");

    let events = cp().kubectl(["get", "events", "-n", &ns, "-o", "json"]);
    let text = String::from_utf8_lossy(&events.stdout);
    assert!(text.contains("IntegrityCheckFailed"), "{text}");
    let metrics = env.controller.metrics().expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cairn_repository_integrity{")
                && l.contains(&format!("namespace=\"{ns}\""))
                && l.ends_with(" 0")),
        "{metrics}"
    );
    every_dashboard_query_names_a_served_metric(env, &metrics);
}

/// Every metric a panel of the shipped dashboard queries is served by the controller or the
/// webhook. prometheus-client writes no family without series, so the one counter that has
/// none until something goes wrong, `cairn_reconcile_errors`, is exempt.
fn every_dashboard_query_names_a_served_metric(env: &OnNode, controller: &str) {
    let (_, webhook) = env.webhook.admin_get("/metrics").expect("webhook metrics");
    let served = format!("{controller}\n{webhook}");
    let path = cairn_tests::repo_root().join("manifests/dashboards/cairn.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("cairn_") {
                    let family = ["_total", "_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    names.insert(family.to_string());
                }
            }
        }
    }
    assert!(names.contains("cairn_repository_integrity"), "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| *n != "cairn_reconcile_errors" && !served.contains(&format!("# TYPE {n} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "panels query metrics nobody serves: {missing:?}"
    );
}

/// A tenant's snapshots of a shared Repository land in the tenant's namespace; a snapshot whose
/// tags name a namespace with no configuration using the Repository (tags are whatever the
/// password holder wrote) lands in the Repository's own namespace, never the named one.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_snapshot_lands_with_the_tenant_and_a_forged_tag_does_not() {
    let env = env().await;
    let search = OpenSearch::start().expect("opensearch");
    let s3 = S3Server::start().expect("minio");
    s3.create_bucket(BUCKET).expect("bucket");
    let storage = Forward::start(env.node.host_ip(), s3.port()).expect("forward");
    let bridge = Forward::start(env.node.host_ip(), search.port()).expect("forward");
    let body = format!(
        "{}\n{}\n",
        json!({"index": {"_index": "orders", "_id": 1}}),
        json!({"n": 1})
    );
    tokio::task::block_in_place(|| bulk(&search.url(), body)).expect("bulk");
    let owner = restricted_namespace(cp(), "owner").await;
    let tenant = restricted_namespace(cp(), "tenant").await;
    let victim = restricted_namespace(cp(), "victim").await;
    let mut objs = fixture(
        &owner,
        &bridge.http_url(),
        &s3,
        &storage.http_url(),
        BUCKET,
        PASSWORD,
    );
    objs[2]["spec"]["usagePolicy"] = json!({"allowedNamespaces": {"from": "All"}});
    let mut app = objs[1].clone();
    app["metadata"]["namespace"] = json!(tenant);
    // The session's Job runs in the tenant's namespace, with the storage Secret there.
    let mut secret = objs[0].clone();
    secret["metadata"]["namespace"] = json!(tenant);
    let mut config = configuration(&tenant, "nightly", json!({}));
    config["spec"]["repository"] = json!({"name": "repo", "namespace": owner});
    apply(
        cp(),
        &[objs[0].clone(), objs[2].clone(), secret, app, config],
    );
    ready(cp(), &tenant, "nightly").await;

    // A snapshot tagged as the victim's, written straight into the repository.
    let repository = format!("{}/{owner}", s3.restic_repository(BUCKET));
    let forged_dir = tempfile::tempdir().expect("tmp");
    std::fs::write(forged_dir.path().join("x"), "forged").expect("write");
    let dir = forged_dir.path().display().to_string();
    let victim_tag = format!("cairn.dev/namespace={victim}");
    s3.restic(&repository, PASSWORD, &["init"]).expect("init");
    s3.restic(
        &repository,
        PASSWORD,
        &[
            "backup",
            "--host",
            "host-0",
            "--tag",
            &victim_tag,
            "--tag",
            "cairn.dev/configuration=nightly",
            &dir,
        ],
    )
    .expect("forged snapshot");

    apply(cp(), &[session(&tenant, "b1", "nightly")]);
    let s = finished(cp(), &tenant, "b1", SESSION_TIME).await;
    assert_eq!(phase(&s), "Succeeded", "{:?}", failure(&s));
    let mine = s.status.and_then(|st| st.snapshot).expect("snapshot").id;
    let got = until(
        Duration::from_secs(60),
        "both Snapshot objects",
        &tenant,
        || {
            let owner = owner.clone();
            async move {
                let got = objects(&owner).await;
                (got.len() == 2).then_some(got)
            }
        },
    )
    .await;
    for s in &got {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        if s.spec.snapshot_id == mine {
            assert_eq!(ns, tenant, "the tenant's snapshot: {s:?}");
        } else {
            assert_eq!(
                ns, owner,
                "the forged snapshot stays with the Repository: {s:?}"
            );
        }
    }
}
