//! Auto-backup from a BackupBlueprint, through the real API server with `cairn-webhook` and
//! `cairn-controller`, on the real node: annotated AppBindings in two namespaces each get their
//! own Repository and BackupConfiguration (nothing refers across namespaces), whose first
//! scheduled backup runs the real agent from cairn's image against OpenSearch and MinIO; they
//! follow a change of the blueprint; removing the annotation removes them; an object of a
//! generated name that a user made is left untouched and shows as a condition and an event; a
//! blueprint whose storage location does not name the namespace is denied at admission.

use std::time::Duration;

use cairn_api::{BackupBlueprint, BackupConfiguration, BackupSession, Repository};
use cairn_tests::ControlPlane;
use cairn_tests::forward::Forward;
use cairn_tests::objects::apply;
use cairn_tests::opensearch::OpenSearch;
use cairn_tests::s3::S3Server;
use cairn_tests::system::{OnNode, on_node, restricted_namespace};
use cairn_tests::wait_for;
use k8s_openapi::api::events::v1::Event;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

async fn env() -> &'static OnNode {
    static ENV: OnceCell<OnNode> = OnceCell::const_new();
    ENV.get_or_init(|| on_node(ControlPlane::shared(), "blueprint", &[]))
        .await
}

fn cp() -> &'static ControlPlane {
    ControlPlane::shared()
}

/// How long the controller may take to react (a watch event and a reconcile).
const REACT: Duration = Duration::from_secs(30);
/// A minute to the next slot, and a session on the node.
const FIRST_BACKUP: Duration = Duration::from_secs(60 + 180);

/// Blueprint `name`: MinIO at `s3_url` (bucket `blueprints`) under `prefix`, every minute, the
/// catalog's backup Task.
fn blueprint(name: &str, s3_url: &str, region: &str, prefix: &str) -> Value {
    json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupBlueprint", "metadata": {"name": name},
    "spec": {
        "backend": {"storageSecretName": "repo-secret",
                    "s3": {"endpoint": s3_url, "bucket": "blueprints", "prefix": prefix, "region": region}},
        "wipeOut": true,
        "schedule": "* * * * *",
        "task": {"name": "elasticsearch-backup"},
        "retentionPolicy": {"name": "keep", "keepLast": 2},
        "retryConfig": {"maxRetry": 0}
    }})
}

/// AppBinding `es` in `ns` at `url`, with `annotations`.
fn app(ns: &str, url: &str, annotations: Value) -> Value {
    json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
        "metadata": {"name": "es", "namespace": ns, "annotations": annotations},
        "spec": {"type": "kubedb.com/elasticsearch", "clientConfig": {"url": url}}})
}

fn storage_secret(ns: &str, s3: &S3Server) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "repo-secret", "namespace": ns},
        "stringData": {"RESTIC_PASSWORD": "blueprint", "AWS_ACCESS_KEY_ID": s3.access_key(),
                       "AWS_SECRET_ACCESS_KEY": s3.secret_key()}})
}

/// Blueprint `bp-<ns>` (storage nobody reaches: these tests need no backup) and AppBinding
/// `es` in `ns` annotated with it; returns the blueprint's name.
fn annotated_unreachable(ns: &str) -> String {
    let name = format!("bp-{ns}");
    let nowhere = "http://127.0.0.1:9";
    apply(
        cp(),
        &[
            blueprint(&name, nowhere, "us-east-1", "${TARGET_NAMESPACE}"),
            app(ns, nowhere, json!({"blueprint.cairn.dev/name": name})),
        ],
    );
    name
}

/// The generated pair of `ns`, once both exist.
async fn generated(ns: &str) -> (Repository, BackupConfiguration) {
    let repos: Api<Repository> = Api::namespaced(cp().client(), ns);
    let configs: Api<BackupConfiguration> = Api::namespaced(cp().client(), ns);
    wait_for(
        REACT,
        "the generated Repository and BackupConfiguration",
        || async {
            Some((
                repos.get_opt("app-es").await.ok()??,
                configs.get_opt("app-es").await.ok()??,
            ))
        },
    )
    .await
}

