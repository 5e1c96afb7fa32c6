//! The README's RBAC table is the install's RBAC, line by line: its `yes` lines are exactly the
//! rules of `manifests/` (which the chart renders identically: `tests/tests/install.rs`), and
//! after the install's RBAC is applied to a real kube-apiserver, `kubectl auth can-i
//! --as=system:serviceaccount:cairn-system:<account>` answers every line as the table says.
//!
//! Its own test binary, so its own control plane. Needs `cargo xtask testbed`.

use std::collections::BTreeSet;

use cairn_tests::{ControlPlane, appbinding_crd_dir, crds_dir, repo_root};
use serde_json::Value;

const NS: &str = "cairn-system";

/// One line of the README's table.
#[derive(Debug)]
struct Line {
    account: String,
    verbs: Vec<String>,
    group: String,
    resources: Vec<String>,
    names: Vec<String>,
    /// `all`, `cluster` or a namespace.
    place: String,
    allowed: bool,
}

/// One permission: (account, verb, group, resource[/subresource], name or "", place).
type Grant = (String, String, String, String, String, String);

fn list(cell: &str) -> Vec<String> {
    cell.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The rows of the table under `### RBAC, line by line`.
fn readme_table() -> Vec<Line> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let section = readme
        .split("### RBAC, line by line")
        .nth(1)
        .expect("README.md has a section `### RBAC, line by line`");
    let mut lines = Vec::new();
    for row in section.lines().skip_while(|l| !l.starts_with('|')) {
        if !row.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        if cells[0] == "account" || cells[0].starts_with("---") {
            continue;
        }
        assert_eq!(cells.len(), 7, "a row of 7 cells: {row}");
        let group = if cells[2] == "core" { "" } else { cells[2] };
        lines.push(Line {
            account: cells[0].to_string(),
            verbs: list(cells[1]),
            group: group.to_string(),
            resources: list(cells[3]),
            names: list(cells[4]),
            place: cells[5].to_string(),
            allowed: match cells[6] {
                "yes" => true,
                "no" => false,
                other => panic!("allowed is yes or no, not {other:?}: {row}"),
            },
        });
    }
    assert!(lines.len() > 10, "the table has {} rows", lines.len());
    lines
}

fn grants_of(line: &Line) -> Vec<Grant> {
    let names = if line.names.is_empty() {
        vec![String::new()]
    } else {
        line.names.clone()
    };
    let mut out = Vec::new();
    for verb in &line.verbs {
        for resource in &line.resources {
            for name in &names {
                out.push((
                    line.account.clone(),
                    verb.clone(),
                    line.group.clone(),
                    resource.clone(),
                    name.clone(),
                    line.place.clone(),
                ));
            }
        }
    }
    out
}

