//! Numbers as Redis reads and prints them: integers by `string2ll`'s strict rules (no sign `+`,
//! no leading zeros, no spaces), `INCRBYFLOAT`'s `long double` arithmetic, and `%.17g` for
//! doubles.
//!
//! Redis adds floats as x87 80-bit `long double` and prints them with `%.17Lf`, trailing zeros
//! trimmed, so `3000 + 0.1` is `3000.10000000000000009` there. [`LongDouble`] computes in the
//! same format (rustc_apfloat, a software float) and prints the exact decimal expansion the way
//! glibc does, so every sum prints as Redis prints it.

use rustc_apfloat::ieee::X87DoubleExtended;
use rustc_apfloat::{Float as _, Round, Status};

/// Parses a signed 64-bit integer with Redis's rules; `None` if it is not one.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [] => return None,
        [b'0'] => return Some(0),
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    if negative {
        if value > i64::MAX as u64 + 1 {
            return None;
        }
        Some((value as i64).wrapping_neg())
    } else {
        i64::try_from(value).ok()
    }
}

/// A `long double` as Redis's `INCRBYFLOAT` and `HINCRBYFLOAT` compute with: x87 80-bit extended
/// precision (64-bit significand), through rustc_apfloat's software implementation, so sums
/// round exactly as they do in redis-server on x86-64.
#[derive(Debug, Clone, Copy)]
pub struct LongDouble(X87DoubleExtended);

/// Longest float text Redis parses (`MAX_LONG_DOUBLE_CHARS`).
const MAX_FLOAT_CHARS: usize = 5 * 1024;

