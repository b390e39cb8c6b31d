//! The value of `haproxy.router.openshift.io/timeout` as the OpenShift router reads it.
//!
//! What the router does, from github.com/openshift/router (commit 4b401a86, 2026-08):
//!
//! - `images/router/haproxy/conf/haproxy-config.template` passes the annotation through
//!   `firstMatch $timeSpecPattern` with `$timeSpecPattern = [1-9][0-9]*(us|ms|s|m|h|d)?`,
//!   anchored as `\A(?:…)\z` (`firstMatch` in `pkg/router/template/template_helper.go`). A value
//!   that does not match becomes the empty string and no `timeout` line is written for the
//!   route: the value is **ignored, without any error on the route**, and the router-wide
//!   default applies (`timeout server` from `ROUTER_DEFAULT_SERVER_TIMEOUT`, 30s unless the
//!   IngressController's `tuningOptions.serverTimeout` says otherwise). So `0`, `010s`,
//!   `1.5m`, `10min`, `5 min`, `600S` and ` 600s` all leave 30 s.
//! - A matching value goes through `clipHAProxyTimeoutValue` (same file), which parses it with
//!   `haproxytime.ParseDuration` (`pkg/router/template/util/haproxytime/duration_parser.go`):
//!   **no unit means milliseconds**, so `600` is 0.6 s. A value whose number overflows an int64
//!   of nanoseconds, or that is above `HaproxyMaxTimeout` = `2147483647ms` (about 24.8 days,
//!   `pkg/router/template/util/util.go`), is **clipped** to `2147483647ms`, not ignored.
//! - In HTTP backends (no TLS, `edge`, `reencrypt`) the value becomes `timeout server`. In
//!   `passthrough` backends (HAProxy `mode tcp`) it becomes `timeout tunnel`, and only when
//!   `haproxy.router.openshift.io/timeout-tunnel` does not match the pattern (that one comes
//!   first); without either, the router-wide `timeout tunnel` applies
//!   (`ROUTER_DEFAULT_TUNNEL_TIMEOUT`, 1h). See [`audit`](crate::audit()).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// The route annotation that sets HAProxy's server timeout (tunnel timeout for passthrough).
pub const TIMEOUT_ANNOTATION: &str = "haproxy.router.openshift.io/timeout";

/// The route annotation that sets HAProxy's tunnel timeout; for passthrough routes it takes
/// precedence over [`TIMEOUT_ANNOTATION`] when its value matches the router's pattern.
pub const TIMEOUT_TUNNEL_ANNOTATION: &str = "haproxy.router.openshift.io/timeout-tunnel";

/// The units the router accepts, in the order of its pattern.
pub const UNITS: [&str; 6] = ["us", "ms", "s", "m", "h", "d"];

/// A timeout the router uses, with microsecond resolution (its smallest unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timeout(Duration);

impl Timeout {
    /// HAProxy's largest timeout, `2147483647ms`: larger values are clipped to it.
    pub const MAX: Self = Self(Duration::from_millis(2_147_483_647));

    /// The router's default server timeout (`ROUTER_DEFAULT_SERVER_TIMEOUT`), 30 s.
    pub const ROUTER_DEFAULT_SERVER: Self = Self(Duration::from_secs(30));

    /// The router's default tunnel timeout (`ROUTER_DEFAULT_TUNNEL_TIMEOUT`), 1 h.
    pub const ROUTER_DEFAULT_TUNNEL: Self = Self(Duration::from_secs(3600));

    /// LiteMaaS's desired route timeout, 600 s (spec: "HAProxy Timeout Configuration").
    pub const LITEMAAS: Self = Self(Duration::from_secs(600));

    /// A timeout of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// A timeout of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    /// The duration.
    pub const fn duration(self) -> Duration {
        self.0
    }

    /// Milliseconds, rounded down.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// Reads `value` exactly as the router does (see the module documentation).
    ///
    /// ```
    /// use litemaas_routes::{Parsed, Timeout};
    ///
    /// assert_eq!(Timeout::parse("600s"), Parsed::Valid(Timeout::from_secs(600)));
    /// assert_eq!(Timeout::parse("600"), Parsed::BareMilliseconds(Timeout::from_millis(600)));
    /// assert!(matches!(Timeout::parse("10min"), Parsed::Ignored(_)));
    /// assert_eq!(Timeout::parse("30d"), Parsed::Clipped);
    /// ```
    pub fn parse(value: &str) -> Parsed {
        let digits = value.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = value.split_at(digits);
        if let Some(reason) = Ignored::find(value, number, unit) {
            return Parsed::Ignored(reason);
        }
        let unit_nanos: u64 = match unit {
            "us" => 1_000,
            "" | "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => 86_400_000_000_000, // "d": `Ignored::find` let no other unit through
        };
        // As haproxytime.ParseDuration: an int64 that overflows, or a duration beyond an
        // int64 of nanoseconds, is an OverflowError, which clipHAProxyTimeoutValue clips.
        let Ok(n) = number.parse::<i64>() else {
            return Parsed::Clipped;
        };
        let n = n.unsigned_abs(); // the pattern allows no sign
        if n > i64::MAX.unsigned_abs() / unit_nanos {
            return Parsed::Clipped;
        }
        let timeout = Self(Duration::from_nanos(n * unit_nanos));
        if timeout > Self::MAX {
            Parsed::Clipped
        } else if unit.is_empty() {
            Parsed::BareMilliseconds(timeout)
        } else {
            Parsed::Valid(timeout)
        }
    }