/// `manifests/` rendered by kustomize.
fn install_objects(cp: &ControlPlane) -> Vec<Value> {
    let dir = repo_root().join("manifests");
    let out = cp.kubectl(["kustomize", &dir.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Cluster-scoped resources among those the install grants.
const CLUSTER_SCOPED: &[&str] = &[
    "namespaces",
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
];

/// Every permission the install's bindings give a service account of `cairn-system`.
fn manifest_grants(objects: &[Value]) -> BTreeSet<Grant> {
    let role = |kind: &str, name: &str, ns: Option<&str>| {
        objects.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"].as_str() == ns
        })
    };
    let mut grants = BTreeSet::new();
    for binding in objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
    {
        let binding_ns = binding["metadata"]["namespace"].as_str();
        let role_kind = binding["roleRef"]["kind"].as_str().expect("roleRef.kind");
        let role_ns = if role_kind == "Role" {
            binding_ns
        } else {
            None
        };
        let role_name = binding["roleRef"]["name"].as_str().expect("roleRef.name");
        let role = role(role_kind, role_name, role_ns)
            .unwrap_or_else(|| panic!("{role_kind} {role_name} is not in the install"));
        for subject in binding["subjects"].as_array().expect("subjects") {
            assert_eq!(subject["kind"], "ServiceAccount", "{subject}");
            assert_eq!(subject["namespace"], NS, "{subject}");
            let account = subject["name"].as_str().expect("name");
            for rule in role["rules"].as_array().expect("rules") {
                let names = strings(&rule["resourceNames"]);
                let names = if names.is_empty() {
                    vec![String::new()]
                } else {
                    names
                };
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        let base = resource.split('/').next().unwrap_or_default();
                        let place = match binding_ns {
                            Some(ns) => ns.to_string(),
                            None if CLUSTER_SCOPED.contains(&base) => "cluster".to_string(),
                            None => "all".to_string(),
                        };
                        for verb in strings(&rule["verbs"]) {
                            for name in &names {
                                grants.insert((
                                    account.to_string(),
                                    verb.clone(),
                                    group.clone(),
                                    resource.clone(),
                                    name.clone(),
                                    place.clone(),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    grants
}

/// `kubectl auth can-i` for one permission, in the namespaces its place stands for: whether
/// every answer was `allowed`.
fn ask(cp: &ControlPlane, grant: &Grant, allowed: bool) -> Result<(), String> {
    let (account, verb, group, resource, name, place) = grant;
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (resource.as_str(), None),
    };
    let mut target = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    if !name.is_empty() {
        target = format!("{target}/{name}");
    }
    let scopes: Vec<Vec<String>> = match place.as_str() {
        "cluster" => vec![vec![]],
        "all" if allowed => vec![vec!["--all-namespaces".into()]],
        "all" => vec![
            vec!["--all-namespaces".into()],
            vec!["-n".into(), "default".into()],
        ],
        ns => vec![vec!["-n".into(), ns.to_string()]],
    };
    for scope in scopes {
        let mut args = vec![
            "auth".to_string(),
            "can-i".to_string(),
            verb.clone(),
            target.clone(),
            format!("--as=system:serviceaccount:{NS}:{account}"),
        ];
        if let Some(sub) = subresource {
            args.push(format!("--subresource={sub}"));
        }
        args.extend(scope);
        let out = cp.kubectl(&args);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if answer != if allowed { "yes" } else { "no" } {
            return Err(format!(
                "kubectl {} answered {answer:?}, the README says {}{}",
                args.join(" "),
                if allowed { "yes" } else { "no" },
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_rbac_table_is_the_install_rbac_and_the_api_server_agrees() {
    let table = readme_table();
    let cp = ControlPlane::shared();

    // 1. The yes lines are exactly the manifests' rules.
    let objects = install_objects(cp);
    let from_manifests = manifest_grants(&objects);
    let from_readme: BTreeSet<Grant> = table
        .iter()
        .filter(|l| l.allowed)
        .flat_map(grants_of)
        .collect();
    let missing: Vec<_> = from_manifests.difference(&from_readme).collect();
    let extra: Vec<_> = from_readme.difference(&from_manifests).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README's RBAC table and manifests/ differ.\nIn the manifests, not in the README: {missing:#?}\nIn the README, not in the manifests: {extra:#?}"
    );

    // 2. The API server agrees with every line, yes and no.
    cp.apply_crds(crds_dir()).await.expect("CRDs");
    cp.apply_crds(appbinding_crd_dir())
        .await
        .expect("AppBinding CRD");
    let rbac: Vec<String> = objects
        .iter()
        .filter(|o| {
            let kind = o["kind"].as_str().unwrap_or_default();
            [
                "Namespace",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "ClusterRole",
                "ClusterRoleBinding",
            ]
            .contains(&kind)
        })
        .map(|o| serde_yaml::to_string(o).expect("YAML"))
        .collect();
    let out = cp.kubectl_stdin(["apply", "-f", "-"], &rbac.join("---\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut wrong = Vec::new();
    let mut asked = 0;
    for line in &table {
        for grant in grants_of(line) {
            asked += 1;
            if let Err(e) = ask(cp, &grant, line.allowed) {
                wrong.push(e);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {asked} answers differ from the README:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let accounts: BTreeSet<&str> = table.iter().map(|l| l.account.as_str()).collect();
    assert_eq!(
        accounts,
        BTreeSet::from(["cairn-certs", "cairn-controller", "cairn-webhook"]),
        "every service account of the install has its lines"
    );
    eprintln!(
        "rbac: {asked} kubectl auth can-i answers match the README's {} lines",
        table.len()
    );
}
