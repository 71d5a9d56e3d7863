//! Go-style durations (`30s`, `5m`, `1h30m`) as used in annotations and the config file.
//!
//! Kubernetes users write durations the way Go prints them, so we accept exactly that shape
//! (whole numbers with `h`, `m`, `s`, `ms` units) and nothing looser: a typo must be an error,
//! not a surprising interval.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Parses `1h30m`, `45s`, `500ms`. At least one component; no sign, no spaces, no fractions.
pub fn parse(input: &str) -> Result<Duration, String> {
    if input.is_empty() {
        return Err("empty duration".into());
    }
    let bytes = input.as_bytes();
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("{input:?} is not a duration like 30s, 5m or 1h30m"));
        }
        let number: u64 = input[start..i].parse().map_err(|_| format!("{input:?}: number too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let millis_per_unit = match &input[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(format!("{input:?}: missing unit (use s, m or h)")),
            other => return Err(format!("{input:?}: unknown unit {other:?} (use ms, s, m or h)")),
        };
        total = number
            .checked_mul(millis_per_unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{input:?}: duration too large"))?;
    }
    Ok(Duration::from_millis(total))
}

/// Formats the way Go users expect to read it back: `1h30m`, `5m`, `45s`, `250ms`.
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// A duration that (de)serialises as a Go-style string in config files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(HumanDuration).map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn rejects_loose_input() {
        for bad in ["", "5", "m", "5 m", "-5s", "1.5h", "5d", "5mm", " 5m", "99999999999999999999h"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["1h30m", "5m", "45s", "250ms", "1h1m1s"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