    /// The value with an explicit unit, as [`Routes::apply`](crate::Routes::apply) writes it:
    /// whole seconds as `600s`, else milliseconds, else microseconds.
    pub fn annotation_value(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        if micros.is_multiple_of(1_000_000) {
            write!(f, "{}s", micros / 1_000_000)
        } else if micros.is_multiple_of(1_000) {
            write!(f, "{}ms", micros / 1_000)
        } else {
            write!(f, "{micros}us")
        }
    }
}

impl Serialize for Timeout {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A desired timeout, as given on a command line or in a policy: only values the router uses
/// exactly as written, with an explicit unit, are accepted.
///
/// ```
/// use litemaas_routes::Timeout;
///
/// assert_eq!("10m".parse::<Timeout>().unwrap(), Timeout::from_secs(600));
/// let bare = "600".parse::<Timeout>().unwrap_err().to_string();
/// assert!(bare.contains("milliseconds"), "{bare}");
/// ```
impl FromStr for Timeout {
    type Err = ValueError;

    fn from_str(value: &str) -> Result<Self, ValueError> {
        match Self::parse(value) {
            Parsed::Valid(timeout) => Ok(timeout),
            Parsed::BareMilliseconds(timeout) => Err(ValueError::BareMilliseconds {
                value: value.to_owned(),
                millis: timeout.as_millis(),
            }),
            Parsed::Clipped => Err(ValueError::AboveMaximum {
                value: value.to_owned(),
            }),
            Parsed::Ignored(reason) => Err(ValueError::Ignored {
                value: value.to_owned(),
                suggestion: reason.suggestion(value),
                reason,
            }),
        }
    }
}

/// Why a desired timeout was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// A bare number, which the router reads as milliseconds.
    #[error(
        "timeout {value:?} has no unit: the router would read {millis} milliseconds; write it with a unit (e.g. {value}s)"
    )]
    BareMilliseconds {
        /// As given.
        value: String,
        /// What the router would make of it.
        millis: u64,
    },
    /// Above HAProxy's maximum.
    #[error("timeout {value:?} is above HAProxy's maximum of 2147483647ms (about 24.8 days)")]
    AboveMaximum {
        /// As given.
        value: String,
    },
    /// A value the router would ignore.
    #[error("timeout {value:?} is not one the router accepts ({reason}){}", suggestion.as_ref().map(|s| format!("; did you mean {s}?")).unwrap_or_default())]
    Ignored {
        /// As given.
        value: String,
        /// Why the router would ignore it.
        reason: Ignored,
        /// A close value it accepts.
        suggestion: Option<String>,
    },
    /// A per-route override not of the form `NAME=VALUE`.
    #[error("override {0:?} is not NAME=TIMEOUT (e.g. litellm-mcp=300s)")]
    Override(String),
}

/// How the router reads an annotation value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Matches the pattern with an explicit unit, within HAProxy's maximum: used as written.
    Valid(Timeout),
    /// A number without a unit: valid, and the router reads **milliseconds**.
    BareMilliseconds(Timeout),
    /// Matches the pattern but is above `2147483647ms`: the router uses [`Timeout::MAX`].
    Clipped,
    /// Does not match the pattern: the router silently ignores it and its default applies.
    Ignored(Ignored),
}

impl Parsed {
    /// What the router uses; `None` when it ignores the value (its default applies).
    pub fn timeout(&self) -> Option<Timeout> {
        match self {
            Self::Valid(t) | Self::BareMilliseconds(t) => Some(*t),
            Self::Clipped => Some(Timeout::MAX),
            Self::Ignored(_) => None,
        }
    }

    /// Whether the value matches the router's pattern (so `firstMatch` picks it).
    pub fn matches_pattern(&self) -> bool {
        !matches!(self, Self::Ignored(_))
    }
}

