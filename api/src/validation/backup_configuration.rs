//! Admission rules for BackupConfiguration.

use super::{Lookups, Verdict};
use crate::BackupConfiguration;

/// Every error and warning of a BackupConfiguration (`old` is set on UPDATE).
pub fn validate_backup_configuration(
    new: &BackupConfiguration,
    old: Option<&BackupConfiguration>,
    lookups: &dyn Lookups,
) -> Verdict {
    let _ = (new, old, lookups);
    Verdict::default()
}