/// Whether the pair of `ns` was made for AppBinding `es` and refers only to `ns`.
fn assert_made_for(ns: &str, prefix: &str, repo: &Repository, config: &BackupConfiguration) {
    let s3 = repo.spec.backend.s3.as_ref().expect("s3");
    assert_eq!(s3.prefix.as_deref(), Some(prefix));
    assert_eq!(
        repo.spec.wipe_out,
        Some(false),
        "generated Repositories never wipe"
    );
    assert_eq!(config.spec.repository.name, "app-es");
    assert_eq!(config.spec.repository.namespace.as_deref(), Some(ns));
    assert_eq!(config.spec.target.r#ref.name, "es");
    assert!(
        config
            .spec
            .target
            .r#ref
            .namespace
            .as_deref()
            .is_none_or(|n| n == ns)
    );
    for owners in [repo.owner_references(), config.owner_references()] {
        assert_eq!(owners.len(), 1, "{owners:?}");
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].name.as_str()),
            ("AppBinding", "es")
        );
        assert_eq!(owners[0].controller, Some(true));
    }
}

#[tokio::test]
async fn annotated_apps_get_their_own_repository_and_configuration_and_back_up_on_schedule() {
    let env = env().await;
    let s3 = S3Server::start().expect("MinIO");
    s3.create_bucket("blueprints").expect("bucket");
    let search = OpenSearch::shared();
    let s3_forward = Forward::start(env.node.host_ip(), s3.port()).expect("forward");
    let search_forward = Forward::start(env.node.host_ip(), search.port()).expect("forward");
    let (a, b) = (
        restricted_namespace(cp(), "bp").await,
        restricted_namespace(cp(), "bp").await,
    );
    let index = format!("{a}-docs");
    let (url, doc) = (
        search.url(),
        format!("{{\"index\":{{\"_index\":\"{index}\"}}}}\n{{\"n\":1}}\n"),
    );
    // A blocking client: off the runtime's thread.
    tokio::task::spawn_blocking(move || cairn_tests::http::bulk(&url, doc))
        .await
        .expect("join")
        .expect("bulk");
    let name = format!("bp-{a}");
    let prefix = "cairn/${TARGET_NAMESPACE}/${TARGET_APP_RESOURCE}/${TARGET_NAME}";
    apply(
        cp(),
        &[
            blueprint(&name, &s3_forward.http_url(), s3.region(), prefix),
            storage_secret(&a, &s3),
            storage_secret(&b, &s3),
            app(
                &a,
                &search_forward.http_url(),
                json!({"stash.appscode.com/backup-blueprint": name}),
            ),
            app(
                &b,
                &search_forward.http_url(),
                json!({"blueprint.cairn.dev/name": name}),
            ),
        ],
    );
    for ns in [&a, &b] {
        let (repo, config) = generated(ns).await;
        assert_made_for(ns, &format!("cairn/{ns}/elasticsearch/es"), &repo, &config);
    }

    let sessions: Api<BackupSession> = Api::namespaced(cp().client(), &a);
    let succeeded = wait_for(
        FIRST_BACKUP,
        "the first scheduled backup to succeed",
        || async {
            let list = sessions.list(&Default::default()).await.ok()?;
            list.items.into_iter().find(|s| {
                s.status
                    .as_ref()
                    .and_then(|st| st.phase)
                    .map(|p| p.to_string())
                    .as_deref()
                    == Some("Succeeded")
            })
        },
    )
    .await;
    assert_eq!(succeeded.spec.invoker.name, "app-es");
    let keys = s3.list_objects("blueprints").expect("list");
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("cairn/{a}/elasticsearch/es/snapshots/"))),
        "a snapshot under the namespace's own prefix: {keys:?}"
    );
}

