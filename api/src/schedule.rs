//! Schedule arithmetic: cron expressions in a time zone, the next slot, missed slots.
//!
//! A BackupConfiguration's `spec.schedule` is a standard five-field cron expression
//! (`minute hour day-of-month month day-of-week`) or one of the macros `@hourly`, `@daily`,
//! `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`; `spec.timeZone` names the IANA
//! zone the fields are read in (default UTC). Every function here is pure: the caller passes the
//! current time in.
//!
//! We validate the fields ourselves, for messages that name the field and its range, and hand a
//! plain numeric pattern to `croner` for the calendar search. Field semantics follow Vixie cron
//! and Kubernetes CronJobs: names are case-insensitive, `7` is Sunday like `0`, `a/n` means
//! `a-max/n`, `?` is `*` in the day fields, and when both day fields are restricted a day matches
//! either of them.
//!
//! # Daylight saving time
//!
//! Slots are wall-clock times in the zone. Where the clock skips or repeats, a schedule with a
//! single minute and a single hour (a *fixed-time* schedule such as `30 2 * * *`) behaves like
//! this:
//! - spring forward (the local time does not exist, e.g. 02:30 on 2026-03-29 in Europe/Berlin):
//!   the slot runs once, at the first instant after the gap (03:00 CEST);
//! - fall back (the local time happens twice, e.g. 02:30 on 2026-10-25 in Europe/Berlin): the
//!   slot runs once, at the first of the two instants (02:30 CEST).
//!
//! Any other schedule (`*/15 * * * *`, `0 1-3 * * *`, `30 2,14 * * *`) is an interval schedule:
//! it runs at every real instant whose wall-clock time matches, so a local time inside a skipped
//! hour has no slot and a repeated local time has two. This is the Open Cron Pattern
//! Specification's rule, as implemented by `croner`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, Direction};

/// The macros `spec.schedule` accepts, for error messages.
const MACROS: &str = "@hourly, @daily, @weekly, @monthly, @yearly, @annually, @midnight";
/// The five fields in order, for error messages.
const FIELDS: &str = "minute hour day-of-month month day-of-week";
/// How field items may be written, for error messages.
const ITEM_SYNTAX: &str =
    "as *, a value, a range a-b, a step */n, a-b/n or a/n, or a comma-separated list of these";

/// `missed_slot` walks at most this many slots; a longer backlog is counted as this many.
pub const MISSED_COUNT_LIMIT: u64 = 100_000;
/// `min_interval` looks at this many consecutive slots at most.
const MIN_INTERVAL_SAMPLE: usize = 2_000;
/// ... and stops at the first slot more than this many days after `from`.
const MIN_INTERVAL_HORIZON_DAYS: i64 = 366;

/// Keep the searches inside the years `croner` supports, away from chrono's limits.
const MIN_YEAR: i32 = 2;
const MAX_YEAR: i32 = 4_900;

/// A field of a five-field cron expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl CronField {
    const ALL: [CronField; 5] = [
        CronField::Minute,
        CronField::Hour,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
    ];

    /// The lowest and highest value as written (day-of-week allows 7 for Sunday).
    fn bounds(self) -> (u32, u32) {
        match self {
            CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 7),
        }
    }

    /// Names that stand for values, indexed from the lowest value.
    fn names(self) -> &'static [&'static str] {
        match self {
            CronField::Month => &[
                "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
            ],
            CronField::DayOfWeek => &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
            _ => &[],
        }
    }

    /// The values a user may write, for error messages.
    fn allowed(self) -> &'static str {
        match self {
            CronField::Minute => "0-59",
            CronField::Hour => "0-23",
            CronField::DayOfMonth => "1-31",
            CronField::Month => "1-12 or JAN-DEC",
            CronField::DayOfWeek => "0-7 (0 and 7 are Sunday) or SUN-SAT",
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        })
    }
}

