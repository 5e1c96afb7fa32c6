//! Which packs' data an integrity check reads (`--read-data-subset`, a Repository's
//! `spec.integrityCheck.readDataSubset`): one rule for admission and the agent.

/// Which packs' data a check reads: `--read-data-subset`.
///
/// - empty: every pack with `--read-data`, none without;
/// - `all`: every pack;
/// - `n/m` (1 <= n <= m <= 256): the packs whose id's first byte is `n-1` modulo `m`, restic's
///   rule, so `restic check --read-data-subset=n/m` reads the same packs and the runs `1/m` to
///   `m/m` read each pack once;
/// - `day/m`: `n/m` with `n` the day (UTC, counted from 1970-01-01) modulo `m`, plus one: a
///   daily check with `day/7` reads every pack once a week, a seventh of them each day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadSubset {
    None,
    All,
    Part { n: u32, m: u32 },
}

impl ReadSubset {
    /// The subset `spec` names on `day` (days since 1970-01-01, UTC).
    pub fn parse(spec: &str, read_data: bool, day: i64) -> Result<Self, String> {
        let bad = || format!("{spec:?}: expected all, n/m (1 <= n <= m <= 256) or day/m");
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(if read_data { Self::All } else { Self::None });
        }
        if spec == "all" {
            return Ok(Self::All);
        }
        let (n, m) = spec.split_once('/').ok_or_else(bad)?;
        let m: u32 = m.trim().parse().map_err(|_| bad())?;
        if !(1..=256).contains(&m) {
            return Err(bad());
        }
        let n = match n.trim() {
            "day" => u32::try_from(day.rem_euclid(i64::from(m))).map_err(|_| bad())? + 1,
            n => n.parse().map_err(|_| bad())?,
        };
        if !(1..=m).contains(&n) {
            return Err(bad());
        }
        Ok(if m == 1 {
            Self::All
        } else {
            Self::Part { n, m }
        })
    }

    /// Whether the pack whose id starts with the byte `first` is read.
    pub fn selects(self, first: u8) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Part { n, m } => u32::from(first) % m == n - 1,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Self::None => "none".into(),
            Self::All => "all".into(),
            Self::Part { n, m } => format!("{n}/{m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_parse_and_cover_every_pack_once_in_m_runs() {
        let p = |s: &str, read: bool| ReadSubset::parse(s, read, 100);
        assert_eq!(p("", false).unwrap(), ReadSubset::None);
        assert_eq!(p("", true).unwrap(), ReadSubset::All);
        assert_eq!(p("all", false).unwrap(), ReadSubset::All);
        assert_eq!(p("1/1", false).unwrap(), ReadSubset::All);
        assert_eq!(p(" 2/5 ", false).unwrap(), ReadSubset::Part { n: 2, m: 5 });
        // Day 100 of the epoch, by sevens: the third part.
        assert_eq!(p("day/7", false).unwrap(), ReadSubset::Part { n: 3, m: 7 });
        assert_eq!(
            ReadSubset::parse("day/7", false, -1).unwrap(),
            ReadSubset::Part { n: 7, m: 7 }
        );
        for bad in [
            "0/5", "6/5", "1/0", "1/257", "x/3", "5", "10%", "day/", "1/2/3",
        ] {
            let e = p(bad, true).unwrap_err();
            assert!(e.contains("n/m"), "{bad}: {e}");
        }
        // Over seven days, day/7 reads every pack exactly once; restic's rule on the first byte.
        for first in 0..=255u8 {
            let reads = (0..7)
                .filter(|&day| {
                    ReadSubset::parse("day/7", false, 19_000 + day)
                        .unwrap()
                        .selects(first)
                })
                .count();
            assert_eq!(reads, 1, "pack {first:#x}");
        }
        assert!(ReadSubset::Part { n: 1, m: 2 }.selects(4));
        assert!(!ReadSubset::Part { n: 1, m: 2 }.selects(5));
        assert!(!ReadSubset::None.selects(0));
        assert_eq!(ReadSubset::Part { n: 3, m: 7 }.describe(), "3/7");
    }
}
