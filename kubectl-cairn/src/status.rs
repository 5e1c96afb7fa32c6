//! `kubectl cairn status [<config>]`: each configuration as a tree — its Repository and
//! AppBinding (found or missing), its last sessions, the Job and pod running now, the next
//! scheduled run — and a warning line for anything that needs a person.

use anyhow::Result;
use cairn_api::common::SessionPhase;
use cairn_api::schedule::Schedule;
use cairn_api::{AppBinding, BackupConfiguration, BackupSession, Repository};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use crate::cli::Format;
use crate::client::Cluster;
use crate::output::{self, Colour, Terminal};

/// Sessions shown per configuration.
const LAST_SESSIONS: usize = 5;

/// Prints the tree of `config`, or of every configuration of the namespace.
pub async fn run(cluster: &Cluster, config: Option<String>, format: Option<Format>) -> Result<()> {
    let configs = match &config {
        Some(name) => vec![cluster.get::<BackupConfiguration>(name).await?],
        None => {
            cluster
                .api::<BackupConfiguration>()
                .list(&ListParams::default())
                .await?
                .items
        }
    };
    if let Some(f @ (Format::Yaml | Format::Json)) = format {
        print!("{}", output::objects(&configs, f)?);
        return Ok(());
    }
    if configs.is_empty() {
        eprintln!(
            "No BackupConfigurations found in namespace {}.",
            cluster.namespace
        );
    }
    let sessions = cluster
        .api::<BackupSession>()
        .list(&ListParams::default())
        .await?
        .items;
    let term = Terminal::detect();
    for cfg in &configs {
        print!("{}", Tree::of(cluster, cfg, &sessions).await?.render(term));
    }
    Ok(())
}

/// What is known of one configuration.
struct Tree {
    lines: Vec<String>,
    warnings: Vec<String>,
}