/// Why a schedule or time zone was rejected. The Display text is meant for users; the caller
/// prefixes the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not five fields and not a macro.
    #[error(
        "{expr:?} is not a valid cron expression: expected 5 fields ({FIELDS}) or one of {MACROS}, found {found}{hint}",
        hint = if matches!(found, 6 | 7) { " (seconds and years fields are not supported)" } else { "" }
    )]
    FieldCount { expr: String, found: usize },
    /// Starts with `@` but is not one of the macros.
    #[error(
        "{expr:?} is not a valid cron expression: unknown macro, expected one of {MACROS} or 5 fields ({FIELDS})"
    )]
    UnknownMacro { expr: String },
    /// A `CRON_TZ=`/`TZ=` prefix, which Kubernetes CronJobs also reject.
    #[error(
        "{expr:?} is not a valid cron expression: a {prefix} prefix is not supported, set timeZone instead"
    )]
    TimeZonePrefix { expr: String, prefix: String },
    /// One field is malformed or out of range.
    #[error(
        "{expr:?} is not a valid cron expression: {field} {value:?}: {problem}; {field} takes {allowed} {ITEM_SYNTAX}",
        allowed = field.allowed()
    )]
    InvalidField {
        expr: String,
        field: CronField,
        value: String,
        problem: String,
    },
    /// Valid fields whose day-of-month never occurs in the selected months (`0 0 30 2 *`).
    #[error(
        "{expr:?} never runs: none of the selected months has the selected day-of-month (February has at most 29 days, April, June, September and November 30)"
    )]
    NeverRuns { expr: String },
    /// `croner` rejected a pattern our own checks let through; should not happen.
    #[error("{expr:?} is not a valid cron expression: {message}")]
    Unsupported { expr: String, message: String },
    /// `timeZone` is not a zone name chrono-tz knows.
    #[error(
        "{name:?} is not an IANA time zone, e.g. \"UTC\", \"Europe/Berlin\", \"America/New_York\""
    )]
    UnknownTimeZone { name: String },
}

/// Parses an IANA zone name (`timeZone`). Names are case-sensitive, as in Kubernetes.
pub fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| ScheduleError::UnknownTimeZone {
        name: name.to_owned(),
    })
}

/// What to do about slots that passed while nobody was scheduling (restart, failover, pause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedSlot {
    /// No slot in `(last_seen, now]`.
    None,
    /// Run `slot`, the most recent slot, now: it is at most `deadline` old. `skipped` older slots
    /// in the window are given up (count them in the skipped-slots metric).
    Run { slot: DateTime<Utc>, skipped: u64 },
    /// The most recent slot, `latest`, is more than `deadline` old: run nothing. All `count`
    /// slots in the window were skipped. Counts saturate at [`MISSED_COUNT_LIMIT`].
    Skip { latest: DateTime<Utc>, count: u64 },
}