#[tokio::test]
async fn a_blueprint_change_follows_and_removing_the_annotation_removes_the_pair() {
    env().await;
    let ns = restricted_namespace(cp(), "bp").await;
    let name = annotated_unreachable(&ns);
    generated(&ns).await;
    let out = cp().kubectl([
        "patch",
        "backupblueprint",
        &name,
        "--type=merge",
        "-p",
        r#"{"spec":{"schedule":"0 4 * * *","backupHistoryLimit":4}}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let configs: Api<BackupConfiguration> = Api::namespaced(cp().client(), &ns);
    wait_for(
        REACT,
        "the configuration to follow the blueprint",
        || async {
            let c = configs.get_opt("app-es").await.ok()??;
            (c.spec.schedule == "0 4 * * *" && c.spec.backup_history_limit == Some(4)).then_some(())
        },
    )
    .await;
    let out = cp().kubectl([
        "annotate",
        "appbinding",
        "es",
        "-n",
        &ns,
        "blueprint.cairn.dev/name-",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repos: Api<Repository> = Api::namespaced(cp().client(), &ns);
    wait_for(REACT, "the generated objects to go", || async {
        let repo = repos.get_opt("app-es").await.ok()?;
        let config = configs.get_opt("app-es").await.ok()?;
        (repo.is_none() && config.is_none()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_users_object_of_a_generated_name_is_left_alone_and_shown() {
    env().await;
    let ns = restricted_namespace(cp(), "bp").await;
    let users = json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository",
        "metadata": {"name": "app-es", "namespace": ns},
        "spec": {"backend": {"storageSecretName": "mine", "s3": {"bucket": "mine", "prefix": "mine"}}}});
    apply(cp(), &[users]);
    let repos: Api<Repository> = Api::namespaced(cp().client(), &ns);
    let before = repos.get("app-es").await.expect("the user's Repository");
    let name = annotated_unreachable(&ns);
    let blueprints: Api<BackupBlueprint> = Api::all(cp().client());
    let message = wait_for(REACT, "the NameClash condition", || async {
        let status = blueprints.get(&name).await.ok()?.status?;
        let c = status
            .conditions
            .into_iter()
            .find(|c| c.type_ == "NameClash")?;
        (c.status == "True").then_some(c.message)
    })
    .await;
    assert!(
        message.contains(&format!("Repository {ns}/app-es")),
        "{message}"
    );
    let events: Api<Event> = Api::namespaced(cp().client(), &ns);
    wait_for(REACT, "a NameClash event on the AppBinding", || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("NameClash")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("es")
            })
            .map(|_| ())
    })
    .await;
    let after = repos.get("app-es").await.expect("the user's Repository");
    assert_eq!(after.spec, before.spec, "untouched");
    assert!(after.owner_references().is_empty() && after.labels().is_empty());
    let managers: Vec<_> = after
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        !managers.iter().any(|m| m == "cairn-blueprints"),
        "{managers:?}"
    );
    let configs: Api<BackupConfiguration> = Api::namespaced(cp().client(), &ns);
    assert!(
        configs.get_opt("app-es").await.expect("get").is_none(),
        "nothing generated"
    );
}

#[tokio::test]
async fn a_blueprint_that_would_let_namespaces_share_a_repository_is_denied() {
    env().await;
    let bad = blueprint(
        "bp-shared",
        "http://127.0.0.1:9",
        "us-east-1",
        "backups/${TARGET_NAME}",
    );
    let err = cp().apply_objects(&[bad]).expect_err("denied");
    assert!(err.contains("spec.backend.s3.prefix"), "{err}");
    assert!(err.contains("${TARGET_NAMESPACE}"), "{err}");
    let blueprints: Api<BackupBlueprint> = Api::all(cp().client());
    assert!(
        blueprints
            .get_opt("bp-shared")
            .await
            .expect("get")
            .is_none()
    );
}
