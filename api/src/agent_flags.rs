//! The one table of `cairn-agent` flags a user may pass through `target.args`: each flag has one
//! verdict, a tuning flag with its value's range, or a denial saying where the value comes from
//! instead. Admission denies what the table denies and the resolver refuses it again, so a
//! configuration admitted without the webhook cannot point the agent elsewhere either.

use crate::defaults::Direction;

/// What `target.args` may do with one flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagVerdict {
    /// A tuning flag of these directions, with the values it takes.
    Tuning {
        backup: bool,
        restore: bool,
        values: Values,
    },
    /// Not from `target.args`: where the value comes from instead.
    Denied(&'static str),
}

/// The values a tuning flag takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// A whole number in `min..=max`.
    Count { min: u64, max: u64 },
}

impl Values {
    fn check(self, value: &str) -> Result<(), String> {
        match self {
            Self::Count { min, max } => match value.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(()),
                _ => Err(format!(
                    "{value:?} is not a whole number from {min} to {max}"
                )),
            },
        }
    }
}

/// One flag of the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentFlag {
    /// The flag without its dashes.
    pub name: &'static str,
    pub verdict: FlagVerdict,
}

const fn tuning(name: &'static str, backup: bool, min: u64, max: u64) -> AgentFlag {
    AgentFlag {
        name,
        verdict: FlagVerdict::Tuning {
            backup,
            restore: !backup,
            values: Values::Count { min, max },
        },
    }
}

const fn denied(name: &'static str, why: &'static str) -> AgentFlag {
    AgentFlag {
        name,
        verdict: FlagVerdict::Denied(why),
    }
}

const FROM_APPBINDING: &str = "the database's address, TLS and credentials come from the AppBinding (spec.clientConfig, spec.secret): cairn decides where credentials are sent";
const FROM_REPOSITORY: &str = "where snapshots are stored comes from the Repository's spec.backend";
const FROM_RETENTION: &str = "retention comes from spec.retentionPolicy";
const FROM_IDENTITY: &str =
    "a snapshot's host and tags name the session that made it: set spec.target.alias";
const FROM_RULES: &str =
    "what a restore reads comes from spec.target.rules (snapshots, sourceHost)";
const FROM_STASH_ARGS: &str =
    "set it with Stash's Task param `args` (--match, --ignoreType, --includeType)";
const FROM_VOLUMES: &str =
    "the interim volume and the cache come from spec.interimVolumeTemplate and spec.tempDir";

/// Every flag of `cairn-agent backup` and `restore`, with its verdict.
pub const AGENT_FLAGS: &[AgentFlag] = &[
    tuning("page-size", true, 1, 10_000),
    tuning("workers", false, 1, 64),
    tuning("batch-docs", false, 1, 100_000),
    denied("url", FROM_APPBINDING),
    denied("server-name", FROM_APPBINDING),
    denied("credentials-dir", FROM_APPBINDING),
    denied("insecure-skip-tls-verify", FROM_APPBINDING),
    denied("repository", FROM_REPOSITORY),
    denied("region", FROM_REPOSITORY),
    denied("insecure-tls", FROM_REPOSITORY),
    denied("max-connections", FROM_REPOSITORY),
    denied("host", FROM_IDENTITY),
    denied("namespace", FROM_IDENTITY),
    denied("configuration", FROM_IDENTITY),
    denied("repository-namespace", FROM_RULES),
    denied("source-configuration", FROM_RULES),
    denied("tag", FROM_IDENTITY),
    denied("source-host", FROM_RULES),
    denied("snapshot", FROM_RULES),
    denied("keep-last", FROM_RETENTION),
    denied("keep-hourly", FROM_RETENTION),
    denied("keep-daily", FROM_RETENTION),
    denied("keep-weekly", FROM_RETENTION),
    denied("keep-monthly", FROM_RETENTION),
    denied("keep-yearly", FROM_RETENTION),
    denied("keep-tags", FROM_RETENTION),
    denied("prune", FROM_RETENTION),
    denied("dry-run", FROM_RETENTION),
    denied("interim-data-dir", FROM_VOLUMES),
    denied("enable-cache", FROM_VOLUMES),
    denied(
        "include",
        "set it with the Task param `include` (spec.task.params)",
    ),
    denied(
        "exclude",
        "set it with the Task param `exclude` (spec.task.params)",
    ),
    denied("match", FROM_STASH_ARGS),
    denied("skip", FROM_STASH_ARGS),
    denied(
        "wait-timeout",
        "set it with the Task param `waitTimeout` (spec.task.params)",
    ),
    denied(
        "slices",
        "set it with the Task param `slices` (spec.task.params)",
    ),
    denied(
        "rename-prefix",
        "set it with the Task param `renamePrefix` (spec.task.params)",
    ),
    denied(
        "rename-suffix",
        "set it with the Task param `renameSuffix` (spec.task.params)",
    ),
    denied(
        "rename-pattern",
        "set it with the Task param `renamePattern` (spec.task.params)",
    ),
    denied(
        "rename-replacement",
        "set it with the Task param `renameReplacement` (spec.task.params)",
    ),
    denied(
        "existing",
        "set it with the Task param `existing` (spec.task.params)",
    ),
    denied(
        "on-failure",
        "set it with the Task param `onFailure` (spec.task.params)",
    ),
];