/// A parsed `spec.schedule` in its `spec.timeZone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses a five-field cron expression or macro, read in `time_zone` (UTC when `None`).
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let tz = match time_zone {
            Some(name) => parse_time_zone(name)?,
            None => Tz::UTC,
        };
        let pattern = normalize(expr)?;
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&pattern)
            .map_err(|e| ScheduleError::Unsupported {
                expr: expr.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Schedule {
            expr: expr.to_owned(),
            cron,
            tz,
        })
    }

    /// The expression as the user wrote it.
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The zone the fields are read in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first slot strictly after `after`. `None` only when there is none before the year
    /// 4900 (or `after` is outside years 2-4900).
    pub fn next_slot(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !in_supported_years(after) {
            return None;
        }
        let local = after.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(next.with_timezone(&Utc))
    }

    /// The last slot at or before `at`.
    fn latest_slot(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !in_supported_years(at) {
            return None;
        }
        let local = at.with_timezone(&self.tz);
        let prev = self
            .cron
            .iter_from(local, Direction::Backward)
            .next()
            .filter(|slot| *slot <= local)?;
        Some(prev.with_timezone(&Utc))
    }

    /// The most recent slot in `(last_seen, now]` and whether it may still run: it may when
    /// `now - slot <= deadline` (`startingDeadlineSeconds`). Every other slot in the window is
    /// reported as skipped.
    pub fn missed_slot(
        &self,
        last_seen: DateTime<Utc>,
        now: DateTime<Utc>,
        deadline: Duration,
    ) -> MissedSlot {
        let mut latest = None;
        let mut count = 0u64;
        let mut cursor = last_seen;
        // Walking forward counts exactly and agrees with `next_slot` on every DST edge.
        while let Some(slot) = self.next_slot(cursor).filter(|slot| *slot <= now) {
            count += 1;
            latest = Some(slot);
            cursor = slot;
            if count >= MISSED_COUNT_LIMIT {
                // A long outage with a frequent schedule: stop counting, find the newest directly.
                latest = self.latest_slot(now).filter(|l| *l > slot).or(latest);
                break;
            }
        }
        match latest {
            None => MissedSlot::None,
            Some(slot) if now.signed_duration_since(slot) <= deadline => MissedSlot::Run {
                slot,
                skipped: count - 1,
            },
            Some(latest) => MissedSlot::Skip { latest, count },
        }
    }

    /// The schedule's interval at the slot `next`: the gap from it to the slot after (what
    /// `cairn_backup_schedule_interval_seconds` exports). `None` without a slot after it.
    pub fn interval_at(&self, next: DateTime<Utc>) -> Option<Duration> {
        Some(self.next_slot(next)? - next)
    }

    /// Whether a configuration whose last success was at `last_success` is overdue at `now`:
    /// no success for twice the interval at the next slot (the `CairnBackupOverdue` alert's
    /// rule).
    pub fn overdue(&self, last_success: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let interval = self.next_slot(now).and_then(|next| self.interval_at(next));
        interval.is_some_and(|i| now - last_success > i * 2)
    }

    /// The shortest gap between consecutive slots from `from` on, over a sample: up to 2,000
    /// slots, within a year (but always at least two slots). `None` if there are fewer than two
    /// slots. Used to warn about schedules that run very often.
    pub fn min_interval(&self, from: DateTime<Utc>) -> Option<Duration> {
        let mut prev = self.next_slot(from)?;
        let horizon = from.checked_add_signed(Duration::days(MIN_INTERVAL_HORIZON_DAYS))?;
        let mut best: Option<Duration> = None;
        for _ in 0..MIN_INTERVAL_SAMPLE {
            let Some(next) = self.next_slot(prev) else {
                break;
            };
            let gap = next.signed_duration_since(prev);
            best = Some(best.map_or(gap, |b| b.min(gap)));
            // A minute is the shortest gap a five-field schedule can have.
            if gap <= Duration::minutes(1) || next > horizon {
                break;
            }
            prev = next;
        }
        best
    }
}

fn in_supported_years(t: DateTime<Utc>) -> bool {
    (MIN_YEAR..=MAX_YEAR).contains(&t.year())
}