/// Why the router ignores a value: how it fails `^[1-9][0-9]*(us|ms|s|m|h|d)?$`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Ignored {
    /// The empty string.
    Empty,
    /// Spaces, tabs or line ends, anywhere (`5 min`, `600s\n`).
    Whitespace,
    /// A sign (`-5s`, `+5s`).
    Sign,
    /// A fraction (`1.5m`, `0.5s`): only whole numbers are accepted.
    Fraction,
    /// No number first (`s`, `ten`, `m10`).
    NoNumber,
    /// Zero, or a number written with a leading zero (`0`, `0s`, `010s`).
    LeadingZero,
    /// A unit other than `us`, `ms`, `s`, `m`, `h`, `d` (units are case-sensitive).
    Unit(String),
}

impl Ignored {
    fn find(value: &str, number: &str, unit: &str) -> Option<Self> {
        if value.is_empty() {
            Some(Self::Empty)
        } else if value.chars().any(char::is_whitespace) {
            Some(Self::Whitespace)
        } else if value.starts_with(['-', '+']) {
            Some(Self::Sign)
        } else if number.is_empty() {
            Some(Self::NoNumber)
        } else if unit.starts_with(['.', ',']) {
            Some(Self::Fraction)
        } else if number.starts_with('0') {
            Some(Self::LeadingZero)
        } else if !unit.is_empty() && !UNITS.contains(&unit) {
            Some(Self::Unit(unit.to_owned()))
        } else {
            None
        }
    }

