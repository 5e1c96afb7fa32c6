//! `kubectl cairn unlock <repository>`: asks the controller to remove the repository's locks
//! whose holders are gone (a new value of the annotation `cairn.dev/unlock`), waits for the
//! outcome in `status.unlock`, and prints it. The controller's Job applies the agent's rule: a
//! live lock is never removed. The plugin itself reads no storage and needs no credentials.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use cairn_api::Repository;
use cairn_api::repository::{RepositoryUnlock, UNLOCK_ANNOTATION};
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::await_condition;

use crate::cli::Format;
use crate::client::Cluster;
use crate::output::{self, Colour, Terminal};

/// Sets a new unlock request on `name` and waits (at most `timeout`) for its outcome.
pub async fn run(
    cluster: &Cluster,
    name: &str,
    format: Option<Format>,
    timeout: Duration,
) -> Result<ExitCode> {
    let repo: Repository = cluster.get(name).await?;
    if repo.restic_backend().is_none() {
        bail!(
            "Repository {name:?} has driver Native: its snapshots' locks are the server's, \
             cairn holds none to remove"
        );
    }
    let request = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let patch = serde_json::json!({"metadata": {"annotations": {UNLOCK_ANNOTATION: request}}});
    let api = cluster.api::<Repository>();
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    eprintln!("repository.cairn.dev/{name}: removing the locks whose holders are gone...");
    let done = |r: Option<&Repository>| outcome(r, &request).is_some();
    let Ok(found) = tokio::time::timeout(timeout, await_condition(api, name, done)).await else {
        bail!(
            "no outcome within {}s (the request stays: the controller runs it when it can)",
            timeout.as_secs()
        );
    };
    let Some(unlock) = outcome(found?.as_ref(), &request) else {
        bail!("Repository {name:?} was deleted");
    };
    if let Some(format) = format.filter(|f| *f != Format::Wide) {
        print!("{}", output::one(&unlock, format)?);
    } else {
        print!("{}", report(name, &unlock, Terminal::detect()));
    }
    Ok(if unlock.error.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The outcome of `request`, once the controller recorded it.
fn outcome(repo: Option<&Repository>, request: &str) -> Option<RepositoryUnlock> {
    let unlock = repo?.status.as_ref()?.unlock.as_ref()?;
    (unlock.request == request).then(|| unlock.clone())
}

/// What a person reads: the counts, each live lock's holder, or why it failed. Holders come
/// from lock files, anyone's bytes: only their text reaches the terminal.
fn report(name: &str, u: &RepositoryUnlock, term: Terminal) -> String {
    if let Some(error) = &u.error {
        let failed = term.paint(Colour::Red, "Failed");
        return format!(
            "repository.cairn.dev/{name}: {failed}: {}\n",
            output::plain(error)
        );
    }
    let removed = u.removed.unwrap_or_default();
    let kept = u.kept.unwrap_or_default();
    let mut text = format!(
        "repository.cairn.dev/{name}: removed {removed} lock(s) whose holders are gone; kept \
         {kept} live lock(s)\n"
    );
    for holder in &u.holders {
        text.push_str(&format!("  kept: {}\n", output::plain(holder)));
    }
    let described = i64::try_from(u.holders.len()).unwrap_or(i64::MAX);
    if kept > described {
        text.push_str(&format!(
            "  and {} more (the Job's log lists them)\n",
            kept - described
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_each_live_holder_as_plain_text() {
        let u = RepositoryUnlock {
            request: "r".into(),
            removed: Some(1),
            kept: Some(3),
            holders: vec!["a lock of laptop\x1b]52;c;aGk=\x07 pid 7 since t".into()],
            ..Default::default()
        };
        let text = report("repo", &u, Terminal { tty: true });
        assert!(text.contains("removed 1 lock(s) whose holders are gone; kept 3 live"));
        assert!(text.contains("  kept: a lock of laptop"), "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(text.contains("and 2 more"), "{text}");
        let failed = RepositoryUnlock {
            error: Some("Job x failed".into()),
            ..Default::default()
        };
        assert!(report("repo", &failed, Terminal { tty: false }).contains("Failed: Job x failed"));
    }
}
