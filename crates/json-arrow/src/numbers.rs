//! Exact numbers: JSON number text into integer, decimal and float columns, refusing what would
//! change the value.
//!
//! arrow-json reads a number into an integer column through `f64` when it is not an integer
//! literal, so `870.9` became `870` and decimals lost their extra digits. Numeric columns are
//! therefore decoded as the number's text and converted here: a value that is not exactly
//! representable in its column becomes a reject with a reason.

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, StringArray};
use arrow::compute::kernels::cast_utils::parse_decimal;
use arrow::datatypes::Decimal128Type;
use arrow::error::ArrowError;
use pipeline_config::ColumnType;

/// A numeric column type numbers are converted into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberKind {
    /// 64-bit integer (`long`).
    Long,
    /// 32-bit integer (`integer`).
    Integer,
    /// 16-bit integer (`short`).
    Short,
    /// 64-bit float (`double`).
    Double,
    /// 32-bit float (`float`).
    Float,
    /// Decimal with precision and scale.
    Decimal(u8, i8),
}

impl NumberKind {
    /// The exact-number conversion of a numeric column type (None for other types).
    pub fn of(column: &ColumnType) -> Option<Self> {
        Some(match column {
            ColumnType::Long => Self::Long,
            ColumnType::Integer => Self::Integer,
            ColumnType::Short => Self::Short,
            ColumnType::Double => Self::Double,
            ColumnType::Float => Self::Float,
            ColumnType::Decimal(p, s) => Self::Decimal(*p, *s),
            _ => return None,
        })
    }
}

/// Largest integer every `f64` below it represents exactly (2^53).
const F64_EXACT: f64 = 9_007_199_254_740_992.0;
/// 2^63: no `long` reaches it.
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// Parses an integer literal, or a number in another notation that is exactly an integer
/// (`870.0`, `1e3`).
fn parse_integer(text: &str) -> Result<i64, String> {
    if let Ok(v) = text.parse::<i64>() {
        return Ok(v);
    }
    if let Some((whole, fraction)) = text.split_once('.') {
        if !fraction.is_empty() && fraction.bytes().all(|b| b == b'0') {
            if let Ok(v) = whole.parse::<i64>() {
                return Ok(v);
            }
        }
    }
    match text.parse::<f64>() {
        Err(_) => Err(format!("{text} is not a number")),
        Ok(v) if !v.is_finite() || v.abs() >= I64_BOUND => Err(format!("{text} is out of range")),
        Ok(v) if v.fract() != 0.0 => Err(format!("{text} is not an integer")),
        Ok(v) if v.abs() < F64_EXACT => Ok(v as i64),
        Ok(_) => Err(format!("{text} cannot be read as an exact integer")),
    }
}

/// Decimal places a number's text carries (trailing zeros do not count; an exponent shifts).
fn scale_of(text: &str) -> Option<i64> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let fraction = mantissa.split_once('.').map_or("", |(_, f)| f).trim_end_matches('0');
    Some(fraction.len() as i64 - exponent)
}

fn to_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let places = scale_of(text).ok_or_else(|| format!("{text} is not a number"))?;
    if places > i64::from(scale) {
        return Err(format!("{text} has more than {scale} decimal places"));
    }
    parse_decimal::<Decimal128Type>(text, precision, scale).map_err(|_| format!("{text} does not fit decimal({precision},{scale})"))
}

fn to_float(text: &str, max: f64) -> Result<f64, String> {
    let v = text.parse::<f64>().map_err(|_| format!("{text} is not a number"))?;
    if !v.is_finite() || v.abs() > max {
        return Err(format!("{text} is out of range"));
    }
    Ok(v)
}

fn narrow<T: TryFrom<i64>>(text: &str) -> Result<T, String> {
    parse_integer(text)?.try_into().map_err(|_| format!("{text} is out of range"))
}

/// Why a value of field `column` does not fit its `kind` of column.
pub(crate) fn reject_reason(column: &str, kind: NumberKind, reason: &str) -> String {
    let type_name = match kind {
        NumberKind::Long => "long".to_string(),
        NumberKind::Integer => "integer".to_string(),
        NumberKind::Short => "short".to_string(),
        NumberKind::Double => "double".to_string(),
        NumberKind::Float => "float".to_string(),
        NumberKind::Decimal(p, s) => format!("decimal({p},{s})"),
    };
    format!("field '{column}': {reason} (column type {type_name})")
}