/// The flag named `name` (without dashes).
pub fn agent_flag(name: &str) -> Option<&'static AgentFlag> {
    AGENT_FLAGS.iter().find(|f| f.name == name)
}

/// The tuning flags of a direction, for messages: `--page-size`.
pub fn tuning_flags(direction: Direction) -> Vec<String> {
    AGENT_FLAGS
        .iter()
        .filter(|f| f.allowed_in(direction))
        .map(|f| format!("--{}", f.name))
        .collect()
}

impl AgentFlag {
    fn allowed_in(&self, direction: Direction) -> bool {
        match self.verdict {
            FlagVerdict::Tuning {
                backup, restore, ..
            } => match direction {
                Direction::Backup => backup,
                Direction::Restore => restore,
            },
            FlagVerdict::Denied(_) => false,
        }
    }
}

/// Why `arg` may not be passed to the agent of `direction`, or `None` when it may.
pub fn check_arg(arg: &str, direction: Direction) -> Option<String> {
    let allowed = || {
        let flags = tuning_flags(direction);
        format!(
            "the flags target.args may set for a {} are {}",
            direction.as_str(),
            flags.join(", ")
        )
    };
    let Some((name, value)) = arg.strip_prefix("--").and_then(|a| a.split_once('=')) else {
        return Some(format!(
            "{:?} is not of the form --flag=value; {}",
            quote(arg),
            allowed()
        ));
    };
    let Some(flag) = agent_flag(name) else {
        return Some(format!(
            "--{} is not a flag of cairn-agent; {}",
            quote(name),
            allowed()
        ));
    };
    match flag.verdict {
        FlagVerdict::Denied(why) => Some(format!("--{name} may not be set here: {why}")),
        FlagVerdict::Tuning { values, .. } if flag.allowed_in(direction) => {
            values.check(value).err().map(|e| format!("--{name}: {e}"))
        }
        FlagVerdict::Tuning { .. } => Some(format!(
            "--{name} is not a flag of a {}; {}",
            direction.as_str(),
            allowed()
        )),
    }
}

/// At most 40 characters of a user's text in a message.
pub(crate) fn quote(s: &str) -> String {
    let mut q: String = s.chars().take(40).collect();
    if q.len() < s.len() {
        q.push('…');
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_flags_pass_with_good_values() {
        assert_eq!(check_arg("--page-size=2000", Direction::Backup), None);
        assert_eq!(check_arg("--workers=8", Direction::Restore), None);
        assert!(check_arg("--page-size=0", Direction::Backup).is_some());
        assert!(check_arg("--workers=8", Direction::Backup).is_some());
    }

    #[test]
    fn denied_and_unknown_flags_say_why() {
        let url = check_arg("--url=http://attacker.invalid:9200", Direction::Backup).unwrap();
        assert!(url.contains("AppBinding"), "{url}");
        assert!(!url.contains("attacker"), "{url}");
        let unknown = check_arg("--exfiltrate=yes", Direction::Backup).unwrap();
        assert!(unknown.contains("--page-size"), "{unknown}");
        assert!(check_arg("--page-size", Direction::Backup).is_some());
        assert!(check_arg("page-size=3", Direction::Backup).is_some());
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = AGENT_FLAGS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AGENT_FLAGS.len());
    }
}
