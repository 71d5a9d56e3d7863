//! Kubernetes resource quantities the way apimachinery's `resource.Quantity` reads and writes
//! them (`staging/src/k8s.io/apimachinery/pkg/api/resource/quantity.go`, `amount.go`,
//! `suffix.go`): parsed into a decimal value with the format of its suffix, and always written
//! back in canonical form. That is why the webhook sees `10m` where the manifest said `0.01`,
//! and `1Gi` where it said `1024Mi`.
//!
//! Values are held as `mantissa × 10^exponent` in an `i128`; quantities too large for that
//! (Go falls back to `inf.Dec`) are refused, which no test input comes near.

use std::cmp::Ordering;

/// The suffix family a quantity was written in; it decides the canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `Ki`, `Mi`, ... (powers of 1024).
    BinarySI,
    /// `n`, `u`, `m`, ``, `k`, `M`, ... (powers of 1000).
    DecimalSI,
    /// `e3`, `E-2`.
    DecimalExponent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exponent: i32,
    pub format: Format,
}

/// Go keeps at most nano precision: anything finer is rounded up on parse.
const NANO: i32 = -9;

impl Quantity {
    /// `ParseQuantity`: sign, digits, optional fraction, suffix. `None` where Go answers
    /// `ErrFormatWrong` or `ErrNumeric` (or the value leaves what an `i128` holds).
    pub fn parse(text: &str) -> Option<Quantity> {
        let s = text.as_bytes();
        if s.is_empty() {
            return None;
        }
        let mut pos = 0;
        let mut negative = false;
        match s[0] {
            b'-' => {
                negative = true;
                pos += 1;
            }
            b'+' => pos += 1,
            _ => {}
        }
        let int_start = pos;
        while pos < s.len() && s[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_digits = &text[int_start..pos];
        let mut frac_digits = "";
        if pos < s.len() && s[pos] == b'.' {
            pos += 1;
            let start = pos;
            while pos < s.len() && s[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_digits = &text[start..pos];
        }
        let suffix = &text[pos..];
        let (base, power, format) = interpret_suffix(suffix)?;
        let digits = format!("{int_digits}{frac_digits}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 36 {
            return None;
        }
        let mut mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
        let mut exponent = -(frac_digits.len() as i32);
        if base == 2 {
            mantissa = mantissa.checked_mul(1i128.checked_shl(power as u32)?)?;
        } else {
            exponent += power;
        }
        if negative {
            mantissa = -mantissa;
        }
        let mut q = Quantity { mantissa, exponent, format };
        q.round_up(NANO);
        q.normalise();
        Some(q)
    }

    /// `RoundUp(scale)`: the value at `10^scale` precision, rounded away from zero, as
    /// `SetDefaults_ResourceList` does with milli scale for every container resource.
    pub fn round_up(&mut self, scale: i32) {
        if self.exponent >= scale {
            return;
        }
        let shift = (scale - self.exponent) as u32;
        let Some(divisor) = 10i128.checked_pow(shift) else {
            // Far below the scale: any non-zero value rounds to one unit of it.
            self.mantissa = self.mantissa.signum();
            self.exponent = scale;
            return;
        };
        let (q, r) = (self.mantissa / divisor, self.mantissa % divisor);
        self.mantissa = q + r.signum();
        self.exponent = scale;
    }

    /// Trailing decimal zeros of the mantissa moved into the exponent.
    fn normalise(&mut self) {
        if self.mantissa == 0 {
            self.exponent = 0;
            return;
        }
        while self.mantissa % 10 == 0 {
            self.mantissa /= 10;
            self.exponent += 1;
        }
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// The value compared as `Quantity.Cmp` does (format ignored).
    pub fn cmp_value(&self, other: &Quantity) -> Ordering {
        let e = self.exponent.min(other.exponent);
        let scale = |q: &Quantity| q.mantissa.checked_mul(10i128.checked_pow((q.exponent - e) as u32)?);
        match (scale(self), scale(other)) {
            (Some(a), Some(b)) => a.cmp(&b),
            // Only reachable for values far apart in magnitude.
            _ => (self.exponent, self.mantissa).cmp(&(other.exponent, other.mantissa)),
        }
    }

    /// The value as an integer, if it is one.
    fn as_integer(&self) -> Option<i128> {
        if self.exponent < 0 {
            return None;
        }
        self.mantissa.checked_mul(10i128.checked_pow(self.exponent as u32)?)
    }

    /// `CanonicalizeBytes`: the one string Go writes for this value and format.
    pub fn canonical(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let mut format = self.format;
        if format == Format::BinarySI {
            let small = self.cmp_value(&Quantity { mantissa: -1024, exponent: 0, format }) == Ordering::Greater
                && self.cmp_value(&Quantity { mantissa: 1024, exponent: 0, format }) == Ordering::Less;
            if small || self.as_integer().is_none() {
                format = Format::DecimalSI;
            }
        }
        if format == Format::BinarySI {
            let mut value = self.as_integer().unwrap_or_default();
            let mut power = 0;
            while value % 1024 == 0 && power < 60 {
                value /= 1024;
                power += 10;
            }
            let suffix = match power {
                10 => "Ki",
                20 => "Mi",
                30 => "Gi",
                40 => "Ti",
                50 => "Pi",
                60 => "Ei",
                _ => "",
            };
            return format!("{value}{suffix}");
        }
        // AsCanonicalBytes: exponent brought down to a multiple of three.
        let (mut mantissa, mut exponent) = (self.mantissa, self.exponent);
        match exponent.rem_euclid(3) {
            1 => {
                mantissa *= 10;
                exponent -= 1;
            }
            2 => {
                mantissa *= 100;
                exponent -= 2;
            }
            _ => {}
        }
        let suffix = match (format, exponent) {
            (Format::DecimalExponent, 0) => String::new(),
            (Format::DecimalExponent, e) => format!("e{e}"),
            (_, -9) => "n".into(),
            (_, -6) => "u".into(),
            (_, -3) => "m".into(),
            (_, 0) => String::new(),
            (_, 3) => "k".into(),
            (_, 6) => "M".into(),
            (_, 9) => "G".into(),
            (_, 12) => "T".into(),
            (_, 15) => "P".into(),
            (_, 18) => "E".into(),
            (_, e) => format!("e{e}"),
        };
        format!("{mantissa}{suffix}")
    }
}

/// `(base, power, format)` of a suffix: `Mi` is `(2, 20, BinarySI)`, `k` is `(10, 3,
/// DecimalSI)`, `e-2` is `(10, -2, DecimalExponent)`.
fn interpret_suffix(suffix: &str) -> Option<(u32, i32, Format)> {
    let decimal = |p| Some((10, p, Format::DecimalSI));
    let binary = |p| Some((2, p, Format::BinarySI));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
            let rest = &s[1..];
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 4 {
                return None;
            }
            Some((10, rest.parse().ok()?, Format::DecimalExponent))
        }
        _ => None,
    }
}

/// The canonical form of a quantity string, or `None` if it is not one.
pub fn canonical(text: &str) -> Option<String> {
    Quantity::parse(text.trim()).map(|q| q.canonical())
}

/// Whether two quantity strings hold the same value (`Semantic.DeepEqual` compares
/// quantities with `Cmp`); anything unparsable compares as text.
pub fn same_value(a: &str, b: &str) -> bool {
    match (Quantity::parse(a), Quantity::parse(b)) {
        (Some(x), Some(y)) => x.cmp_value(&y) == Ordering::Equal,
        _ => a == b,
    }
}
