//! Admission rules for BackupSession.

use super::{Lookups, Verdict};
use crate::BackupSession;

/// Every error and warning of a BackupSession (`old` is set on UPDATE).
pub fn validate_backup_session(
    new: &BackupSession,
    old: Option<&BackupSession>,
    lookups: &dyn Lookups,
) -> Verdict {
    let _ = (new, old, lookups);
    Verdict::default()
}