    /// A value the router accepts that is probably what `value` meant, if one is clear:
    /// `10min` → `10m`, `1.5m` → `90s`, `5 min` → `5m`, `600S` → `600s`.
    pub fn suggestion(&self, value: &str) -> Option<String> {
        let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        let digits = compact
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.' || *b == b',')
            .count();
        let (number, unit) = compact.split_at(digits);
        let unit_us: u128 = match unit.to_ascii_lowercase().as_str() {
            "us" | "µs" | "usec" | "usecs" | "microsecond" | "microseconds" => 1,
            "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1_000,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000_000,
            "d" | "day" | "days" => 86_400_000_000,
            _ => return None,
        };
        if matches!(self, Self::Sign | Self::Empty | Self::NoNumber) || unit.is_empty() {
            return None;
        }
        let (whole, fraction) = number.split_once(['.', ',']).unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let fraction: u128 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().ok()?
        };
        let micros = whole
            .checked_mul(unit_us)?
            .checked_add(fraction.checked_mul(unit_us)? / scale)?;
        if micros == 0 || !(fraction * unit_us).is_multiple_of(scale) {
            return None;
        }
        let timeout = Timeout(Duration::from_micros(u64::try_from(micros).ok()?));
        (timeout <= Timeout::MAX).then(|| {
            // Keep the unit the person chose when the number stays whole in it.
            let in_unit = micros / unit_us;
            let canonical = ["us", "ms", "s", "m", "h", "d"]
                .into_iter()
                .zip([
                    1u128,
                    1_000,
                    1_000_000,
                    60_000_000,
                    3_600_000_000,
                    86_400_000_000,
                ])
                .find(|&(_, u)| u == unit_us)
                .map(|(name, _)| name);
            match canonical {
                Some(name) if micros.is_multiple_of(unit_us) => format!("{in_unit}{name}"),
                _ => timeout.to_string(),
            }
        })
    }
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::Whitespace => f.write_str("it contains whitespace"),
            Self::Sign => f.write_str("a sign is not accepted"),
            Self::Fraction => f.write_str("only whole numbers are accepted"),
            Self::NoNumber => f.write_str("it does not start with a number"),
            Self::LeadingZero => f.write_str("zero, or a leading zero, is not accepted"),
            Self::Unit(unit) => write!(
                f,
                "unit {unit:?} is unknown: the units are us, ms, s, m, h and d, in lower case"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ignored(value: &str) -> Ignored {
        match Timeout::parse(value) {
            Parsed::Ignored(reason) => reason,
            other => panic!("{value:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn each_class_of_value_is_read_as_the_router_reads_it() {
        let s = Timeout::from_secs;
        let cases = [
            ("600s", Parsed::Valid(s(600))),
            ("10m", Parsed::Valid(s(600))),
            ("1h", Parsed::Valid(s(3600))),
            ("2d", Parsed::Valid(s(172_800))),
            ("1500ms", Parsed::Valid(Timeout::from_millis(1500))),
            ("1us", Parsed::Valid(Timeout(Duration::from_micros(1)))),
            ("600", Parsed::BareMilliseconds(Timeout::from_millis(600))),
            ("600000", Parsed::BareMilliseconds(s(600))),
            ("2147483647ms", Parsed::Valid(Timeout::MAX)),
            ("2147483647", Parsed::BareMilliseconds(Timeout::MAX)),
            ("2147483648ms", Parsed::Clipped),
            ("2147483648", Parsed::Clipped),
            ("25d", Parsed::Clipped),
            ("24d", Parsed::Valid(s(24 * 86_400))),
            // Beyond an int64 of nanoseconds: haproxytime's OverflowError, also clipped.
            ("106752d", Parsed::Clipped),
            ("99999999999999999999", Parsed::Clipped),
        ];
        for (value, expected) in cases {
            assert_eq!(Timeout::parse(value), expected, "{value:?}");
        }
    }

    #[test]
    fn values_the_router_ignores_say_why() {
        assert_eq!(ignored(""), Ignored::Empty);
        assert_eq!(ignored("0"), Ignored::LeadingZero);
        assert_eq!(ignored("0s"), Ignored::LeadingZero);
        assert_eq!(ignored("010s"), Ignored::LeadingZero);
        assert_eq!(ignored("1.5m"), Ignored::Fraction);
        assert_eq!(ignored("0.5s"), Ignored::Fraction);
        assert_eq!(ignored("10min"), Ignored::Unit("min".into()));
        assert_eq!(ignored("600S"), Ignored::Unit("S".into()));
        assert_eq!(ignored("5 min"), Ignored::Whitespace);
        assert_eq!(ignored(" 600s"), Ignored::Whitespace);
        assert_eq!(ignored("600s\n"), Ignored::Whitespace);
        assert_eq!(ignored("-5s"), Ignored::Sign);
        assert_eq!(ignored("s"), Ignored::NoNumber);
        assert_eq!(ignored("１０s"), Ignored::NoNumber); // fullwidth digits are not [0-9]
    }

    #[test]
    fn suggestions_are_values_the_router_accepts() {
        let suggest = |v: &str| ignored(v).suggestion(v);
        assert_eq!(suggest("10min").as_deref(), Some("10m"));
        assert_eq!(suggest("1.5m").as_deref(), Some("90s"));
        assert_eq!(suggest("5 min").as_deref(), Some("5m"));
        assert_eq!(suggest("600S").as_deref(), Some("600s"));
        assert_eq!(suggest("10 minutes").as_deref(), Some("10m"));
        assert_eq!(suggest("0.25s").as_deref(), Some("250ms"));
        assert_eq!(suggest("0"), None);
        assert_eq!(suggest("-5s"), None);
        assert_eq!(suggest("fast"), None);
        for v in ["10min", "1.5m", "5 min", "600S", "0.25s"] {
            let s = suggest(v).unwrap();
            assert!(matches!(Timeout::parse(&s), Parsed::Valid(_)), "{v} → {s}");
        }
    }

    #[test]
    fn desired_values_must_carry_a_unit_and_be_used_as_written() {
        assert_eq!("600s".parse::<Timeout>().unwrap(), Timeout::LITEMAAS);
        for bad in ["600", "0", "10min", "1.5m", "30d", ""] {
            assert!(bad.parse::<Timeout>().is_err(), "{bad:?}");
        }
        let e = "10min".parse::<Timeout>().unwrap_err().to_string();
        assert!(e.contains("did you mean 10m?"), "{e}");
    }

    #[test]
    fn written_values_have_an_explicit_unit() {
        assert_eq!(Timeout::LITEMAAS.annotation_value(), "600s");
        assert_eq!(Timeout::from_millis(1500).annotation_value(), "1500ms");
        assert_eq!(Timeout::MAX.annotation_value(), "2147483647ms");
        assert_eq!(Timeout(Duration::from_micros(7)).annotation_value(), "7us");
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        /// The router's pattern, written independently of the parser.
        fn router_accepts(v: &str) -> bool {
            let Some(rest) = v.strip_prefix(|c: char| ('1'..='9').contains(&c)) else {
                return false;
            };
            let unit = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            unit.is_empty() || UNITS.contains(&unit)
        }

        proptest! {
            #[test]
            fn ignored_exactly_when_the_pattern_does_not_match(v in "[0-9 .a-zA-Z+-]{0,8}") {
                prop_assert_eq!(Timeout::parse(&v).matches_pattern(), router_accepts(&v));
            }

            #[test]
            fn what_is_written_reads_back_the_same(micros in 1u64..=2_147_483_647_000) {
                let t = Timeout(Duration::from_micros(micros));
                prop_assert_eq!(Timeout::parse(&t.annotation_value()), Parsed::Valid(t));
            }

            #[test]
            fn never_above_the_maximum(
                digit in 1u64..10,
                zeros in 0u32..20,
                unit in 0usize..7,
            ) {
                // Every order of magnitude, so values just above the cap come up as often as
                // values that overflow.
                let n = u128::from(digit) * 10u128.pow(zeros);
                let v = format!("{n}{}", ["", "us", "ms", "s", "m", "h", "d"][unit]);
                let t = Timeout::parse(&v).timeout().unwrap();
                prop_assert!(t <= Timeout::MAX);
            }
        }
    }
}