/// Parses a float as Redis's `string2ld` does (`strtold`, no space first, the whole text, no
/// NaN, no overflow, no underflow to zero).
pub fn parse_float(text: &[u8]) -> Option<LongDouble> {
    let text = std::str::from_utf8(text).ok()?;
    if text.is_empty() || text.len() >= MAX_FLOAT_CHARS {
        return None;
    }
    let (negative, unsigned) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = unsigned.to_ascii_lowercase();
    if lower == "inf" || lower == "infinity" {
        let inf = X87DoubleExtended::INFINITY;
        return Some(LongDouble(if negative { -inf } else { inf }));
    }
    // strtold's decimal syntax: digits with at most one point, at least one digit, then an
    // optional exponent with at least one digit.
    let (number, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_ok = !(whole.is_empty() && fraction.is_empty())
        && whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    if !digits_ok || !exponent_ok {
        return None;
    }
    // apfloat wants a digit before the point.
    let normalized = format!(
        "{}0{}{}",
        if negative { "-" } else { "" },
        number,
        exponent.map(|e| format!("e{e}")).unwrap_or_default()
    );
    let parsed = X87DoubleExtended::from_str_r(&normalized, Round::NearestTiesToEven).ok()?;
    let nonzero_digits = whole.bytes().chain(fraction.bytes()).any(|b| b != b'0');
    if parsed.status.contains(Status::OVERFLOW)
        || parsed.value.is_infinite()
        || (parsed.value.is_zero() && nonzero_digits)
    {
        return None;
    }
    Some(LongDouble(parsed.value))
}

impl LongDouble {
    pub const ZERO: LongDouble = LongDouble(X87DoubleExtended::ZERO);

    pub fn is_finite(self) -> bool {
        self.0.is_finite()
    }

    /// The sum, rounded to the nearest `long double`, or `None` if it is not finite.
    pub fn add(self, other: LongDouble) -> Option<LongDouble> {
        let sum = self.0.add_r(other.0, Round::NearestTiesToEven).value;
        sum.is_finite().then_some(LongDouble(sum))
    }

    /// Formats as Redis's `ld2string(LD_STR_HUMAN)`: `%.17Lf` (exact decimal expansion rounded
    /// half to even at 17 decimals, as glibc's printf), trailing zeros and point removed, and
    /// `-0` printed as `0`.
    pub fn format(self) -> String {
        let bits = self.0.to_bits();
        let negative = bits >> 79 & 1 == 1;
        let biased = (bits >> 64 & 0x7fff) as i32;
        let significand = bits as u64;
        // value = significand × 2^exponent
        let exponent = if biased == 0 {
            1 - 16383 - 63
        } else {
            biased - 16383 - 63
        };
        let (whole, fraction) = fixed_17(significand, exponent);
        let mut text = String::new();
        if negative {
            text.push('-');
        }
        text.push_str(&whole);
        let fraction = format!("{fraction:017}");
        let fraction = fraction.trim_end_matches('0');
        if !fraction.is_empty() {
            text.push('.');
            text.push_str(fraction);
        }
        if text == "-0" {
            text = "0".into();
        }
        text
    }
}

const TEN_17: u128 = 100_000_000_000_000_000;

/// `significand × 2^exponent` rounded half to even at 17 decimals: its integer digits and its
/// 17 decimals as an integer.
fn fixed_17(significand: u64, exponent: i32) -> (String, u64) {
    if exponent >= 0 {
        return (big_shifted(significand, exponent as u32), 0);
    }
    let shift = (-exponent) as u32;
    // significand × 10^17 < 2^121: exact in a u128.
    let scaled = u128::from(significand) * TEN_17;
    let units = if shift >= 122 {
        // Below 0.5 × 10^-17: rounds to zero.
        0
    } else {
        let quotient = scaled >> shift;
        let remainder = scaled & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        if remainder > half || (remainder == half && quotient & 1 == 1) {
            quotient + 1
        } else {
            quotient
        }
    };
    ((units / TEN_17).to_string(), (units % TEN_17) as u64)
}

/// The decimal digits of `significand × 2^shift`, through base-10⁹ limbs (the value can have
/// thousands of digits; no big-number crate is needed for one multiplication loop).
fn big_shifted(significand: u64, mut shift: u32) -> String {
    const BASE: u64 = 1_000_000_000;
    let mut limbs: Vec<u64> = Vec::new();
    let mut rest = significand;
    while rest > 0 {
        limbs.push(rest % BASE);
        rest /= BASE;
    }
    while shift > 0 {
        let step = shift.min(32);
        shift -= step;
        let mut carry = 0u64;
        for limb in &mut limbs {
            let product = (*limb << step) + carry;
            *limb = product % BASE;
            carry = product / BASE;
        }
        while carry > 0 {
            limbs.push(carry % BASE);
            carry /= BASE;
        }
    }
    let Some((last, rest)) = limbs.split_last() else {
        return "0".into();
    };
    let mut text = last.to_string();
    for limb in rest.iter().rev() {
        text.push_str(&format!("{limb:09}"));
    }
    text
}

/// A double as C's `%.17g` prints it (Redis 7.0's `addReplyDouble`), `inf`/`-inf` for the
/// infinities.
#[allow(dead_code)] // sorted-set scores will use it
pub fn format_double(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.into();
    }
    if value.is_nan() {
        return "nan".into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // 17 significant digits, rounded once; then %g's choice of notation.
    let scientific = format!("{value:.16e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("a decimal exponent");
    let trim = |text: &str| -> String {
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text.to_string()
        }
    };
    if !(-4..17).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exponent.abs())
    } else {
        trim(&format!("{value:.*}", (16 - exponent) as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"1.0",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn long_double_sums_print_like_redis() {
        let sum = |a: &str, b: &str| {
            parse_float(a.as_bytes())
                .unwrap()
                .add(parse_float(b.as_bytes()).unwrap())
                .unwrap()
                .format()
        };
        // Each expectation is what redis-server 7.0 on x86-64 replies.
        assert_eq!(sum("0", "0.024390243902439025"), "0.02439024390243902");
        assert_eq!(sum("0.02439024390243902", "-0.024390243902439025"), "0");
        assert_eq!(sum("3000", "0.1"), "3000.10000000000000009");
        assert_eq!(
            sum("3000.10000000000000009", "0.2"),
            "3000.30000000000000004"
        );
        assert_eq!(sum("0", "1e-20"), "0");
        assert_eq!(sum("10", "0.5"), "10.5");
        assert_eq!(sum("5.0e3", "2.0e2"), "5200");
        assert_eq!(sum("-1.5", "1.5"), "0");
        assert!(sum("0", "1.5e300").starts_with("15000000000000000000498001098614721663623"));
        assert_eq!(parse_float(b" 1").map(LongDouble::format), None);
        assert_eq!(parse_float(b"nan").map(LongDouble::format), None);
        assert_eq!(parse_float(b"1x").map(LongDouble::format), None);
        assert_eq!(parse_float(b"1e-99999").map(LongDouble::format), None);
        assert_eq!(parse_float(b"1e99999").map(LongDouble::format), None);
        assert!(!parse_float(b"+inf").unwrap().is_finite());
    }

    #[test]
    fn doubles_print_like_printf_17g() {
        assert_eq!(format_double(1.5), "1.5");
        assert_eq!(format_double(0.1), "0.10000000000000001");
        assert_eq!(format_double(100.0), "100");
        assert_eq!(format_double(1e20), "1e+20");
        assert_eq!(format_double(1.25e-5), "1.2500000000000001e-05");
        assert_eq!(format_double(-2.0), "-2");
        assert_eq!(format_double(f64::INFINITY), "inf");
    }
}
