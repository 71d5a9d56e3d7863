//! Durations as Go reads and writes them (`30s`, `5m`, `1h30m`, `1.5h`, `500ms`, `1h0m0s`),
//! the syntax of Go's `time.ParseDuration`. Kubernetes users write durations that way, and the
//! Go side around the webhook does too: ESO's `refreshInterval`, the API server's `?timeout=`.
//! One parser serves flags, the config file, annotations and the audit; the callers add their
//! own limits (flags and annotations take no negative value, annotations no zero).
//!
//! A typo stays an error: no spaces, no units beyond Go's (`ns`, `us`/`µs`, `ms`, `s`, `m`,
//! `h`; no `d`), no number without a unit except a bare `0`.
//!
//! Logs and messages write durations with [`format()`] (the form the flags take) and instants
//! with [`rfc3339`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Go's units, in nanoseconds. `µs` is U+00B5 (micro sign), `μs` U+03BC (Greek mu); Go takes both.
const UNITS: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// 2^63: the magnitude limit of Go's `time.Duration` (an `int64` of nanoseconds).
const LIMIT: u64 = 1 << 63;

/// What Go's `time.ParseDuration` accepts, as Go's `time.Duration`: signed nanoseconds. An
/// optional sign, then one or more numbers with an optional fraction (`1.5`, `.5`, `5.`), each
/// followed by a unit; a bare `0` needs none. Magnitudes up to about 292 years.
pub fn parse_go(input: &str) -> Result<i64, String> {
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(format!("{input:?} is not a duration such as 30s, 1.5h or 1h30m"));
    }
    let too_large = || format!("{input:?} is too large (at most 2562047h47m16.854775807s)");
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(digits(rest));
        let (fraction, after) = match after.strip_prefix('.') {
            Some(f) => f.split_at(digits(f)),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(format!("{input:?} is not a duration such as 30s, 1.5h or 1h30m"));
        }
        // The unit runs to the next number.
        let (unit, next) = after.split_at(after.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(after.len()));
        if unit.is_empty() {
            return Err(format!("{input:?} has a number without a unit (ns, us, ms, s, m or h), e.g. 30s"));
        }
        let Some(&(_, per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!("{input:?} has an unknown unit {unit:?} (use ns, us, ms, s, m or h)"));
        };
        let mut value = leading_int(whole).ok_or_else(too_large)?;
        if value > LIMIT / per_unit {
            return Err(too_large());
        }
        value *= per_unit;
        let (numerator, scale) = leading_fraction(fraction);
        if numerator > 0 {
            // As Go computes it: float64 keeps fractions of an hour exact to the nanosecond.
            value += (numerator as f64 * (per_unit as f64 / scale)) as u64;
            if value > LIMIT {
                return Err(too_large());
            }
        }
        total += value;
        if total > LIMIT {
            return Err(too_large());
        }
        rest = next;
    }
    match (negative, i64::try_from(total)) {
        (false, Ok(nanos)) => Ok(nanos),
        (false, Err(_)) => Err(too_large()),
        // total <= 2^63, so its negation fits (2^63 itself is i64::MIN).
        (true, _) => Ok(0i64.wrapping_sub_unsigned(total)),
    }
}

/// A run of decimal digits, or `None` past 2^63 (as Go's `leadingInt`).
fn leading_int(digits: &str) -> Option<u64> {
    digits.bytes().try_fold(0u64, |x, d| {
        let next = x.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        (next <= LIMIT).then_some(next)
    })
}

/// The digits after a point as `numerator / scale`; digits beyond what fits are dropped, not
/// an error (as Go's `leadingFraction`).
fn leading_fraction(digits: &str) -> (u64, f64) {
    let mut numerator = 0u64;
    let mut scale = 1f64;
    for d in digits.bytes() {
        let Some(next) = numerator.checked_mul(10).map(|x| x + u64::from(d - b'0')).filter(|&x| x <= LIMIT) else {
            break;
        };
        numerator = next;
        scale *= 10.0;
    }
    (numerator, scale)
}

