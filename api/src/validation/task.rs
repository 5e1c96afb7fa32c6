//! Admission rules for Task and Function.

use super::{Lookups, Verdict};
use crate::{Function, Task};

/// Every error and warning of a Task (`old` is set on UPDATE).
pub fn validate_task(new: &Task, old: Option<&Task>, lookups: &dyn Lookups) -> Verdict {
    let _ = (new, old, lookups);
    Verdict::default()
}

/// Every error and warning of a Function (`old` is set on UPDATE).
pub fn validate_function(new: &Function, old: Option<&Function>, lookups: &dyn Lookups) -> Verdict {
    let _ = (new, old, lookups);
    Verdict::default()
}
