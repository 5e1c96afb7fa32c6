//! Admission rules for Repository.

use super::{Lookups, Verdict};
use crate::Repository;

/// Every error and warning of a Repository (`old` is set on UPDATE).
pub fn validate_repository(
    new: &Repository,
    old: Option<&Repository>,
    lookups: &dyn Lookups,
) -> Verdict {
    let _ = (new, old, lookups);
    Verdict::default()
}
