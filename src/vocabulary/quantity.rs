//! Kubernetes resource quantities (`100m`, `64Mi`, `1G`, `1e3`), just enough to compare them.
//!
//! The API server canonicalises quantities (`0.1` becomes `100m`), so a re-invoked webhook that
//! compared strings would think its own injected container had changed.

/// The numeric value of a quantity, or `None` if it is not one.
pub fn parse(s: &str) -> Option<f64> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number.starts_with('.') && number.len() == 1 {
        return None;
    }
    let base: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let value = base * multiplier;
    value.is_finite().then_some(value)
}

/// Whether two quantity strings denote the same amount.
pub fn same(a: &str, b: &str) -> bool {
    a == b
        || match (parse(a), parse(b)) {
            (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("100m"), Some(0.1));
        assert_eq!(parse("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("2"), Some(2.0));
        assert!(parse("abc").is_none());
        assert!(parse("").is_none());
        assert!(parse("1Xi").is_none());
    }

    #[test]
    fn canonical_forms_are_the_same() {
        assert!(same("0.1", "100m"));
        assert!(same("1024Ki", "1Mi"));
        assert!(!same("1M", "1Mi"));
    }
}