impl Tree {
    async fn of(
        cluster: &Cluster,
        cfg: &BackupConfiguration,
        all: &[BackupSession],
    ) -> Result<Self> {
        let ns = &cluster.namespace;
        let name = cfg.metadata.name.clone().unwrap_or_default();
        let spec = &cfg.spec;
        let status = cfg.status.clone().unwrap_or_default();
        let phase = status
            .phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "Unknown".into());
        let mut tree = Self {
            lines: vec![format!(
                "BackupConfiguration {ns}/{name}  {phase}  schedule {:?} ({}){}",
                spec.schedule,
                spec.time_zone.as_deref().unwrap_or("UTC"),
                if spec.paused == Some(true) {
                    "  PAUSED"
                } else {
                    ""
                }
            )],
            warnings: Vec::new(),
        };
        if phase != "Ready" {
            let why: Vec<String> = status
                .conditions
                .iter()
                .filter(|c| c.status != "True")
                .map(|c| format!("{}: {}", c.type_, c.message))
                .collect();
            tree.warnings
                .push(format!("configuration is {phase}: {}", why.join("; ")));
        }
        tree.references(cluster, cfg).await?;
        let mut mine: Vec<&BackupSession> =
            all.iter().filter(|s| s.spec.invoker.name == name).collect();
        mine.sort_by_key(|s| {
            std::cmp::Reverse(s.metadata.creation_timestamp.as_ref().map(output::utc))
        });
        tree.sessions(&mine);
        tree.running(cluster, &mine).await?;
        tree.schedule(cfg, &mine);
        Ok(tree)
    }

    /// The Repository and the AppBinding, found or missing.
    async fn references(&mut self, cluster: &Cluster, cfg: &BackupConfiguration) -> Result<()> {
        let ns = &cluster.namespace;
        let repo_ref = &cfg.spec.repository;
        let repo_ns = repo_ref.namespace_or(ns);
        let repos: kube::Api<Repository> = kube::Api::namespaced(cluster.client.clone(), repo_ns);
        match repos.get_opt(&repo_ref.name).await? {
            Some(r) => {
                let st = r.status.unwrap_or_default();
                self.lines.push(format!(
                    "├── Repository {repo_ns}/{}: found ({} snapshots, {}, integrity {})",
                    repo_ref.name,
                    st.snapshot_count.unwrap_or(0),
                    st.total_size.as_deref().unwrap_or("-"),
                    st.integrity
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "unknown".into())
                ));
                if st.integrity == Some(false) {
                    self.warnings.push(format!(
                        "Repository {repo_ns}/{} is damaged (integrity false)",
                        repo_ref.name
                    ));
                }
            }
            None => {
                self.lines.push(format!(
                    "├── Repository {repo_ns}/{}: MISSING",
                    repo_ref.name
                ));
                self.warnings.push(format!(
                    "Repository {repo_ns}/{} is missing: backups cannot run",
                    repo_ref.name
                ));
            }
        }
        self.appbinding(cluster, &cfg.spec.target.r#ref.name).await
    }

    /// The AppBinding, found or missing (unknown to a user who may not read AppBindings:
    /// they are KubeDB's kind, outside the `view` role).
    async fn appbinding(&mut self, cluster: &Cluster, target: &str) -> Result<()> {
        let ns = &cluster.namespace;
        let found = match cluster.api::<AppBinding>().get_opt(target).await {
            Ok(found) => Some(found.is_some()),
            Err(kube::Error::Api(e)) if e.code == 403 => None,
            Err(e) => return Err(e.into()),
        };
        let state = match found {
            Some(true) => "found",
            Some(false) => "MISSING",
            None => "unknown (you may not get appbindings)",
        };
        self.lines
            .push(format!("├── AppBinding {ns}/{target}: {state}"));
        if found == Some(false) {
            self.warnings.push(format!(
                "AppBinding {ns}/{target} is missing: backups cannot run until it is created"
            ));
        }
        Ok(())
    }

    /// The last sessions, newest first.
    fn sessions(&mut self, mine: &[&BackupSession]) {
        if mine.is_empty() {
            self.lines.push("├── Sessions: none yet".into());
            return;
        }
        self.lines.push("├── Sessions (newest first)".into());
        let shown = mine.len().min(LAST_SESSIONS);
        for (i, s) in mine.iter().take(shown).enumerate() {
            let branch = if i + 1 == shown {
                "└──"
            } else {
                "├──"
            };
            self.lines.push(format!("│   {branch} {}", session_line(s)));
        }
    }

    /// The Job and pod of a session that runs now.
    async fn running(&mut self, cluster: &Cluster, mine: &[&BackupSession]) -> Result<()> {
        let running = mine.iter().find(|s| {
            s.status
                .as_ref()
                .and_then(|st| st.phase)
                .is_some_and(|p| !p.is_final())
        });
        let Some(session) = running else {
            return Ok(());
        };
        let name = session.metadata.name.clone().unwrap_or_default();
        let selector = format!("{}={name}", cairn_api::naming::LABEL_SESSION);
        let pods = cluster
            .api::<Pod>()
            .list(&ListParams::default().labels(&selector))
            .await?;
        let job = cairn_api::naming::backup_job_name(&name);
        let pod = pods
            .items
            .first()
            .map(|p| {
                format!(
                    ", pod {} ({})",
                    p.metadata.name.clone().unwrap_or_default(),
                    p.status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        self.lines
            .push(format!("├── Running: session {name}, job {job}{pod}"));
        Ok(())
    }

    /// The next scheduled run, and whether the last success is too old.
    fn schedule(&mut self, cfg: &BackupConfiguration, mine: &[&BackupSession]) {
        let now = Utc::now();
        let next = cfg
            .status
            .as_ref()
            .and_then(|s| s.next_schedule_time.as_ref())
            .map(output::utc);
        let next = match (cfg.spec.paused, next) {
            (Some(true), _) => "none (paused)".to_string(),
            (_, Some(t)) => format!(
                "{} (in {})",
                t.format("%Y-%m-%d %H:%M:%S UTC"),
                output::short_duration((t - now).num_seconds())
            ),
            (_, None) => "unknown".into(),
        };
        self.lines.push(format!("└── Next run: {next}"));
        let Ok(schedule) = Schedule::parse(&cfg.spec.schedule, cfg.spec.time_zone.as_deref())
        else {
            return;
        };
        let last_success = mine
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|st| st.phase)
                    .is_some_and(|p| p == SessionPhase::Succeeded)
            })
            .filter_map(|s| s.metadata.creation_timestamp.as_ref().map(output::utc))
            .max();
        let since: Option<DateTime<Utc>> =
            last_success.or_else(|| cfg.metadata.creation_timestamp.as_ref().map(output::utc));
        if cfg.spec.paused != Some(true) && since.is_some_and(|t| schedule.overdue(t, now)) {
            let what = match last_success {
                Some(t) => format!(
                    "last successful backup {} ago",
                    output::short_duration((now - t).num_seconds())
                ),
                None => "no successful backup yet".into(),
            };
            self.warnings
                .push(format!("{what}: more than twice the schedule's interval"));
        }
    }

    fn render(&self, term: Terminal) -> String {
        let mut out = self.lines.join("\n") + "\n";
        for w in &self.warnings {
            out.push_str(&term.paint(Colour::Yellow, &format!("WARNING: {w}")));
            out.push('\n');
        }
        out + "\n"
    }
}

/// `name  Phase  duration  snapshot  reason`.
fn session_line(s: &BackupSession) -> String {
    let st = s.status.clone().unwrap_or_default();
    let phase = st
        .phase
        .map(|p| p.to_string())
        .unwrap_or_else(|| "Pending".into());
    let mut line = format!(
        "{}  {phase}  {}  age {}",
        s.metadata.name.clone().unwrap_or_default(),
        st.session_duration.as_deref().unwrap_or("-"),
        output::age(s.metadata.creation_timestamp.as_ref())
    );
    if let Some(snap) = &st.snapshot {
        line.push_str(&format!(
            "  snapshot {}",
            snap.id.get(..8).unwrap_or(&snap.id)
        ));
    }
    let outcome = crate::follow::Outcome::of(st.phase, &st.conditions, String::new());
    if let Some(reason) = outcome
        .filter(|o| o.phase != SessionPhase::Succeeded)
        .and_then(|o| o.reason)
    {
        line.push_str(&format!("  {reason}"));
    }
    line
}
