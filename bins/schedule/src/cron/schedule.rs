//! The time fields of a crontab line, checked the way crontab(5) reads them.
//!
//! Accepted: five fields (minute, hour, day of month, month, day of week), each a comma list of
//! `*`, `N`, `N-M`, `*/S` or `N-M/S`; month names `jan`–`dec` and day names `sun`–`sat` (any
//! case) wherever a number may stand; day of week 0–7 (0 and 7 are Sunday). The specials
//! `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly` are
//! accepted and written as their five fields, which every cron reads (busybox's crond does not
//! know the specials); `@reboot` is refused: a backup at boot is not a schedule. `N/S` (a step
//! from a single number) is refused: vixie cron, Debian's cron, rejects it.

use std::fmt;

/// One of the five fields.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names standing for `min + index` (months from 1, days from 0).
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

/// A checked schedule: its five fields as written, and the minutes, hours, … they select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    fields: [String; 5],
    /// Bit `n` set: value `n` selected.
    sets: [u64; 5],
}

/// Why a schedule was refused; the message names the schedule and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError(String);

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScheduleError {}

impl Schedule {
    /// Checks `text` (five fields, or a special such as `@monthly`).
    ///
    /// # Errors
    /// A message naming the schedule, the field and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let err = |why: String| ScheduleError(format!("schedule {text:?}: {why}"));
        let trimmed = text.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            "@reboot" => {
                return Err(err(
                    "@reboot is not a schedule for a backup; give five fields, e.g. '0 2 1 * *'"
                        .into(),
                ));
            }
            special if special.starts_with('@') => {
                return Err(err(format!(
                    "unknown special {trimmed:?}; known: @yearly, @annually, @monthly, @weekly, \
                     @daily, @midnight, @hourly"
                )));
            }
            _ => trimmed,
        };
        let words: Vec<&str> = expanded.split_whitespace().collect();
        if words.len() != 5 {
            return Err(err(format!(
                "{} field(s); crontab(5) needs five: minute hour day-of-month month day-of-week, \
                 e.g. '0 2 1 * *'",
                words.len()
            )));
        }
        let mut sets = [0u64; 5];
        for ((field, word), set) in FIELDS.iter().zip(&words).zip(&mut sets) {
            *set = parse_field(field, word)
                .map_err(|why| err(format!("{} field {word:?}: {why}", field.name)))?;
        }
        Ok(Self {
            fields: std::array::from_fn(|i| words[i].to_owned()),
            sets,
        })
    }

    /// How many times a day it runs, on a day it runs at all.
    pub fn runs_per_day(&self) -> u32 {
        self.sets[0].count_ones() * self.sets[1].count_ones()
    }

    /// Both day of month and day of week are restricted: cron then runs on either (not both).
    pub fn days_are_ored(&self) -> bool {
        !self.fields[2].starts_with('*') && !self.fields[4].starts_with('*')
    }

    /// No date matches (such as 30 February), when the day of week is not restricted.
    pub fn never_runs(&self) -> bool {
        const DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if !self.fields[4].starts_with('*') {
            return false;
        }
        let possible = (1..=12u32)
            .filter(|m| self.sets[3] & (1 << m) != 0)
            .any(|m| (1..=DAYS[m as usize - 1]).any(|d| self.sets[2] & (1 << d) != 0));
        !possible
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fields.join(" "))
    }
}

fn parse_field(field: &Field, word: &str) -> Result<u64, String> {
    let mut set = 0u64;
    for item in word.split(',') {
        if item.is_empty() {
            return Err("an empty item in the list".into());
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 =
                    step.parse().ok().filter(|s| *s >= 1).ok_or_else(|| {
                        format!("step {step:?} is not a whole number of 1 or more")
                    })?;
                (range, Some(step))
            }
            None => (item, None),
        };
        let (low, high) = if range == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (low, high) = (value(field, a)?, value(field, b)?);
            if low > high {
                return Err(format!("range {range:?} runs backwards"));
            }
            (low, high)
        } else {
            if step.is_some() {
                return Err(format!(
                    "a step needs '*' or a range before it ({item:?}: write '{range}-{}/…')",
                    field.max
                ));
            }
            let v = value(field, range)?;
            (v, v)
        };
        let step = step.unwrap_or(1);
        let mut v = low;
        while v <= high {
            set |= 1 << v;
            v += step;
        }
    }
    if field.name == "day of week" && set & (1 << 7) != 0 {
        set = (set & !(1 << 7)) | 1; // 7 is Sunday, as 0
    }
    Ok(set)
}