/// A number's text as an integer column of `kind` reads it (None for other kinds).
pub(crate) fn integer_of(kind: NumberKind, text: &str) -> Option<Result<i64, String>> {
    Some(match kind {
        NumberKind::Long => parse_integer(text),
        NumberKind::Integer => narrow::<i32>(text).map(i64::from),
        NumberKind::Short => narrow::<i16>(text).map(i64::from),
        _ => return None,
    })
}

/// Parses every text of `texts`; a text `parse` refuses goes to `reject` and becomes null.
fn parse_column<T>(
    texts: &StringArray,
    parse: impl Fn(&str) -> Result<T, String>,
    reject: &mut impl FnMut(usize, String),
) -> Vec<Option<T>> {
    texts
        .iter()
        .enumerate()
        .map(|(row, text)| {
            text.and_then(|t| match parse(t) {
                Ok(v) => Some(v),
                Err(reason) => {
                    reject(row, reason);
                    None
                }
            })
        })
        .collect()
}

/// Converts a column of number texts into `kind`; a value that does not fit goes to `bad` as
/// (row, reason) and becomes null.
pub fn convert_numbers(
    column: &str,
    kind: NumberKind,
    texts: &StringArray,
    bad: &mut Vec<(usize, String)>,
) -> Result<ArrayRef, ArrowError> {
    let mut reject = |row: usize, reason: String| bad.push((row, reject_reason(column, kind, &reason)));
    Ok(match kind {
        NumberKind::Long => Arc::new(Int64Array::from(parse_column(texts, parse_integer, &mut reject))),
        NumberKind::Integer => Arc::new(Int32Array::from(parse_column(texts, narrow::<i32>, &mut reject))),
        NumberKind::Short => Arc::new(Int16Array::from(parse_column(texts, narrow::<i16>, &mut reject))),
        NumberKind::Double => Arc::new(Float64Array::from(parse_column(texts, |t| to_float(t, f64::MAX), &mut reject))),
        NumberKind::Float => {
            Arc::new(Float32Array::from(parse_column(texts, |t| to_float(t, f64::from(f32::MAX)).map(|v| v as f32), &mut reject)))
        }
        NumberKind::Decimal(p, s) => {
            Arc::new(Decimal128Array::from(parse_column(texts, |t| to_decimal(t, p, s), &mut reject)).with_precision_and_scale(p, s)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn integers_are_exact_or_refused() {
        assert_eq!(parse_integer("870"), Ok(870));
        assert_eq!(parse_integer("-3"), Ok(-3));
        assert_eq!(parse_integer("870.0"), Ok(870));
        assert_eq!(parse_integer("1e3"), Ok(1000));
        assert_eq!(parse_integer("9223372036854775807"), Ok(i64::MAX));
        assert!(parse_integer("870.9").unwrap_err().contains("not an integer"));
        assert!(parse_integer("9223372036854775808").unwrap_err().contains("out of range"));
        assert!(parse_integer("1e30").unwrap_err().contains("out of range"));
        assert!(parse_integer("1e400").unwrap_err().contains("out of range"));
        assert!(parse_integer("true").unwrap_err().contains("not a number"));
        assert_eq!(narrow::<i16>("40000").unwrap_err(), "40000 is out of range");
        assert_eq!(narrow::<i32>("40000"), Ok(40000));
    }

    #[test]
    fn decimals_keep_their_scale_or_are_refused() {
        assert_eq!(to_decimal("1.25", 10, 2), Ok(125));
        assert_eq!(to_decimal("1.2500", 10, 2), Ok(125));
        assert_eq!(to_decimal("7", 10, 2), Ok(700));
        assert!(to_decimal("1.255", 10, 2).unwrap_err().contains("more than 2 decimal places"));
        assert!(to_decimal("123456789.5", 5, 1).unwrap_err().contains("does not fit"));
    }

    #[test]
    fn floats_that_overflow_are_refused() {
        assert_eq!(to_float("1.5", f64::MAX), Ok(1.5));
        assert!(to_float("1e39", f64::from(f32::MAX)).is_err());
        assert!(to_float("1e400", f64::MAX).is_err());
    }

    #[test]
    fn a_column_converts_with_reasons_naming_the_field_and_type() {
        let texts = StringArray::from(vec![Some("1"), None, Some("2.5"), Some("4")]);
        let mut bad = Vec::new();
        let out = convert_numbers("order_value", NumberKind::Long, &texts, &mut bad).unwrap();
        let ints = out.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!((ints.value(0), ints.is_null(1), ints.is_null(2), ints.value(3)), (1, true, true, 4));
        assert_eq!(bad, vec![(2, "field 'order_value': 2.5 is not an integer (column type long)".to_string())]);
    }
}
