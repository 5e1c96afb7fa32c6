//! Conditions with `observedGeneration`, `reason`, `message` and a `lastTransitionTime` that
//! only moves when the status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Sets condition `type_` in `conditions`, keeping its transition time when its status is
/// unchanged.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if ok { "True" } else { "False" };
    set_status(conditions, type_, status, reason, message, generation, now);
}

/// As [`set`], with the status spelled out (`True`, `False` or `Unknown`).
pub fn set_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let message = message.into();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = now.clone();
        }
        c.status = status.into();
        c.reason = reason.into();
        c.message = message;
        c.observed_generation = generation;
        return;
    }
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    });
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The conditions of one status write: set at one moment, for one generation.
pub struct Writer {
    conditions: Vec<Condition>,
    generation: Option<i64>,
    now: Time,
}

impl Writer {
    /// Starts from the object's current `conditions`.
    pub fn new(conditions: Vec<Condition>, generation: Option<i64>) -> Self {
        Self {
            conditions,
            generation,
            now: now(),
        }
    }

    /// Sets condition `type_` (see [`set`]).
    pub fn set(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        let generation = self.generation;
        set(
            &mut self.conditions,
            type_,
            ok,
            reason,
            message,
            generation,
            &self.now,
        );
    }

    /// Sets condition `type_` to `True`, `False` or `Unknown` (`None`).
    pub fn set_known(
        &mut self,
        type_: &str,
        ok: Option<bool>,
        reason: &str,
        message: impl Into<String>,
    ) {
        let status = match ok {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        };
        let generation = self.generation;
        set_status(
            &mut self.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            &self.now,
        );
    }

    /// Sets condition `type_` to whether `what` was found: `Found`, "<what> found", or
    /// `NotFound`, "<what> not found".
    pub fn found(&mut self, type_: &str, found: bool, what: impl std::fmt::Display) {
        let (reason, said) = if found {
            ("Found", "found")
        } else {
            ("NotFound", "not found")
        };
        self.set(type_, found, reason, format!("{what} {said}"));
    }

    pub fn into_conditions(self) -> Vec<Condition> {
        self.conditions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_change() {
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(1).expect("t"));
        let t2 = Time(k8s_openapi::jiff::Timestamp::from_second(2).expect("t"));
        let mut c = Vec::new();
        set(&mut c, "Ready", true, "Found", "ok", Some(1), &t1);
        set(&mut c, "Ready", true, "Found", "still ok", Some(2), &t2);
        assert_eq!(c[0].last_transition_time, t1);
        assert_eq!(c[0].message, "still ok");
        set(&mut c, "Ready", false, "Missing", "gone", Some(2), &t2);
        assert_eq!(c[0].last_transition_time, t2);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_writer_says_what_was_found() {
        let mut w = Writer::new(Vec::new(), Some(3));
        w.found("TaskFound", true, "Task t");
        w.found(
            "TargetFound",
            false,
            format!("AppBinding {}/{}", "ns", "es"),
        );
        let c = w.into_conditions();
        assert_eq!(
            (c[0].status.as_str(), c[0].reason.as_str()),
            ("True", "Found")
        );
        assert_eq!(c[0].message, "Task t found");
        assert_eq!(c[1].reason, "NotFound");
        assert_eq!(c[1].message, "AppBinding ns/es not found");
        assert_eq!(c[1].observed_generation, Some(3));
    }
}