/// Turns a schedule into the numeric five-field pattern handed to croner, or says what is wrong.
fn normalize(expr: &str) -> Result<String, ScheduleError> {
    let trimmed = expr.trim();
    if trimmed.starts_with('@') {
        let pattern = match trimmed.to_ascii_lowercase().as_str() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            _ => {
                return Err(ScheduleError::UnknownMacro {
                    expr: expr.to_owned(),
                });
            }
        };
        return Ok(pattern.to_owned());
    }
    let parts: Vec<&str> = trimmed.split_whitespace().collect();
    if let Some(prefix) = parts.first().and_then(|p| {
        ["CRON_TZ=", "TZ="]
            .into_iter()
            .find(|pre| p.starts_with(pre))
    }) {
        return Err(ScheduleError::TimeZonePrefix {
            expr: expr.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    if parts.len() != 5 {
        return Err(ScheduleError::FieldCount {
            expr: expr.to_owned(),
            found: parts.len(),
        });
    }

    let mut fields = Vec::with_capacity(5);
    for (field, text) in CronField::ALL.into_iter().zip(&parts) {
        fields.push(
            parse_field(field, text).map_err(|problem| ScheduleError::InvalidField {
                expr: expr.to_owned(),
                field,
                value: (*text).to_owned(),
                problem,
            })?,
        );
    }

    let (dom, month, dow) = (&fields[2], &fields[3], &fields[4]);
    // Only when day-of-week is `*` does day-of-month alone decide, and then it may never occur.
    if dow.star && !dom.star {
        let longest = (1..=12u32)
            .filter(|m| month.values & (1 << m) != 0)
            .map(|m| match m {
                2 => 29,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            })
            .max()
            .unwrap_or(0);
        if !(1..=longest).any(|d| dom.values & (1 << d) != 0) {
            return Err(ScheduleError::NeverRuns {
                expr: expr.to_owned(),
            });
        }
    }

    Ok(fields
        .iter()
        .map(ParsedField::pattern)
        .collect::<Vec<_>>()
        .join(" "))
}

/// One field's selected values as a bit set (bit n = value n), and whether it was written as a
/// plain `*`, which changes how the two day fields combine.
struct ParsedField {
    values: u64,
    star: bool,
}

impl ParsedField {
    fn pattern(&self) -> String {
        if self.star {
            return "*".to_owned();
        }
        (0..64)
            .filter(|v| self.values & (1u64 << v) != 0)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Parses one field; the error is the problem, without the field's name.
fn parse_field(field: CronField, text: &str) -> Result<ParsedField, String> {
    let (min, max) = field.bounds();
    let day_field = matches!(field, CronField::DayOfMonth | CronField::DayOfWeek);
    let mut values = 0u64;
    let mut star = false;
    let items: Vec<&str> = text.split(',').collect();
    for item in &items {
        if item.is_empty() {
            return Err("has an empty list entry".to_owned());
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(step, max)?)),
            None => (*item, None),
        };
        let (low, high) = if range == "*" || (day_field && range == "?") {
            // Like Kubernetes: `*` and `*/1` leave a day field unrestricted, `*/2` does not.
            star = items.len() == 1 && step.unwrap_or(1) == 1;
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (low, high) = (parse_value(field, a)?, parse_value(field, b)?);
            if low > high {
                return Err(format!("the range {range:?} runs backwards"));
            }
            (low, high)
        } else {
            let value = parse_value(field, range)?;
            // `a/n` is `a-max/n`, as in Vixie cron and Kubernetes.
            (value, if step.is_some() { max } else { value })
        };
        for v in (low..=high).step_by(step.unwrap_or(1) as usize) {
            // Day-of-week 7 is Sunday, like 0.
            let v = if field == CronField::DayOfWeek && v == 7 {
                0
            } else {
                v
            };
            values |= 1 << v;
        }
    }
    Ok(ParsedField { values, star })
}

fn parse_step(text: &str, max: u32) -> Result<u32, String> {
    match parse_number(text) {
        Some(step) if (1..=max).contains(&step) => Ok(step),
        _ => Err(format!(
            "the step {text:?} must be a number from 1 to {max}"
        )),
    }
}

fn parse_value(field: CronField, text: &str) -> Result<u32, String> {
    let (min, max) = field.bounds();
    if let Some(value) = parse_number(text) {
        if (min..=max).contains(&value) {
            return Ok(value);
        }
        return Err(format!("{text} is out of range"));
    }
    if let Some(index) = field
        .names()
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return Ok(min + index as u32);
    }
    Err(format!("{text:?} is not a number or a name"))
}

/// ASCII digits only (`str::parse` would take `+5`); `None` if empty or too large.
fn parse_number(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_after_twice_the_interval() {
        let s = Schedule::parse("0 * * * *", None).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 10, 30, 0).unwrap();
        let slot = Utc.with_ymd_and_hms(2026, 12, 6, 11, 0, 0).unwrap();
        assert_eq!(s.interval_at(slot), Some(Duration::hours(1)));
        assert!(!s.overdue(now - Duration::minutes(119), now));
        assert!(s.overdue(now - Duration::minutes(121), now));
    }
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn sched(expr: &str) -> Schedule {
        Schedule::parse(expr, None).unwrap()
    }

    /// The first `n` slots strictly after `after`.
    fn slots(s: &Schedule, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut cursor = after;
        for _ in 0..n {
            cursor = s.next_slot(cursor).unwrap();
            out.push(cursor);
        }
        out
    }

    fn err(expr: &str) -> String {
        Schedule::parse(expr, None).unwrap_err().to_string()
    }

    #[test]
    fn macros() {
        let from = utc(2026, 5, 14, 10, 17); // a Thursday
        let cases = [
            ("@hourly", utc(2026, 5, 14, 11, 0)),
            ("@daily", utc(2026, 5, 15, 0, 0)),
            ("@midnight", utc(2026, 5, 15, 0, 0)),
            ("@weekly", utc(2026, 5, 17, 0, 0)), // Sunday
            ("@monthly", utc(2026, 6, 1, 0, 0)),
            ("@yearly", utc(2027, 1, 1, 0, 0)),
            ("@annually", utc(2027, 1, 1, 0, 0)),
            ("@DAILY", utc(2026, 5, 15, 0, 0)),
            ("  @hourly ", utc(2026, 5, 14, 11, 0)),
        ];
        for (expr, want) in cases {
            assert_eq!(sched(expr).next_slot(from), Some(want), "{expr}");
        }
    }

    #[test]
    fn lists_ranges_steps_names() {
        let from = utc(2026, 5, 14, 10, 17); // Thursday
        let first = |expr: &str| sched(expr).next_slot(from).unwrap();
        assert_eq!(first("*/5 * * * *"), utc(2026, 5, 14, 10, 20));
        assert_eq!(first("5,20,40 * * * *"), utc(2026, 5, 14, 10, 20));
        assert_eq!(first("0 9-17 * * *"), utc(2026, 5, 14, 11, 0));
        assert_eq!(first("0 0-12/4 * * *"), utc(2026, 5, 14, 12, 0));
        assert_eq!(first("10/20 * * * *"), utc(2026, 5, 14, 10, 30)); // 10-59/20
        assert_eq!(first("0 0 * * MON-FRI"), utc(2026, 5, 15, 0, 0)); // Friday
        assert_eq!(first("0 0 * * sat,sun"), utc(2026, 5, 16, 0, 0));
        assert_eq!(first("0 0 * * 7"), utc(2026, 5, 17, 0, 0)); // 7 is Sunday
        assert_eq!(first("0 0 1 JAN,jul *"), utc(2026, 7, 1, 0, 0));
        assert_eq!(first("0 0 1 MAR-DEC/3 *"), utc(2026, 6, 1, 0, 0));
        assert_eq!(first("0 0 ? * MON"), utc(2026, 5, 18, 0, 0));
        // Both day fields restricted: either matches (the 15th, or the next Monday).
        assert_eq!(first("0 0 15 * MON"), utc(2026, 5, 15, 0, 0));
        assert_eq!(first("0 0 20 * MON"), utc(2026, 5, 18, 0, 0));
        assert_eq!(
            slots(&sched("0,30 1-2 * * *"), from, 4),
            vec![
                utc(2026, 5, 15, 1, 0),
                utc(2026, 5, 15, 1, 30),
                utc(2026, 5, 15, 2, 0),
                utc(2026, 5, 15, 2, 30)
            ]
        );
    }

    #[test]
    fn next_slot_is_strictly_after() {
        let s = sched("*/5 * * * *");
        let at = utc(2026, 5, 14, 10, 20);
        assert_eq!(s.next_slot(at), Some(utc(2026, 5, 14, 10, 25)));
        let just_before = at - Duration::milliseconds(1);
        assert_eq!(s.next_slot(just_before), Some(at));
        let just_after = at + Duration::milliseconds(1);
        assert_eq!(s.next_slot(just_after), Some(utc(2026, 5, 14, 10, 25)));
    }

    #[test]
    fn next_slot_across_month_end_and_leap_day() {
        assert_eq!(
            sched("0 3 * * *").next_slot(utc(2026, 1, 31, 4, 0)),
            Some(utc(2026, 2, 1, 3, 0))
        );
        assert_eq!(
            sched("0 0 31 * *").next_slot(utc(2026, 1, 31, 1, 0)),
            Some(utc(2026, 3, 31, 0, 0)) // February and its short month are skipped
        );
        assert_eq!(
            sched("0 12 * * *").next_slot(utc(2028, 2, 28, 13, 0)),
            Some(utc(2028, 2, 29, 12, 0))
        );
        assert_eq!(
            sched("0 0 29 2 *").next_slot(utc(2026, 1, 1, 0, 0)),
            Some(utc(2028, 2, 29, 0, 0))
        );
        assert_eq!(
            sched("@yearly").next_slot(utc(2026, 12, 31, 23, 59)),
            Some(utc(2027, 1, 1, 0, 0))
        );
    }

    #[test]
    fn time_zone_shifts_slots() {
        let s = Schedule::parse("0 2 * * *", Some("America/New_York")).unwrap();
        assert_eq!(s.time_zone(), chrono_tz::America::New_York);
        // 02:00 EDT is 06:00 UTC.
        assert_eq!(
            s.next_slot(utc(2026, 7, 1, 0, 0)),
            Some(utc(2026, 7, 1, 6, 0))
        );
        assert_eq!(
            Schedule::parse("@daily", None).unwrap().time_zone(),
            Tz::UTC
        );
    }

    #[test]
    fn dst_spring_forward_runs_skipped_time_once_after_the_gap() {
        // Europe/Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let got = slots(&s, utc(2026, 3, 27, 12, 0), 4);
        assert_eq!(
            got,
            vec![
                utc(2026, 3, 28, 1, 30), // 02:30 CET
                utc(2026, 3, 29, 1, 0),  // 02:30 does not exist: 03:00 CEST, once
                utc(2026, 3, 30, 0, 30), // 02:30 CEST
                utc(2026, 3, 31, 0, 30),
            ]
        );
        // An interval schedule has no slot inside the skipped hour.
        let every_30 = Schedule::parse("*/30 * * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            slots(&every_30, utc(2026, 3, 29, 0, 15), 3),
            vec![
                utc(2026, 3, 29, 0, 30), // 01:30 CET
                utc(2026, 3, 29, 1, 0),  // 03:00 CEST
                utc(2026, 3, 29, 1, 30),
            ]
        );
    }

    #[test]
    fn dst_fall_back_runs_repeated_time_once() {
        // Europe/Berlin 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice,
        // at 00:30 UTC and 01:30 UTC.
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let got = slots(&s, utc(2026, 10, 23, 12, 0), 3);
        assert_eq!(
            got,
            vec![
                utc(2026, 10, 24, 0, 30), // 02:30 CEST
                utc(2026, 10, 25, 0, 30), // the first 02:30 only
                utc(2026, 10, 26, 1, 30), // 02:30 CET
            ]
        );
        // Asked from between the two 02:30s, the repeated one is not a slot either.
        assert_eq!(
            s.next_slot(utc(2026, 10, 25, 1, 0)),
            Some(utc(2026, 10, 26, 1, 30))
        );
        // And catching up after an outage over the night finds one slot, not two.
        assert_eq!(
            s.missed_slot(
                utc(2026, 10, 24, 12, 0),
                utc(2026, 10, 25, 1, 35),
                Duration::minutes(5)
            ),
            MissedSlot::Skip {
                latest: utc(2026, 10, 25, 0, 30),
                count: 1
            }
        );
        // An interval schedule runs on both passes of the repeated hour.
        let every_30 = Schedule::parse("*/30 * * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            slots(&every_30, utc(2026, 10, 24, 23, 45), 5),
            vec![
                utc(2026, 10, 25, 0, 0), // 02:00 CEST
                utc(2026, 10, 25, 0, 30),
                utc(2026, 10, 25, 1, 0), // 02:00 CET
                utc(2026, 10, 25, 1, 30),
                utc(2026, 10, 25, 2, 0), // 03:00 CET
            ]
        );
    }

    #[test]
    fn missed_slot_within_and_beyond_deadline() {
        let s = sched("*/10 * * * *");
        let deadline = Duration::seconds(300);
        let last_seen = utc(2026, 5, 14, 10, 0);

        // Nothing due yet.
        assert_eq!(
            s.missed_slot(last_seen, utc(2026, 5, 14, 10, 9), deadline),
            MissedSlot::None
        );
        // last_seen itself is not in the window.
        assert_eq!(
            s.missed_slot(last_seen, last_seen, deadline),
            MissedSlot::None
        );
        // Exactly at the slot, and within the deadline.
        assert_eq!(
            s.missed_slot(last_seen, utc(2026, 5, 14, 10, 10), deadline),
            MissedSlot::Run {
                slot: utc(2026, 5, 14, 10, 10),
                skipped: 0
            }
        );
        // Down for 10:10, 10:20, 10:30; back at 10:34: run 10:30, skip two.
        assert_eq!(
            s.missed_slot(last_seen, utc(2026, 5, 14, 10, 34), deadline),
            MissedSlot::Run {
                slot: utc(2026, 5, 14, 10, 30),
                skipped: 2
            }
        );
        // Exactly at the deadline still runs.
        assert_eq!(
            s.missed_slot(last_seen, utc(2026, 5, 14, 10, 35), deadline),
            MissedSlot::Run {
                slot: utc(2026, 5, 14, 10, 30),
                skipped: 2
            }
        );
        // A second past the deadline: all three are skipped.
        assert_eq!(
            s.missed_slot(
                last_seen,
                utc(2026, 5, 14, 10, 35) + Duration::seconds(1),
                deadline
            ),
            MissedSlot::Skip {
                latest: utc(2026, 5, 14, 10, 30),
                count: 3
            }
        );
        // A day down: 144 slots, all skipped.
        assert_eq!(
            s.missed_slot(last_seen, utc(2026, 5, 15, 10, 7), deadline),
            MissedSlot::Skip {
                latest: utc(2026, 5, 15, 10, 0),
                count: 144
            }
        );
    }

    #[test]
    fn missed_slot_saturates_on_long_backlogs() {
        let s = sched("* * * * *");
        let last_seen = utc(2026, 1, 1, 0, 0);
        let now = utc(2026, 12, 1, 0, 2) + Duration::seconds(30);
        assert_eq!(
            s.missed_slot(last_seen, now, Duration::minutes(5)),
            MissedSlot::Run {
                slot: utc(2026, 12, 1, 0, 2),
                skipped: MISSED_COUNT_LIMIT - 1
            }
        );
    }

    #[test]
    fn min_interval_samples() {
        let from = utc(2026, 5, 14, 10, 17);
        assert_eq!(
            sched("*/1 * * * *").min_interval(from),
            Some(Duration::minutes(1))
        );
        assert_eq!(sched("@daily").min_interval(from), Some(Duration::days(1)));
        assert_eq!(
            sched("*/5 * * * *").min_interval(from),
            Some(Duration::minutes(5))
        );
        // The short gap is only at the turn of the day.
        assert_eq!(
            sched("0 */7 * * *").min_interval(from),
            Some(Duration::hours(3))
        );
        // Rare schedules still yield their gap.
        assert_eq!(
            sched("0 0 29 2 *").min_interval(from),
            Some(utc(2032, 2, 29, 0, 0) - utc(2028, 2, 29, 0, 0))
        );
    }

    #[test]
    fn wrong_field_count() {
        assert_eq!(
            err("*/5 * *"),
            "\"*/5 * *\" is not a valid cron expression: expected 5 fields (minute hour \
             day-of-month month day-of-week) or one of @hourly, @daily, @weekly, @monthly, \
             @yearly, @annually, @midnight, found 3"
        );
        assert!(
            err("0 */5 * * * *").ends_with("found 6 (seconds and years fields are not supported)")
        );
        assert!(err("0 0 0 * * * 2026").contains("found 7"));
        assert!(err("").contains("found 0"));
        assert!(err("   ").contains("found 0"));
    }

    #[test]
    fn bad_fields_name_field_and_range() {
        assert_eq!(
            err("61 * * * *"),
            "\"61 * * * *\" is not a valid cron expression: minute \"61\": 61 is out of range; \
             minute takes 0-59 as *, a value, a range a-b, a step */n, a-b/n or a/n, or a \
             comma-separated list of these"
        );
        assert!(err("0 24 * * *").contains("hour \"24\": 24 is out of range; hour takes 0-23"));
        assert!(
            err("0 0 0 * *")
                .contains("day-of-month \"0\": 0 is out of range; day-of-month takes 1-31")
        );
        assert!(err("0 0 1 FOO *").contains(
            "month \"FOO\": \"FOO\" is not a number or a name; month takes 1-12 or JAN-DEC"
        ));
        assert!(
            err("0 0 * * MONDAY").contains("day-of-week takes 0-7 (0 and 7 are Sunday) or SUN-SAT")
        );
        assert!(err("*/0 * * * *").contains("the step \"0\" must be a number from 1 to 59"));
        assert!(err("0 5-1 * * *").contains("the range \"5-1\" runs backwards"));
        assert!(err("0,,5 * * * *").contains("has an empty list entry"));
        assert!(err("? * * * *").contains("minute \"?\""));
        assert!(err("+5 * * * *").contains("minute \"+5\""));
        assert!(err("0 0 L * *").contains("day-of-month \"L\""));
        assert!(err("0 0 * * 1#2").contains("day-of-week \"1#2\""));
        assert!(err("1-2-3 * * * *").contains("minute \"1-2-3\""));
        assert!(err("*/5/2 * * * *").contains("minute \"*/5/2\""));
    }

    #[test]
    fn other_rejections() {
        assert!(err("@every 5m").contains("unknown macro, expected one of @hourly"));
        assert!(err("@reboot").contains("unknown macro"));
        assert!(
            err("CRON_TZ=UTC 0 * * * *")
                .contains("a CRON_TZ= prefix is not supported, set timeZone instead")
        );
        assert_eq!(
            err("0 0 30 2 *"),
            "\"0 0 30 2 *\" never runs: none of the selected months has the selected \
             day-of-month (February has at most 29 days, April, June, September and November 30)"
        );
        assert!(err("0 0 31 4,6 *").contains("never runs"));
        // With a weekday too, either day field matches, so it does run.
        assert!(Schedule::parse("0 0 31 2 MON", None).is_ok());
    }

    #[test]
    fn time_zones() {
        assert_eq!(
            parse_time_zone("Europe/Berlin"),
            Ok(chrono_tz::Europe::Berlin)
        );
        assert_eq!(parse_time_zone("UTC"), Ok(Tz::UTC));
        assert_eq!(
            parse_time_zone("Mars/Base").unwrap_err().to_string(),
            "\"Mars/Base\" is not an IANA time zone, e.g. \"UTC\", \"Europe/Berlin\", \"America/New_York\""
        );
        assert!(parse_time_zone("").is_err());
        assert_eq!(
            Schedule::parse("@daily", Some("Mars/Base")),
            Err(ScheduleError::UnknownTimeZone {
                name: "Mars/Base".to_owned()
            })
        );
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let s = sched("* * * * *");
        for t in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            assert_eq!(s.next_slot(t), None);
            assert_eq!(s.min_interval(t), None);
            let _ = s.missed_slot(t, t, Duration::zero());
        }
        assert_eq!(
            s.missed_slot(
                DateTime::<Utc>::MAX_UTC,
                DateTime::<Utc>::MIN_UTC,
                Duration::zero()
            ),
            MissedSlot::None
        );
    }

    fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
        prop_oneof![
            // Mostly near today, sometimes anywhere chrono can represent.
            (1_600_000_000i64..2_200_000_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
            (-8_000_000_000_000i64..8_000_000_000_000)
                .prop_filter_map("in range", |s| DateTime::from_timestamp(s, 0)),
        ]
    }

    /// One field's items, mostly valid for a field whose values run from `lo` to `hi`, so that
    /// most generated expressions parse and reach the calendar search.
    fn field(lo: u32, hi: u32, names: &'static [&'static str]) -> BoxedStrategy<String> {
        let item = prop_oneof![
            4 => Just("*".to_owned()),
            4 => (lo..=hi).prop_map(|n| n.to_string()),
            2 => (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            2 => (1..=hi).prop_map(|n| format!("*/{n}")),
            1 => (lo..=hi, 1..=hi).prop_map(|(a, n)| format!("{a}/{n}")),
            1 => prop::sample::select(names).prop_map(str::to_owned),
            1 => prop::sample::select(vec!["?", "L", "5W", "1#2", "99", "*/0", "3-1", ""])
                .prop_map(str::to_owned),
        ];
        prop::collection::vec(item, 1..4)
            .prop_map(|items| items.join(","))
            .boxed()
    }

    fn cronish() -> impl Strategy<Value = String> {
        (
            field(0, 59, &["0"]),
            field(0, 23, &["0"]),
            field(1, 31, &["L", "?"]),
            field(1, 12, &["JAN", "feb", "MAR-DEC/2"]),
            field(0, 7, &["MON", "sun", "SUN-SAT", "?"]),
        )
            .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_strings_never_panic(expr in ".*", tz in ".*") {
            let _ = Schedule::parse(&expr, None);
            let _ = Schedule::parse(&expr, Some(&tz));
            let _ = parse_time_zone(&tz);
        }

        #[test]
        fn cron_like_strings_never_panic(
            expr in cronish(),
            tz in prop::sample::select(vec!["UTC", "Europe/Berlin", "Australia/Lord_Howe", "America/St_Johns"]),
            a in any_time(),
            gap in 0i64..3 * 86_400,
        ) {
            if let Ok(s) = Schedule::parse(&expr, Some(tz)) {
                if let Some(next) = s.next_slot(a) {
                    prop_assert!(next > a);
                }
                let now = a.checked_add_signed(Duration::seconds(gap)).unwrap_or(a);
                match s.missed_slot(a, now, Duration::minutes(5)) {
                    MissedSlot::None => {}
                    MissedSlot::Run { slot, .. } => prop_assert!(slot > a && slot <= now),
                    MissedSlot::Skip { latest, count } => {
                        prop_assert!(latest > a && latest <= now && count >= 1)
                    }
                }
                let _ = s.min_interval(a);
            }
        }
    }
}
