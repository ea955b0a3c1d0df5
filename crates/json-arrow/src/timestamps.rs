//! Column-wise conversion of timestamp strings or epoch numbers to UTC microseconds.

use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::compute::kernels::cast_utils::string_to_datetime;
use chrono::{NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use pipeline_config::{EpochUnit, TimestampSpec};

/// Turns the wire form of one timestamp column into UTC microseconds.
#[derive(Debug, Clone)]
pub enum TimestampParser {
    /// `YYYY-MM-DD HH:MM:SS[.ffffff]` or RFC 3339; strings without offset read as UTC (the
    /// common case, kept apart because chrono's `Utc` skips the zone-table lookups).
    DefaultUtc,
    /// `YYYY-MM-DD HH:MM:SS[.ffffff]` or RFC 3339; strings without offset read in `zone`.
    Default {
        /// Zone for strings without an offset.
        zone: Tz,
    },
    /// A chrono format; strings read in `zone` unless the format carries an offset.
    Format {
        /// chrono format string.
        format: String,
        /// Zone for formats without an offset.
        zone: Tz,
        /// Whether the format parses an offset (%z, %:z, %#z).
        has_offset: bool,
    },
    /// Epoch numbers in a unit.
    Epoch(EpochUnit),
}

impl TimestampParser {
    /// Builds the parser for a validated column spec.
    pub fn from_spec(spec: &TimestampSpec) -> Self {
        let zone = spec.timezone.as_deref().and_then(|z| z.parse().ok()).unwrap_or(Tz::UTC);
        match (&spec.epoch_unit, &spec.format) {
            (Some(unit), _) => Self::Epoch(*unit),
            (None, Some(format)) => Self::Format {
                has_offset: format.contains("%z") || format.contains("%:z") || format.contains("%#z"),
                format: format.clone(),
                zone,
            },
            (None, None) if zone == Tz::UTC => Self::DefaultUtc,
            (None, None) => Self::Default { zone },
        }
    }

    /// Whether the wire value is a number (epoch) rather than a string.
    pub fn is_epoch(&self) -> bool {
        matches!(self, Self::Epoch(_))
    }

    fn describe(&self) -> String {
        match self {
            Self::Default { .. } | Self::DefaultUtc => "YYYY-MM-DD HH:MM:SS[.ffffff] or RFC 3339".into(),
            Self::Format { format, .. } => format!("format '{format}'"),
            Self::Epoch(u) => format!("epoch {u:?}").to_lowercase(),
        }
    }

    /// True when `s` reads as a timestamp in this parser's form.
    pub fn parses(&self, s: &str) -> bool {
        self.parse_str(s).is_some()
    }

    pub(crate) fn parse_str(&self, s: &str) -> Option<i64> {
        match self {
            Self::DefaultUtc => {
                naive_utc_micros(s.as_bytes()).or_else(|| string_to_datetime(&chrono::Utc, s).ok().map(|d| d.timestamp_micros()))
            }
            Self::Default { zone } => string_to_datetime(zone, s).ok().map(|d| d.timestamp_micros()),
            Self::Format { format, zone, has_offset } => {
                if *has_offset {
                    chrono::DateTime::parse_from_str(s, format).ok().map(|d| d.timestamp_micros())
                } else {
                    let naive = NaiveDateTime::parse_from_str(s, format).ok()?;
                    // A wall time skipped by a DST change has no instant; an ambiguous one takes
                    // the earlier instant, as Spark does.
                    zone.from_local_datetime(&naive).earliest().map(|d| d.timestamp_micros())
                }
            }
            Self::Epoch(_) => None,
        }
    }

    /// Why `s` is not a timestamp of column `column`.
    pub(crate) fn reject_reason(&self, column: &str, s: &str) -> String {
        format!("field '{column}': cannot read \"{}\" as a timestamp ({})", truncate(s, 64), self.describe())
    }

    /// Converts strings; `bad` receives (row, reason) for values that do not parse.
    pub fn convert_strings(&self, column: &str, values: &StringArray, bad: &mut Vec<(usize, String)>) -> TimestampMicrosecondArray {
        let out: TimestampMicrosecondArray = values
            .iter()
            .enumerate()
            .map(|(row, v)| {
                let s = v?;
                let parsed = self.parse_str(s);
                if parsed.is_none() {
                    bad.push((row, self.reject_reason(column, s)));
                }
                parsed
            })
            .collect();
        out.with_timezone("UTC")
    }

    /// Converts epoch numbers; `bad` receives rows whose value overflows.
    pub fn convert_epoch(&self, column: &str, values: &Int64Array, bad: &mut Vec<(usize, String)>) -> TimestampMicrosecondArray {
        let factor: i64 = match self {
            Self::Epoch(EpochUnit::Seconds) => 1_000_000,
            Self::Epoch(EpochUnit::Millis) => 1_000,
            _ => 1,
        };
        let out: TimestampMicrosecondArray = values
            .iter()
            .enumerate()
            .map(|(row, v)| {
                let v = v?;
                let micros = v.checked_mul(factor);
                if micros.is_none() {
                    bad.push((row, format!("field '{column}': epoch value {v} is out of range")));
                }
                micros
            })
            .collect();
        debug_assert_eq!(out.len(), values.len());
        out.with_timezone("UTC")
    }
}

/// The common layout `YYYY-MM-DD HH:MM:SS[.f{1,9}]` (space or `T`, no offset) read as UTC,
/// without the general parser's per-value setup (a fifth of the decoding time otherwise).
/// Anything else, including values that would be invalid, returns None and takes the general
/// path, so the result is always the general parser's.
fn naive_utc_micros(s: &[u8]) -> Option<i64> {
    let (date_time, fraction) = s.split_first_chunk::<19>()?;
    let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1, b' ' | b'T', h0, h1, b':', n0, n1, b':', s0, s1] = *date_time else {
        return None;
    };
    if ![y0, y1, y2, y3, m0, m1, d0, d1, h0, h1, n0, n1, s0, s1].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let two = |tens: u8, ones: u8| i64::from(tens - b'0') * 10 + i64::from(ones - b'0');
    let (year, month, day) = (two(y0, y1) * 100 + two(y2, y3), two(m0, m1), two(d0, d1));
    let (hour, minute, second) = (two(h0, h1), two(n0, n1), two(s0, s1));
    let nanos = match fraction {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) => {
            let value = digits.iter().fold(0, |acc, &b| acc * 10 + i64::from(b - b'0'));
            value * 10i64.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(seconds * 1_000_000 + nanos / 1_000)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    fn micros(parser: &TimestampParser, s: &str) -> Option<i64> {
        let mut bad = vec![];
        let arr = parser.convert_strings("ts", &StringArray::from(vec![s]), &mut bad);
        bad.is_empty().then(|| arr.value(0))
    }

    #[test]
    fn default_formats_are_utc() {
        let p = TimestampParser::from_spec(&TimestampSpec::default());
        assert!(matches!(p, TimestampParser::DefaultUtc));
        let expected = 1_649_073_601_000_000; // 2022-04-04T12:00:01Z
        assert_eq!(micros(&p, "2022-04-04 12:00:01"), Some(expected));
        assert_eq!(micros(&p, "2022-04-04T12:00:01Z"), Some(expected));
        assert_eq!(micros(&p, "2022-04-04T14:00:01+02:00"), Some(expected));
        assert_eq!(micros(&p, "2022-04-04 12:00:01.5"), Some(expected + 500_000));
        assert_eq!(micros(&p, "yesterday"), None);
        let paris = TimestampParser::Default { zone: "Europe/Paris".parse().unwrap() };
        assert_eq!(micros(&paris, "2022-04-04 14:00:01"), Some(expected));
        assert_eq!(micros(&paris, "2022-04-04T12:00:01Z"), Some(expected), "an explicit offset wins over the zone");
    }

    #[test]
    fn fast_layout_agrees_with_the_general_parser() {
        let general = |s: &str| string_to_datetime(&chrono::Utc, s).ok().map(|d| d.timestamp_micros());
        let mut checked = 0;
        for year in [1, 1600, 1899, 1900, 1969, 1970, 2000, 2022, 2024, 2100, 9999] {
            for (month, day) in [(1, 1), (2, 28), (2, 29), (2, 30), (3, 1), (4, 31), (12, 31), (13, 1), (0, 5), (6, 0)] {
                for time in ["00:00:00", "23:59:59", "12:34:56.7", "12:34:56.123456", "12:34:56.123456789", "24:00:00", "12:60:00"] {
                    let s = format!("{year:04}-{month:02}-{day:02} {time}");
                    assert_eq!(naive_utc_micros(s.as_bytes()).or_else(|| general(&s)), general(&s), "{s}");
                    if naive_utc_micros(s.as_bytes()).is_some() {
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 200, "the fast path took only {checked} values");
        for other in [
            "2022-04-04T12:00:01",
            "2022-04-04 12:00:01Z",
            "2022-04-04 12:00:01.",
            "2022-4-04 12:00:01",
            "+2022-04-04 12:00:01",
            "2022-04-04 12:00:01.1234567890",
        ] {
            assert_eq!(naive_utc_micros(other.as_bytes()).or_else(|| general(other)), general(other), "{other}");
        }
    }

    #[test]
    fn zone_and_two_digit_year() {
        let p = TimestampParser::from_spec(&TimestampSpec {
            format: Some("%y-%m-%d %H:%M:%S".into()),
            timezone: Some("Europe/Paris".into()),
            epoch_unit: None,
        });
        // 14:00:01 in Paris (CEST, UTC+2) is 12:00:01Z.
        assert_eq!(micros(&p, "22-04-04 14:00:01"), Some(1_649_073_601_000_000));
        assert_eq!(micros(&p, "2022-04-04 14:00:01"), None);
    }

    #[test]
    fn epoch_units() {
        let p = TimestampParser::Epoch(EpochUnit::Millis);
        let mut bad = vec![];
        let arr = p.convert_epoch("ts", &Int64Array::from(vec![Some(1_649_073_601_000), None, Some(i64::MAX)]), &mut bad);
        assert_eq!(arr.value(0), 1_649_073_601_000_000);
        assert!(arr.is_null(1));
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 2);
    }
}
