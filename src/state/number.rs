//! Numbers as Redis reads and prints them: integers by `string2ll`'s strict rules (no sign `+`,
//! no leading zeros, no spaces), and `INCRBYFLOAT`'s decimal arithmetic.
//!
//! Redis adds floats as 80-bit `long double` and prints them with 17 decimals (`%.17Lf`, trailing
//! zeros trimmed). For the values people increment (amounts, scores: up to 17 fractional digits,
//! integer part under 10^20) the result of that is the exact decimal sum, which is what this
//! module computes, so `0.1 + 0.2` is `0.3` here as there. Beyond that Redis prints the rounding
//! noise of its binary format; this module falls back to 64-bit floats and prints theirs.

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

/// A parsed float: an exact decimal when it fits, else a binary float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Float {
    /// `mantissa × 10^-scale`
    Decimal {
        mantissa: i128,
        scale: u32,
    },
    Binary(f64),
}

/// Most digits kept after the point; Redis prints 17.
const PRINTED_DECIMALS: u32 = 17;

/// Parses a float as Redis's `string2ld` accepts it (`strtold`, no spaces around, no NaN).
pub fn parse_float(text: &[u8]) -> Option<Float> {
    let text = std::str::from_utf8(text).ok()?;
    if text.is_empty() || text.len() >= 5120 || text.starts_with(|c: char| c.is_whitespace()) {
        return None;
    }
    if let Some(decimal) = parse_decimal(text) {
        return Some(decimal);
    }
    let value: f64 = text.parse().ok()?;
    if value.is_nan() {
        return None;
    }
    Some(Float::Binary(value))
}

fn parse_decimal(text: &str) -> Option<Float> {
    let (number, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (negative, number) = match number.as_bytes().first()? {
        b'-' => (true, &number[1..]),
        b'+' => (false, &number[1..]),
        _ => (false, number),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits = whole.len() + fraction.len();
    if digits > 36 {
        return None;
    }
    let mut mantissa: i128 = 0;
    for byte in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa * 10 + i128::from(byte - b'0');
    }
    let mut scale = fraction.len() as i64 - i64::from(exponent);
    while scale < 0 {
        mantissa = mantissa.checked_mul(10)?;
        scale += 1;
    }
    if scale > 36 {
        return None;
    }
    if negative {
        mantissa = -mantissa;
    }
    Some(Float::Decimal {
        mantissa,
        scale: scale as u32,
    })
}

impl Float {
    fn to_f64(self) -> f64 {
        match self {
            Float::Decimal { mantissa, scale } => mantissa as f64 / 10f64.powi(scale as i32),
            Float::Binary(value) => value,
        }
    }

    /// The sum, or `None` if it is not finite.
    pub fn add(self, other: Float) -> Option<Float> {
        if let (
            Float::Decimal {
                mantissa: a,
                scale: a_scale,
            },
            Float::Decimal {
                mantissa: b,
                scale: b_scale,
            },
        ) = (self, other)
        {
            let scale = a_scale.max(b_scale);
            let sum = 10i128
                .checked_pow(scale - a_scale)
                .and_then(|factor| a.checked_mul(factor))
                .zip(
                    10i128
                        .checked_pow(scale - b_scale)
                        .and_then(|factor| b.checked_mul(factor)),
                )
                .and_then(|(a, b)| a.checked_add(b));
            if let Some(mantissa) = sum {
                return Some(Float::Decimal { mantissa, scale });
            }
        }
        let sum = self.to_f64() + other.to_f64();
        sum.is_finite().then_some(Float::Binary(sum))
    }

    /// Formats as Redis does: 17 decimals, trailing zeros and a trailing point removed.
    pub fn format(self) -> String {
        let text = match self {
            Float::Decimal { mantissa, scale } => format_decimal(mantissa, scale),
            Float::Binary(value) => format!("{value:.17}"),
        };
        let mut text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        };
        if text == "-0" {
            text = "0".into();
        }
        text
    }
}

/// `mantissa × 10^-scale` rounded half away from zero to [`PRINTED_DECIMALS`] places.
fn format_decimal(mut mantissa: i128, mut scale: u32) -> String {
    while scale > PRINTED_DECIMALS {
        let rest = mantissa % 10;
        mantissa /= 10;
        if rest >= 5 {
            mantissa += 1;
        } else if rest <= -5 {
            mantissa -= 1;
        }
        scale -= 1;
    }
    let negative = mantissa < 0;
    let digits = mantissa.unsigned_abs().to_string();
    let scale = scale as usize;
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    let sign = if negative { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
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
    fn decimal_sums_print_like_redis() {
        let sum = |a: &str, b: &str| {
            parse_float(a.as_bytes())
                .unwrap()
                .add(parse_float(b.as_bytes()).unwrap())
                .unwrap()
                .format()
        };
        assert_eq!(sum("0.1", "0.2"), "0.3");
        assert_eq!(sum("10", "0.5"), "10.5");
        assert_eq!(sum("5.0e3", "2.0e2"), "5200");
        assert_eq!(sum("-1.5", "1.5"), "0");
        assert_eq!(sum("3", "-10.25"), "-7.25");
        assert_eq!(sum("1", ".000000000000000001"), "1");
        assert_eq!(sum("0", "0.123456789012345678"), "0.12345678901234568");
        assert_eq!(parse_float(b" 1"), None);
        assert_eq!(parse_float(b"nan"), None);
        assert_eq!(parse_float(b"1x"), None);
    }
}
