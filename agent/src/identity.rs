//! Whose a snapshot is: the identity tags cairn writes on every snapshot
//! (`cairn.dev/namespace=<ns>`, `cairn.dev/configuration=<name>`), which snapshots a
//! configuration's retention may touch, and which snapshots a restore in a namespace may read.
//!
//! Tenants share repositories (`usagePolicy`), and the restic host is the target alias that
//! several configurations share: host alone says nothing about whose a snapshot is.

use cairn_api::naming::{TAG_CONFIGURATION, TAG_NAMESPACE};
use rustic_core::repofile::SnapshotFile;

/// The namespace and configuration that make a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub configuration: String,
}

impl Identity {
    /// `None` unless both are given.
    pub fn new(namespace: &str, configuration: &str) -> Option<Self> {
        let (ns, cfg) = (namespace.trim(), configuration.trim());
        (!ns.is_empty() && !cfg.is_empty()).then(|| Self {
            namespace: ns.to_string(),
            configuration: cfg.to_string(),
        })
    }

    /// The restic tags that carry it.
    pub fn tags(&self) -> [String; 2] {
        [
            format!("{TAG_NAMESPACE}={}", self.namespace),
            format!("{TAG_CONFIGURATION}={}", self.configuration),
        ]
    }

    /// Whether `snapshot` carries this identity.
    pub fn owns(&self, snapshot: &SnapshotFile) -> bool {
        tag(snapshot, TAG_NAMESPACE) == Some(self.namespace.as_str())
            && tag(snapshot, TAG_CONFIGURATION) == Some(self.configuration.as_str())
    }
}

/// The value of the `key=value` tag of `snapshot`.
pub fn tag<'s>(snapshot: &'s SnapshotFile, key: &str) -> Option<&'s str> {
    snapshot
        .tags
        .iter()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

/// Whether `snapshot` carries no cairn identity (made before identities, by Stash, by restic).
pub fn is_foreign(snapshot: &SnapshotFile) -> bool {
    tag(snapshot, TAG_NAMESPACE).is_none()
}

/// Which snapshots a retention run may forget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetentionScope {
    /// One configuration's own snapshots (every backup's retention).
    Own(Identity),
    /// Only snapshots without cairn's identity: an admin's explicit `cairn-agent forget
    /// --without-identity`, never a configuration's retention.
    WithoutIdentity,
}

impl RetentionScope {
    pub fn admits(&self, snapshot: &SnapshotFile) -> bool {
        match self {
            Self::Own(identity) => identity.owns(snapshot),
            Self::WithoutIdentity => is_foreign(snapshot),
        }
    }
}

/// What a restore in a namespace may read from a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreScope {
    /// The RestoreSession's namespace.
    pub namespace: String,
    /// The Repository's namespace: its owner, who may restore any snapshot.
    pub repository_namespace: String,
    /// Only this configuration's snapshots, for `latest` (after a disaster, by name).
    pub configuration: Option<String>,
}

impl RestoreScope {
    /// `None` without a namespace (the CLI used by hand reads everything).
    pub fn new(namespace: &str, repository_namespace: &str, configuration: &str) -> Option<Self> {
        let ns = namespace.trim();
        (!ns.is_empty()).then(|| Self {
            namespace: ns.to_string(),
            repository_namespace: Some(repository_namespace.trim())
                .filter(|r| !r.is_empty())
                .unwrap_or(ns)
                .to_string(),
            configuration: Some(configuration.trim())
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        })
    }

    fn owns_repository(&self) -> bool {
        self.namespace == self.repository_namespace
    }

    /// Whether `latest` may resolve to `snapshot`: this namespace's snapshots (of the named
    /// configuration, when one is named), and snapshots without identity when the Repository
    /// is this namespace's own.
    pub fn latest_candidate(&self, snapshot: &SnapshotFile) -> bool {
        match tag(snapshot, TAG_NAMESPACE) {
            Some(ns) => {
                ns == self.namespace
                    && self
                        .configuration
                        .as_deref()
                        .is_none_or(|c| tag(snapshot, TAG_CONFIGURATION) == Some(c))
            }
            None => self.owns_repository() && self.configuration.is_none(),
        }
    }

    /// Why a snapshot named by id may not be restored here; `Ok` when it may.
    pub fn may_restore(&self, snapshot: &SnapshotFile) -> Result<(), String> {
        if self.owns_repository() {
            return Ok(());
        }
        let short = snapshot.id.to_hex();
        let short = short.get(..8).unwrap_or_default();
        match tag(snapshot, TAG_NAMESPACE) {
            Some(ns) if ns == self.namespace => Ok(()),
            Some(ns) => Err(format!(
                "snapshot {short} was made in namespace {ns:?}: a restore in namespace {:?} \
                 reads only its own namespace's snapshots (the Repository's namespace {:?} may \
                 restore any)",
                self.namespace, self.repository_namespace
            )),
            None => Err(format!(
                "snapshot {short} carries no cairn identity (made before cairn tagged snapshots, \
                 or by Stash or restic): only the Repository's namespace {:?} may restore it",
                self.repository_namespace
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(tags: &[&str]) -> SnapshotFile {
        let mut s = SnapshotFile::default();
        let list = tags.join(",").parse().expect("tags");
        s.set_tags(vec![list]);
        s
    }

    #[test]
    fn retention_touches_only_its_own_identity() {
        let a = Identity::new("team-a", "nightly").expect("identity");
        let scope = RetentionScope::Own(a.clone());
        let tags = a.tags();
        let own = snapshot(&[&tags[0], &tags[1], "session=x"]);
        let other_cfg = snapshot(&[&tags[0], "cairn.dev/configuration=hourly"]);
        let other_ns = snapshot(&["cairn.dev/namespace=team-b", &tags[1]]);
        let foreign = snapshot(&["session=x"]);
        assert!(scope.admits(&own));
        assert!(!scope.admits(&other_cfg));
        assert!(!scope.admits(&other_ns));
        assert!(!scope.admits(&foreign));
        assert!(RetentionScope::WithoutIdentity.admits(&foreign));
        assert!(!RetentionScope::WithoutIdentity.admits(&own));
        assert!(Identity::new("", "x").is_none());
    }

    #[test]
    fn restores_read_their_own_namespace() {
        let mine = snapshot(&["cairn.dev/namespace=b", "cairn.dev/configuration=c"]);
        let theirs = snapshot(&["cairn.dev/namespace=a", "cairn.dev/configuration=c"]);
        let foreign = snapshot(&[]);
        let guest = RestoreScope::new("b", "a", "").expect("scope");
        assert!(guest.latest_candidate(&mine));
        assert!(!guest.latest_candidate(&theirs));
        assert!(!guest.latest_candidate(&foreign));
        assert!(guest.may_restore(&mine).is_ok());
        let why = guest.may_restore(&theirs).unwrap_err();
        assert!(why.contains("namespace \"a\""), "{why}");
        assert!(guest.may_restore(&foreign).is_err());
        let owner = RestoreScope::new("a", "a", "").expect("scope");
        assert!(owner.latest_candidate(&foreign));
        assert!(owner.may_restore(&mine).is_ok());
        let named = RestoreScope::new("b", "a", "other").expect("scope");
        assert!(!named.latest_candidate(&mine));
    }
}
