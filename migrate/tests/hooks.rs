//! `cairn-migrate` on hooks in the shapes of Stash's hook guides: the ones cairn runs stay as
//! written (and admission admits them); the others are removed, each with admission's reason.

use cairn_migrate::migrate;

const CONFIG: &str = "apiVersion: stash.appscode.com/v1beta1
kind: BackupConfiguration
metadata: {name: es-backup, namespace: demo}
spec:
  schedule: '*/30 * * * *'
  repository: {name: s3-repo}
  target:
    ref: {apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: es}
  retentionPolicy: {name: keep-last-5, keepLast: 5, prune: true}
  hooks:
";

fn migrated(hooks: &str) -> cairn_migrate::Migration {
    migrate(&format!("{CONFIG}{hooks}")).expect("migrates")
}

#[test]
/// Stash's Slack example (its e2e test's body, conditional included).
fn stashs_slack_hook_stays_as_written() {
    let hooks = "    preBackup:
      httpGet: {host: es.demo.svc, port: 9200, path: /_flush, scheme: HTTP}
    postBackup:
      executionPolicy: OnFailure
      httpPost:
        host: hooks.slack.com
        path: /services/XX/XXX/XXXX
        port: 443
        scheme: HTTPS
        httpHeaders:
        - {name: Content-Type, value: application/json}
        body: '{\"blocks\": [{\"type\": \"section\",\"text\": {\"type\": \"mrkdwn\",\"text\": \"{{if eq .Status.Phase `Succeeded`}}:white_check_mark: Backup succeeded for {{ .Namespace }}/{{.Target.Name}}{{else}}:x: Backup failed for {{ .Namespace }}/{{.Target.Name}} Reason: {{.Status.Error}}.{{end}}\"}}]}'
";
    let m = migrated(hooks);
    assert!(
        m.not_carried.iter().all(|l| !l.contains("hooks")),
        "{:?}",
        m.not_carried
    );
    assert!(m.refusals.is_empty(), "{:?}", m.refusals);
    for kept in [
        "preBackup:",
        "postBackup:",
        "executionPolicy: OnFailure",
        "{{.Status.Error}}.{{end}}",
    ] {
        assert!(m.yaml.contains(kept), "{kept:?} not in {}", m.yaml);
    }
}

#[test]
fn exec_hooks_are_kept_and_template_functions_removed_with_the_reason() {
    let hooks = "    preBackup:
      exec:
        command: [/bin/sh, -c, 'curl -XPOST localhost:9200/_flush']
      containerName: elasticsearch
    postBackup:
      executionPolicy: OnFailure
      httpPost:
        host: hooks.slack.com
        port: 443
        scheme: HTTPS
        body: '{{- $msg := dict \"type\" \"mrkdwn\" -}} {{ toJson $msg }}'
";
    let m = migrated(hooks);
    let said = m.not_carried.join("\n");
    for words in [
        "spec.hooks.postBackup removed: ",
        "function dict not defined",
    ] {
        assert!(said.contains(words), "{words:?} not in:\n{said}");
    }
    // Kept: whether its writer may exec is asked at admission (a SubjectAccessReview).
    assert!(!said.contains("preBackup"), "{said}");
    assert!(
        m.yaml.contains("containerName: elasticsearch"),
        "{}",
        m.yaml
    );
    assert!(!m.yaml.contains("postBackup"), "{}", m.yaml);
    assert!(m.refusals.is_empty(), "{:?}", m.refusals);
}