/// A duration for a flag, the config file or an annotation: Go's syntax, not negative.
pub fn parse(input: &str) -> Result<Duration, String> {
    let nanos = parse_go(input)?;
    u64::try_from(nanos).map(Duration::from_nanos).map_err(|_| format!("{input:?} is negative"))
}

/// Formats as Go users write it and as [`parse`] reads it back: `1h30m`, `5m`, `45s`, `1s500ms`.
pub fn format(d: Duration) -> String {
    let mut nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if nanos >= size {
            out.push_str(&format!("{}{unit}", nanos / size));
            nanos %= size;
        }
    }
    out
}

/// [`format()`] to the millisecond, for elapsed times, budgets and lifetimes in logs and
/// messages (`9s812ms` rather than `9s812ms345us678ns`).
pub fn format_ms(d: Duration) -> String {
    format(Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

/// A Unix time in seconds as RFC 3339 UTC (`2026-11-23T20:24:01Z`), how Kubernetes writes
/// times; the number itself if it is out of range.
pub fn rfc3339(unix_secs: i64) -> String {
    use k8s_openapi::chrono::{DateTime, SecondsFormat};
    DateTime::from_timestamp(unix_secs, 0)
        .map_or_else(|| unix_secs.to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
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

    const NS: i64 = 1;
    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    /// Go's own table (`parseDurationTests`, src/time/time_test.go).
    #[test]
    fn accepts_what_go_accepts() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12µs", 12 * US),
            ("12μs", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
            ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52_763_797_000 * NS),
            ("0.3333333333333333333h", 20 * M),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 6 * M),
            ("0.830103483285477580700h", 49 * M + 48 * S + 372_539_827 * NS),
            // What ESO and `kubectl` print.
            ("1h0m0s", H),
            ("1h0m0.5s", H + 500 * MS),
            ("1.5h", H + 30 * M),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_go(input), Ok(want), "{input:?}");
        }
    }

    /// Go's own table (`parseDurationErrorTests`).
    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "\u{FFFD}",
            "\u{FFFD} hello \u{FFFD} world",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "9223372036854776us",
            "3000000h",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            // And loose spellings of our own users.
            "5 m",
            " 5m",
            "5mm",
            "5m ",
            "1h-5m",
            "99999999999999999999h",
        ] {
            assert!(parse_go(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn messages_name_the_problem() {
        let message = |s: &str| parse(s).unwrap_err();
        assert!(message("5").contains("without a unit"), "{}", message("5"));
        assert!(message("5d").contains(r#"unknown unit "d""#), "{}", message("5d"));
        assert!(message("-5s").contains("negative"), "{}", message("-5s"));
        assert!(message("3000000h").contains("too large"), "{}", message("3000000h"));
        assert!(message("x").contains("not a duration"), "{}", message("x"));
        // The old parser called this "missing unit".
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn non_negative_parse_for_flags_and_annotations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1us"), Ok(Duration::from_micros(1)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("-0s"), Ok(Duration::ZERO));
        assert_eq!(parse("9223372036854775807ns"), Ok(Duration::from_nanos(i64::MAX as u64)));
        assert!(parse("-1ns").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["1h30m", "5m", "45s", "250ms", "1h1m1s", "1s500ms", "1ms1us1ns", "0s"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
        assert_eq!(format(parse("1.5h").unwrap()), "1h30m");
        assert_eq!(format_ms(Duration::from_nanos(9_812_345_678)), "9s812ms");
        assert_eq!(format_ms(Duration::from_secs_f64(1.9)), "1s900ms");
        assert_eq!(format_ms(Duration::from_secs(10)), "10s");
        assert_eq!(format_ms(Duration::from_micros(300)), "0s");
    }

    #[test]
    fn instants_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_465_441), "2026-11-23T20:24:01Z");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
    }
}
