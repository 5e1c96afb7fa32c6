//! The one duration syntax of cairn: Go's `time.ParseDuration`, as Stash's manifests write
//! durations (`timeOut`, `retryConfig.delay`), read the same way by admission, the controller
//! and the agent's flags (`--wait-timeout`).

use chrono::Duration;

/// Parses a duration as Go's `time.ParseDuration` does (Stash's manifests use it): a signed
/// sequence of decimal numbers, each with an optional fraction and a unit, e.g. `300ms`,
/// `-1.5h`, `2h45m`; units `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`. `0` needs no unit.
/// The error says what is wrong, without the value. At most about 292 years, as in Go.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::zero());
    }
    if rest.is_empty() {
        return Err("it is empty".to_owned());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(format!("{rest:?} does not start with a number"));
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("the number {int_digits}{frac_digits} has no unit")),
            other => return Err(format!("{other:?} is not a unit")),
        };
        let too_long = || "it is too long (at most about 292 years)".to_owned();
        let int: u128 = if int_digits.is_empty() {
            0
        } else if int_digits.len() > 30 {
            return Err(too_long());
        } else {
            int_digits.parse().map_err(|_| too_long())?
        };
        // Digits beyond nanosecond precision of an hour cannot matter: keep 18.
        let frac_kept = &frac_digits[..frac_digits.len().min(18)];
        let frac: u128 = if frac_kept.is_empty() {
            0
        } else {
            frac_kept.parse().map_err(|_| too_long())?
        };
        let scale = 10u128.pow(frac_kept.len() as u32);
        let part = int
            .checked_mul(nanos_per)
            .and_then(|x| x.checked_add(frac * nanos_per / scale))
            .ok_or_else(too_long)?;
        total = total.checked_add(part).ok_or_else(too_long)?;
        if total > i64::MAX as u128 {
            return Err(too_long());
        }
        rest = after;
    }
    let nanos = i64::try_from(total).map_err(|_| "it is too long".to_owned())?;
    Ok(Duration::nanoseconds(if neg { -nanos } else { nanos }))
}

/// A non-negative duration for a timer: Go's syntax, or a plain number of seconds (`300`).
pub fn parse_std_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|_| "it is too long".to_owned());
    }
    parse_go_duration(s)?
        .to_std()
        .map_err(|_| "it is negative".to_owned())
}

/// Whole seconds as Go prints a duration, `1h2m3s` (what `sessionDuration` shows); negative
/// values as `0s`.
pub fn format_seconds(seconds: i64) -> String {
    let s = seconds.max(0);
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_and_plain_seconds() {
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::minutes(90)));
        assert_eq!(
            parse_go_duration("-1.5s"),
            Ok(Duration::milliseconds(-1500))
        );
        assert!(parse_go_duration("5x").is_err());
        assert_eq!(
            parse_std_duration("45"),
            Ok(std::time::Duration::from_secs(45))
        );
        assert!(parse_std_duration("-1s").is_err());
        // Huge values are errors, never a panic.
        assert!(parse_std_duration("99999999999999999999999h").is_err());
        assert!(parse_std_duration("999999999999999999999999999").is_err());
    }

    #[test]
    fn seconds_print_as_go_and_parse_back() {
        for (secs, text) in [(5, "5s"), (125, "2m5s"), (3725, "1h2m5s"), (-3, "0s")] {
            assert_eq!(format_seconds(secs), text);
            assert_eq!(parse_go_duration(text), Ok(Duration::seconds(secs.max(0))));
        }
    }
}
