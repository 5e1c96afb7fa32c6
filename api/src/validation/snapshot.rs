//! Who may write a Snapshot: the controller alone creates and edits them (from the agent's
//! inventory); a user may delete one, or annotate it ([`crate::snapshot::FORGET_ANNOTATION`])
//! to ask for its data to be forgotten, and nothing else.

use super::Verdict;
use crate::Snapshot;
use crate::snapshot::{FORGET_ANNOTATION, LABEL_REPOSITORY};

impl Snapshot {
    /// The verdict on a write by `user`; `old` is `None` on CREATE.
    pub fn check_write(&self, old: Option<&Snapshot>, user: &str, controller: &str) -> Verdict {
        let mut verdict = Verdict::default();
        if !controller.is_empty() && user == controller {
            return verdict;
        }
        let Some(old) = old else {
            verdict.error(
                "metadata",
                format!(
                    "Snapshot objects are written by cairn's controller from the repository's \
                     inventory, not by users; list a repository's snapshots with `kubectl get \
                     snapshots.cairn.dev -l {LABEL_REPOSITORY}=<name>`"
                ),
            );
            return verdict;
        };
        let unchanged = [
            ("spec", self.spec == old.spec),
            ("status", self.status == old.status),
            (
                "metadata.labels",
                self.metadata.labels == old.metadata.labels,
            ),
            (
                "metadata.ownerReferences",
                self.metadata.owner_references == old.metadata.owner_references,
            ),
        ];
        if self.forget_requested()
            && !old.forget_requested()
            && let Some(why) = self.forget_problem()
        {
            verdict.error("metadata.annotations", why);
        }
        for (path, same) in unchanged {
            if !same {
                verdict.error(
                    path,
                    format!(
                        "a Snapshot is cairn's record of the repository and cannot be edited; \
                         the only change a user may make is the annotation \
                         {FORGET_ANNOTATION}=true (to forget this snapshot's data), or delete \
                         the object (the data stays)"
                    ),
                );
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::new("r-12345678", Default::default());
        s.spec.snapshot_id = "12345678".repeat(8);
        s
    }

    #[test]
    fn a_native_snapshot_is_not_forgotten_by_annotation() {
        let ctl = "system:serviceaccount:cairn-system:cairn-controller";
        let mut old = snapshot();
        old.spec.driver = crate::snapshot::DRIVER_NATIVE.into();
        old.spec.snapshot_id = "team-a_logs_logs-1".into();
        let mut asked = old.clone();
        asked
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(FORGET_ANNOTATION.into(), "true".into());
        let denied = asked.check_write(Some(&old), "alice", ctl);
        assert!(
            denied.error_message().contains("retention policy"),
            "{}",
            denied.error_message()
        );
        old.spec.driver = crate::snapshot::DRIVER_RESTIC.into();
        asked.spec.driver = crate::snapshot::DRIVER_RESTIC.into();
        assert!(asked.check_write(Some(&old), "alice", ctl).allowed());
    }

    #[test]
    fn only_the_controller_creates_and_users_only_annotate() {
        let ctl = "system:serviceaccount:cairn-system:cairn-controller";
        let s = snapshot();
        assert!(s.check_write(None, ctl, ctl).allowed());
        let denied = s.check_write(None, "alice", ctl);
        assert!(!denied.allowed());
        assert!(
            denied
                .error_message()
                .contains("written by cairn's controller")
        );
        // An empty controller name (unset) admits nobody by name.
        assert!(!s.check_write(None, "", "").allowed());

        let mut annotated = s.clone();
        annotated
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(FORGET_ANNOTATION.into(), "true".into());
        assert!(annotated.check_write(Some(&s), "alice", ctl).allowed());

        let mut edited = annotated.clone();
        edited.spec.documents = Some(1);
        edited
            .metadata
            .labels
            .get_or_insert_default()
            .insert(LABEL_REPOSITORY.into(), "other".into());
        let v = edited.check_write(Some(&s), "alice", ctl);
        assert!(!v.allowed());
        let message = v.error_message();
        assert!(
            message.contains("spec:") && message.contains("metadata.labels:"),
            "{message}"
        );
        assert!(edited.check_write(Some(&s), ctl, ctl).allowed());
    }
}
