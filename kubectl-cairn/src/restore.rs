//! `kubectl cairn restore`: builds a RestoreSession from a configuration (its Repository and
//! AppBinding) or a Repository and an AppBinding, shows it through the server's dry run (the
//! webhook's verdict and warnings), or creates it and with `--wait` follows it.

use std::process::ExitCode;

use anyhow::Result;
use cairn_api::common::{ObjectReference, Param, RestoreTarget, Rule, TargetRef, TaskRef};
use cairn_api::restore_session::{RestoreSessionSpec, RestoreSessionStatus};
use cairn_api::{BackupConfiguration, RestoreSession};
use kube::api::ObjectMeta;

use crate::cli::{Format, RestoreArgs};
use crate::client::Cluster;
use crate::follow::{Followed, Outcome};

const APPBINDING_API_VERSION: &str = "appcatalog.appscode.com/v1alpha1";

/// Builds the RestoreSession, then shows it (`--dry-run`) or creates it.
pub async fn run(
    cluster: &Cluster,
    args: &RestoreArgs,
    format: Option<Format>,
    timeout: std::time::Duration,
) -> Result<ExitCode> {
    let session = build(cluster, args).await?;
    let (created, warnings) = crate::create::create(cluster, &session, args.dry_run).await?;
    for w in &warnings {
        eprintln!("Warning: {w}");
    }
    let name = created.metadata.name.clone().unwrap_or_default();
    if args.dry_run {
        print!(
            "{}",
            crate::output::one(&created, format.unwrap_or(Format::Yaml))?
        );
        println!(
            "# dry run: the server admitted restoresession.cairn.dev/{name}; nothing was created"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("restoresession.cairn.dev/{name} created");
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    crate::follow::wait::<RestoreSession>(cluster, &name, timeout).await
}

impl Followed for RestoreSession {
    fn outcome(self) -> Option<Outcome> {
        self.status.and_then(outcome)
    }
}

/// The RestoreSession the arguments describe.
async fn build(cluster: &Cluster, args: &RestoreArgs) -> Result<RestoreSession> {
    let (repository, mut target, source_configuration) = match (&args.from, &args.repository) {
        (Some(config), _) => {
            let cfg: BackupConfiguration = cluster.get(config).await?;
            (
                cfg.spec.repository,
                cfg.spec.target.r#ref,
                Some(config.clone()),
            )
        }
        (None, Some(repo)) => {
            let repository = ObjectReference {
                name: repo.clone(),
                namespace: None,
            };
            (repository, appbinding(""), None)
        }
        (None, None) => anyhow::bail!("--from <configuration> or --repository <repository>"),
    };
    if let Some(to) = &args.to {
        target = appbinding(to);
    }
    let base = format!("{}-restore", target.name);
    Ok(RestoreSession {
        metadata: ObjectMeta {
            generate_name: Some(cairn_api::naming::generate_name(&base)),
            namespace: Some(cluster.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: RestoreSessionSpec {
            repository,
            target: RestoreTarget {
                r#ref: target,
                rules: vec![Rule {
                    source_configuration,
                    snapshots: vec![args.snapshot.clone()],
                    ..Rule::default()
                }],
                ..RestoreTarget::default()
            },
            task: params(args).map(|params| TaskRef { name: None, params }),
            ..RestoreSessionSpec::default()
        },
        status: None,
    })
}

fn appbinding(name: &str) -> TargetRef {
    TargetRef {
        api_version: APPBINDING_API_VERSION.into(),
        kind: "AppBinding".into(),
        name: name.into(),
        namespace: None,
    }
}

/// The restore Task's params the flags set (the catalog's names); `None` when none is set.
fn params(args: &RestoreArgs) -> Option<Vec<Param>> {
    let list = |v: &[String]| (!v.is_empty()).then(|| v.join(","));
    let params: Vec<Param> = [
        ("include", list(&args.include)),
        ("exclude", list(&args.exclude)),
        ("renamePrefix", args.rename_prefix.clone()),
        ("renamePattern", args.rename_pattern.clone()),
        ("renameReplacement", args.rename_replacement.clone()),
        ("existing", args.existing.clone()),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        value.map(|value| Param {
            name: name.into(),
            value,
        })
    })
    .collect();
    (!params.is_empty()).then_some(params)
}

/// The outcome of a final restore: what it restored, or its reason.
fn outcome(status: RestoreSessionStatus) -> Option<Outcome> {
    let summary = match &status.restored {
        Some(r) => format!(
            "snapshot {} restored ({} documents, {} indices) in {}",
            r.snapshot,
            crate::output::count(r.documents.unwrap_or(0).max(0) as u64),
            r.indices.unwrap_or(0),
            status.session_duration.as_deref().unwrap_or("?")
        ),
        None => "restored".into(),
    };
    Outcome::of(status.phase, &status.conditions, summary)
}
