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
fn an_http_post_hook_with_the_summary_fields_stays_as_written() {
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
        body: '{\"text\": \"Backup {{ .Status.Phase }} for {{ .Namespace }}/{{ .Target.Name }}: {{ .Status.Error }}\"}'
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
        "{{ .Status.Error }}",
    ] {
        assert!(m.yaml.contains(kept), "{kept:?} not in {}", m.yaml);
    }
}

#[test]
fn exec_hooks_and_template_functions_are_removed_with_the_reason() {
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
        "spec.hooks.preBackup removed: exec: exec hooks are not supported yet",
        "spec.hooks.postBackup removed: ",
        "functions and pipelines are not supported yet",
        "spec.hooks removed",
    ] {
        assert!(said.contains(words), "{words:?} not in:\n{said}");
    }
    assert!(!m.yaml.contains("hooks:"), "{}", m.yaml);
    assert!(m.refusals.is_empty(), "{:?}", m.refusals);
}
