//! Admission rules for RestoreSession (`shared/spec/admission.md`).
//!
//! A RestoreSession shares BackupConfiguration's rules for its target, Repository, Task,
//! runtime settings, tempDir, interim volume and timeOut, and adds its own for restore rules:
//! at most one catch-all rule, no host in two rules, whole snapshots or paths but not both, and
//! snapshot ids that restic can find. Its spec is immutable once created.

use super::job::JobRequest;
use super::shared::{
    check_interim_volume_template, check_positive_duration, check_repository,
    check_runtime_settings, check_target, check_task, check_temp_dir,
};
use super::{Lookups, Policy, Verdict};
use crate::RestoreSession;
use crate::common::Rule;
use crate::dereference::{Dereferenced, References};
use crate::native::StorageDriver;

/// Every error and warning of a RestoreSession (`old` is set on UPDATE).
pub fn validate_restore_session(
    new: &RestoreSession,
    old: Option<&RestoreSession>,
    lookups: &dyn Lookups,
    policy: &Policy,
) -> Verdict {
    let mut v = Verdict::default();
    if let Some(old) = old {
        // Deletion and metadata/status updates always pass; a spec change never does.
        if new.metadata.deletion_timestamp.is_none() && old.spec != new.spec {
            v.error(
                "spec",
                "is immutable once the RestoreSession is created: only metadata and status may \
                 change; to restore with other settings, create a new RestoreSession",
            );
        }
        return v;
    }
    let ns = new.metadata.namespace.as_deref().unwrap_or_default();
    let spec = &new.spec;

    // The objects it names, looked up once (as resolution does).
    let found = Dereferenced::of(&References::from(new), lookups, None);
    check_target(&mut v, "spec.target", ns, &spec.target.r#ref, &found);
    if !spec.rules.is_empty() && !spec.target.rules.is_empty() {
        v.error(
            "spec.rules",
            "and spec.target.rules are both set: write the rules once, in spec.target.rules \
             (spec.rules is Stash's deprecated place for them)",
        );
    } else if !spec.rules.is_empty() {
        v.warn(
            "spec.rules",
            "is deprecated: cairn reads these rules as spec.target.rules (kept where you wrote \
             them); write them there",
        );
    }
    let (path, written) = if spec.target.rules.is_empty() {
        ("spec.rules", &spec.rules)
    } else {
        ("spec.target.rules", &spec.target.rules)
    };
    let rules: Vec<(String, &Rule)> = (written.iter().enumerate())
        .map(|(i, r)| (format!("{path}[{i}]"), r))
        .collect();
    // Snapshot names follow the Repository's driver (else the Task's, while it is missing).
    let driver = (found.repository.as_deref().map(|r| r.spec.driver()))
        .or(found.task.as_deref().map(|t| t.spec.driver()))
        .unwrap_or_default();
    check_rules(&mut v, &rules, driver);
    check_repository(&mut v, "spec.repository", ns, &spec.repository, &found);
    check_task(&mut v, "spec.task", spec.task.as_ref(), &found);
    super::native::check_task_driver(
        &mut v,
        "spec.task.name",
        found.task.as_deref(),
        found.repository.as_deref(),
    );
    check_runtime_settings(
        &mut v,
        "spec.runtimeSettings",
        spec.runtime_settings.as_ref(),
    );
    check_temp_dir(&mut v, "spec.tempDir", spec.temp_dir.as_ref());
    super::hooks::check_restore_hooks(&mut v, spec.hooks.as_ref());
    JobRequest::from(new).check(&mut v, policy);
    check_interim_volume_template(
        &mut v,
        "spec.interimVolumeTemplate",
        spec.interim_volume_template.as_ref(),
    );
    check_positive_duration(&mut v, "spec.timeOut", spec.time_out.as_deref());
    if let Some(why) = spec.driver.and_then(|d| d.refusal()) {
        v.error("spec.driver", why);
    }
    v
}

/// The rules, each with its path: one catch-all (empty `targetHosts`) at most, each host in one
/// rule, `snapshots` or `include`/`exclude` but not both, and valid snapshot ids.
fn check_rules(v: &mut Verdict, rules: &[(String, &Rule)], driver: StorageDriver) {
    let mut catch_all: Option<&str> = None;
    // host -> (index, path) of the first rule naming it
    let mut owner: std::collections::BTreeMap<&str, (usize, &str)> = Default::default();
    for (i, (rpath, rule)) in rules.iter().enumerate() {
        if rule.target_hosts.is_empty() {
            match catch_all {
                Some(first) => v.error(
                    format!("{rpath}.targetHosts"),
                    format!(
                        "is empty, like {first}.targetHosts: a rule with empty \
                         targetHosts applies to every host no other rule names, so only one rule \
                         may leave it empty; list the hosts this rule is for"
                    ),
                ),
                None => catch_all = Some(rpath),
            }
        }
        for (k, host) in rule.target_hosts.iter().enumerate() {
            let hpath = format!("{rpath}.targetHosts[{k}]");
            if host.is_empty() {
                v.error(
                    hpath,
                    "must not be empty: name a target host, e.g. \"host-0\"",
                );
                continue;
            }
            match owner.get(host.as_str()) {
                Some(&(first, first_path)) if first != i => v.error(
                    hpath,
                    format!(
                        "host {host:?} is already listed in {first_path}.targetHosts: each \
                         host may appear in one rule only; remove it from one of the rules"
                    ),
                ),
                Some(_) => {}
                None => {
                    owner.insert(host, (i, rpath));
                }
            }
        }
        check_rule_contents(v, rpath, rule, driver);
    }
}

/// One rule's own fields: `snapshots` or `include`/`exclude` but not both, valid snapshot ids,
/// a valid `sourceConfiguration`.
fn check_rule_contents(v: &mut Verdict, rpath: &str, rule: &Rule, driver: StorageDriver) {
    let has_paths = !rule.include.is_empty() || !rule.exclude.is_empty();
    if !rule.snapshots.is_empty() && has_paths {
        let other = if rule.include.is_empty() {
            "exclude"
        } else {
            "include"
        };
        v.error(
            format!("{rpath}.snapshots"),
            format!(
                "cannot be combined with {other} in the same rule: a rule restores either \
                 whole snapshots (snapshots) or paths of the latest snapshot \
                 (include/exclude); remove snapshots or {other}, or split it into two rules \
                 for different hosts"
            ),
        );
    }
    for (k, snapshot) in rule.snapshots.iter().enumerate() {
        if driver == StorageDriver::Native {
            if let Some(why) = crate::native::snapshot_name_problem(snapshot) {
                v.error(format!("{rpath}.snapshots[{k}]"), why);
            }
        } else if !is_snapshot_id(snapshot) {
            v.error(
                format!("{rpath}.snapshots[{k}]"),
                format!(
                    "{snapshot:?} is not a snapshot id: expected \"latest\" or 8 to 64 \
                     lowercase hex characters (a restic snapshot id or its prefix, as \
                     `restic snapshots` prints it)"
                ),
            );
        }
    }
    if let Some(config) = rule.source_configuration.as_deref()
        && !config.is_empty()
        && !crate::naming::is_dns_subdomain(config)
    {
        v.error(
            format!("{rpath}.sourceConfiguration"),
            format!(
                "{config:?} is not a BackupConfiguration name: expected a DNS subdomain \
                 (lowercase letters, digits, '-' and '.'); name the configuration of this \
                 namespace whose snapshots to restore, or leave it out"
            ),
        );
    }
}

/// `latest`, or 8 to 64 lowercase hex digits (restic ids are lowercase; prefixes match as text).
fn is_snapshot_id(s: &str) -> bool {
    s == "latest"
        || ((8..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}