fn value(field: &Field, token: &str) -> Result<u32, String> {
    let range = || {
        let names = match field.names {
            [] => String::new(),
            names => format!(" or {}–{}", names[0], names[names.len() - 1]),
        };
        format!("{}-{}{names}", field.min, field.max)
    };
    if let Ok(n) = token.parse::<u32>() {
        if (field.min..=field.max).contains(&n) {
            return Ok(n);
        }
        return Err(format!("{n} is out of range {}", range()));
    }
    let lower = token.to_ascii_lowercase();
    match field.names.iter().position(|name| *name == lower) {
        Some(i) => Ok(field.min + i as u32),
        None => Err(format!("{token:?} is not a number or name in {}", range())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_crontab5_forms() {
        for (text, written) in [
            ("0 2 1 * *", "0 2 1 * *"),
            ("  0  2 1 *\t* ", "0 2 1 * *"),
            (
                "*/15 0-6/2 1,15 jan-MAR,dec mon-fri",
                "*/15 0-6/2 1,15 jan-MAR,dec mon-fri",
            ),
            ("0 3 * * 7", "0 3 * * 7"),
            ("@monthly", "0 0 1 * *"),
            ("@Annually", "0 0 1 1 *"),
            ("@midnight", "0 0 * * *"),
        ] {
            let s = Schedule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.to_string(), written, "{text}");
        }
    }

    #[test]
    fn refusals_name_the_field() {
        for (text, says) in [
            ("60 2 1 * *", "minute field \"60\": 60 is out of range 0-59"),
            ("0 24 1 * *", "hour field \"24\": 24 is out of range 0-23"),
            (
                "0 2 0 * *",
                "day of month field \"0\": 0 is out of range 1-31",
            ),
            ("0 2 32 * *", "day of month field \"32\""),
            (
                "0 2 1 13 *",
                "month field \"13\": 13 is out of range 1-12 or jan–dec",
            ),
            (
                "0 2 1 foo *",
                "month field \"foo\": \"foo\" is not a number or name",
            ),
            (
                "0 2 1 * 8",
                "day of week field \"8\": 8 is out of range 0-7 or sun–sat",
            ),
            ("0 2 1 * sunday", "day of week field \"sunday\""),
            (
                "5-1 2 1 * *",
                "minute field \"5-1\": range \"5-1\" runs backwards",
            ),
            ("*/0 2 1 * *", "minute field \"*/0\": step \"0\""),
            ("5/10 2 1 * *", "minute field \"5/10\": a step needs"),
            ("0,,5 2 1 * *", "minute field \"0,,5\": an empty item"),
            ("0 2 1 *", "4 field(s)"),
            ("0 2 1 * * *", "6 field(s)"),
            ("", "0 field(s)"),
            ("@reboot", "@reboot is not a schedule"),
            ("@fortnightly", "unknown special"),
        ] {
            let e = Schedule::parse(text).expect_err(text).to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(e.starts_with(&format!("schedule {text:?}")), "{e}");
        }
    }

    #[test]
    fn frequency_and_day_rules() {
        let monthly = Schedule::parse("0 2 1 * *").unwrap();
        assert_eq!(monthly.runs_per_day(), 1);
        assert!(!monthly.days_are_ored() && !monthly.never_runs());
        assert_eq!(Schedule::parse("*/15 2 * * *").unwrap().runs_per_day(), 4);
        assert_eq!(Schedule::parse("0 * * * *").unwrap().runs_per_day(), 24);
        assert!(Schedule::parse("0 2 1 * mon").unwrap().days_are_ored());
        assert!(Schedule::parse("0 0 30 2 *").unwrap().never_runs());
        assert!(!Schedule::parse("0 0 29 2 *").unwrap().never_runs());
    }
}
