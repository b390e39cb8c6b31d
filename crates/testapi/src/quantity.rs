//! Kubernetes resource quantities (`10Gi`, `500M`, `1.5Ti`, `1073741824`) as byte counts.

/// The number of bytes `quantity` stands for, rounded up to a whole byte as the API server
/// rounds storage; `None` if it is not a quantity.
///
/// Binary suffixes `Ki Mi Gi Ti Pi Ei`, decimal suffixes `k M G T P E`, plain numbers, a
/// decimal fraction (`1.5Gi`) and an exponent (`1e9`, `2E3`).
pub fn parse(quantity: &str) -> Option<u128> {
    let q = quantity.trim();
    let number_end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(number_end);
    let (multiplier, exponent): (u128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        s if s.starts_with(['e', 'E']) && s.len() > 1 => (1, s[1..].parse().ok()?),
        _ => return None,
    };
    let number = number.strip_prefix('+').unwrap_or(number);
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
    // value = digits × 10^(exponent − fraction digits) × multiplier, rounded up.
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let scale = exponent - i32::try_from(fraction.len()).ok()?;
    let scaled = digits.checked_mul(multiplier)?;
    if scale >= 0 {
        scaled.checked_mul(10u128.checked_pow(scale.unsigned_abs())?)
    } else {
        let divisor = 10u128.checked_pow(scale.unsigned_abs())?;
        Some(scaled.div_ceil(divisor))
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn quantities_parse_as_the_api_server_reads_them() {
        for (q, bytes) in [
            ("10Gi", 10 << 30),
            ("5Gi", 5 << 30),
            ("512Mi", 512 << 20),
            ("1Ki", 1024),
            ("2Ti", 2 << 40),
            ("1k", 1000),
            ("500M", 500_000_000),
            ("10G", 10_000_000_000),
            ("1T", 1_000_000_000_000),
            ("1073741824", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("0.5k", 500),
            ("1e3", 1000),
            ("1E9", 1_000_000_000),
            ("+3Mi", 3 << 20),
            ("0.1", 1), // rounded up to a whole byte
        ] {
            assert_eq!(parse(q), Some(bytes), "{q}");
        }
        for bad in ["", "Gi", "ten", "10 Gi", "10gi", "10GB", "1.2.3", "-1Gi"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        // 10G (decimal) is smaller than 10Gi (binary): the comparison a restore depends on.
        assert!(parse("10G") < parse("10Gi"));
    }
}
