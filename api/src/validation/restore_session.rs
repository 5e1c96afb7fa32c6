//! Admission rules for RestoreSession.

use super::{Lookups, Verdict};
use crate::RestoreSession;

/// Every error and warning of a RestoreSession (`old` is set on UPDATE).
pub fn validate_restore_session(
    new: &RestoreSession,
    old: Option<&RestoreSession>,
    lookups: &dyn Lookups,
) -> Verdict {
    let _ = (new, old, lookups);
    Verdict::default()
}
