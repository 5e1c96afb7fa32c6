//! The values of the catalog Tasks' params that have a fixed set of meanings: `existing` and
//! `onFailure` of a restore, `waitTimeout` of both directions. One rule each, read by the
//! agent's flags (`--existing`, `--on-failure`, `--wait-timeout`) and by admission, which names
//! the param and the values it takes instead of letting the Job fail later.

use std::str::FromStr;
use std::time::Duration;

use crate::agent_flags::quote;

/// What a restore does with an index that already exists (param `existing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    Fail,
    Skip,
    Overwrite,
}

impl FromStr for Existing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "fail" => Ok(Self::Fail),
            "skip" => Ok(Self::Skip),
            "overwrite" => Ok(Self::Overwrite),
            other => Err(format!("{other:?}: expected fail, skip or overwrite")),
        }
    }
}

/// What a failed (or terminated) restore leaves of the indices it created (param `onFailure`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// They are deleted: a rerun starts clean.
    #[default]
    Delete,
    /// Their settings are put back, they are labelled (the mapping's `_meta`) and closed, for
    /// a person to inspect; a rerun needs `existing=overwrite` or their deletion.
    Close,
}

impl FromStr for OnFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "delete" => Ok(Self::Delete),
            "close" => Ok(Self::Close),
            other => Err(format!("{other:?}: expected delete or close")),
        }
    }
}

/// The longest wait a duration param (`waitTimeout`) accepts: longer is a mistake, and far
/// longer past the clock's range.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A wait: Go's syntax (`300s`, `5m`, `1h30m`) or plain seconds, at most [`MAX_WAIT`]; empty
/// means `default`.
pub fn parse_wait(s: &str, default: Duration) -> Result<Duration, String> {
    if s.trim().is_empty() {
        return Ok(default);
    }
    let d = crate::duration::parse_std_duration(s).map_err(|e| {
        format!(
            "{:?} is not a duration ({e}): write it like 300s, 5m or 1h30m",
            quote(s.trim())
        )
    })?;
    if d > MAX_WAIT {
        return Err(format!(
            "{:?} is longer than 24h, the most a wait may last",
            quote(s.trim())
        ));
    }
    Ok(d)
}

/// Why the value of the param `name` is not one it takes; `None` when it is, when the param
/// has no fixed meanings, or when the value is made of variables (known only per session).
pub fn check_param(name: &str, value: &str) -> Option<String> {
    if value.contains('$') {
        return None;
    }
    let err = match name {
        "existing" => value.parse::<Existing>().err(),
        "onFailure" => value.parse::<OnFailure>().err(),
        "waitTimeout" => parse_wait(value, MAX_WAIT).err(),
        _ => None,
    }?;
    Some(format!("param {name}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_fixed_meanings() {
        assert_eq!("".parse::<Existing>(), Ok(Existing::Fail));
        assert_eq!("skip".parse::<Existing>(), Ok(Existing::Skip));
        assert!("merge".parse::<Existing>().is_err());
        assert_eq!("".parse::<OnFailure>(), Ok(OnFailure::Delete));
        assert_eq!(" close ".parse::<OnFailure>(), Ok(OnFailure::Close));
        let e = check_param("onFailure", "keep").unwrap();
        assert_eq!(e, "param onFailure: \"keep\": expected delete or close");
        assert_eq!(check_param("onFailure", "${ON_FAILURE:=close}"), None);
        assert_eq!(check_param("include", "anything"), None);
    }

    #[test]
    fn huge_waits_are_errors_naming_the_param() {
        let five = Duration::from_secs(300);
        assert_eq!(parse_wait("", five), Ok(five));
        assert_eq!(parse_wait("1h30m", five), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_wait("24h", five), Ok(MAX_WAIT));
        for huge in [
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999h",
            "2562047h47m16.854775808s",
            "9223372036854775807ns1ns",
            "24h1ns",
            "99999999999999999999999999999999999999999h",
        ] {
            let e = check_param("waitTimeout", huge).expect(huge);
            assert!(e.starts_with("param waitTimeout: \""), "{e}");
            assert!(e.len() < 200, "{e}");
        }
        assert!(check_param("waitTimeout", "-5s").is_some());
        assert_eq!(check_param("waitTimeout", "10m"), None);
    }
}
