//! Message/table schema files (`schemas/*.schema.toml`): the columns a message is decoded into.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use crate::ConfigError;

/// The schema of a message and of the table columns decoded from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSchema {
    /// Columns in table order.
    pub columns: Vec<ColumnSpec>,
}

/// One column of a [`TableSchema`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column name in the table.
    pub name: String,
    /// JSON key to read it from, when it differs from `name`; a dotted path reads a nested
    /// field (`data.order_id`, `metadata.operation` for AWS DMS change records).
    #[serde(default)]
    pub json_name: Option<String>,
    /// Delta type name: string, long, integer, short, double, float, boolean, date, timestamp, json,
    /// decimal(p,s), or a nested type: `array<T>`, `struct<name:T,...>` (nested as deep as needed).
    #[serde(rename = "type")]
    pub type_name: String,
    /// A message without a value here (missing or null) is a dead letter.
    #[serde(default)]
    pub required: bool,
    /// For `timestamp` columns: how the value is written in messages.
    #[serde(flatten)]
    pub timestamp: TimestampSpec,
    /// Parsed form of `type_name`, filled by validation.
    #[serde(skip)]
    pub column_type: Option<ColumnType>,
}

/// How a `timestamp` column is written in messages.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampSpec {
    /// chrono format for strings (e.g. `%y-%m-%d %H:%M:%S`); unset accepts
    /// `YYYY-MM-DD HH:MM:SS[.ffffff]` and RFC 3339.
    #[serde(default)]
    pub format: Option<String>,
    /// IANA zone in which strings without an offset are read; UTC by default.
    #[serde(default)]
    pub timezone: Option<String>,
    /// When messages carry epoch numbers: their unit.
    #[serde(default)]
    pub epoch_unit: Option<EpochUnit>,
}

/// Unit of epoch numbers in a timestamp column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EpochUnit {
    /// Seconds since 1970-01-01T00:00:00Z.
    Seconds,
    /// Milliseconds since the epoch.
    Millis,
    /// Microseconds since the epoch.
    Micros,
}

/// The column types the pipeline stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 string.
    String,
    /// 64-bit integer.
    Long,
    /// 32-bit integer.
    Integer,
    /// 16-bit integer.
    Short,
    /// 64-bit float.
    Double,
    /// 32-bit float.
    Float,
    /// Boolean.
    Boolean,
    /// Calendar date.
    Date,
    /// UTC timestamp with microsecond precision (Delta `timestamp`, never `timestamp_ntz`).
    Timestamp,
    /// Decimal with precision and scale.
    Decimal(u8, i8),
    /// The field's JSON text as sent (object, array or scalar), in a string column: for arrays
    /// and nested documents kept whole.
    Json,
    /// Delta `array` of elements of one type (elements may be null).
    Array(Box<ColumnType>),
    /// Delta `struct` of named fields (all nullable), in order.
    Struct(Vec<(String, ColumnType)>),
}

/// Characters a struct field name may not hold: they delimit the type's text (`struct<a:long>`),
/// or Parquet and Hive-style engines refuse them.
const NOT_IN_FIELD_NAMES: &[char] = &['<', '>', ':', ',', ' ', ';', '{', '}', '(', ')', '=', '`', '\n', '\t'];

/// The arrow name of a list's element field, as Delta's arrow conversion names it.
const ELEMENT: &str = "element";

impl ColumnType {
    /// Parses a Delta type name (`long`, `decimal(10,2)`, `array<struct<sku:string,qty:integer>>`).
    pub fn parse(name: &str) -> Option<Self> {
        let n = name.trim();
        let lower = n.to_ascii_lowercase();
        if let Some(inner) = strip_generic(n, "array") {
            return Self::parse(inner).filter(Self::can_nest).map(|t| Self::Array(Box::new(t)));
        }
        if let Some(inner) = strip_generic(n, "struct") {
            return parse_struct_fields(inner).map(Self::Struct);
        }
        Some(match lower.as_str() {
            "string" => Self::String,
            "long" | "bigint" => Self::Long,
            "integer" | "int" => Self::Integer,
            "short" | "smallint" => Self::Short,
            "double" => Self::Double,
            "float" => Self::Float,
            "boolean" => Self::Boolean,
            "date" => Self::Date,
            "timestamp" => Self::Timestamp,
            "json" => Self::Json,
            _ => {
                let inner = lower.strip_prefix("decimal(")?.strip_suffix(')')?;
                let (p, s) = inner.split_once(',')?;
                let (p, s): (u8, i8) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
                if p == 0 || p > 38 || s < 0 || s as u8 > p {
                    return None;
                }
                Self::Decimal(p, s)
            }
        })
    }

    /// Whether a value of this type may sit inside an array or struct (a `json` column keeps a
    /// field's text whole, which a nested value has no place for).
    fn can_nest(&self) -> bool {
        !matches!(self, Self::Json)
    }

    /// True for `array` and `struct` types.
    pub fn is_nested(&self) -> bool {
        matches!(self, Self::Array(_) | Self::Struct(_))
    }

    /// The column type stored as `data_type` (a string column is `string`, never `json`);
    /// None for types the pipeline does not write.
    pub fn from_arrow(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Utf8 => Self::String,
            DataType::Int64 => Self::Long,
            DataType::Int32 => Self::Integer,
            DataType::Int16 => Self::Short,
            DataType::Float64 => Self::Double,
            DataType::Float32 => Self::Float,
            DataType::Boolean => Self::Boolean,
            DataType::Date32 => Self::Date,
            DataType::Timestamp(TimeUnit::Microsecond, Some(zone)) if zone.as_ref() == "UTC" => Self::Timestamp,
            DataType::Decimal128(p, s) => Self::Decimal(*p, *s),
            DataType::List(element) => Self::Array(Box::new(Self::from_arrow(element.data_type())?)),
            DataType::Struct(fields) => {
                Self::Struct(fields.iter().map(|f| Some((f.name().clone(), Self::from_arrow(f.data_type())?))).collect::<Option<Vec<_>>>()?)
            }
            _ => return None,
        })
    }

    /// The Delta type name, as a schema file writes it.
    pub fn type_name(&self) -> String {
        match self {
            Self::String => "string".into(),
            Self::Long => "long".into(),
            Self::Integer => "integer".into(),
            Self::Short => "short".into(),
            Self::Double => "double".into(),
            Self::Float => "float".into(),
            Self::Boolean => "boolean".into(),
            Self::Date => "date".into(),
            Self::Timestamp => "timestamp".into(),
            Self::Decimal(p, s) => format!("decimal({p},{s})"),
            Self::Json => "json".into(),
            Self::Array(element) => format!("array<{}>", element.type_name()),
            Self::Struct(fields) => {
                let fields: Vec<String> = fields.iter().map(|(name, ty)| format!("{name}:{}", ty.type_name())).collect();
                format!("struct<{}>", fields.join(","))
            }
        }
    }

    /// The Arrow type stored in the table.
    pub fn arrow_type(&self) -> DataType {
        match self {
            Self::String | Self::Json => DataType::Utf8,
            Self::Long => DataType::Int64,
            Self::Integer => DataType::Int32,
            Self::Short => DataType::Int16,
            Self::Double => DataType::Float64,
            Self::Float => DataType::Float32,
            Self::Boolean => DataType::Boolean,
            Self::Date => DataType::Date32,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Decimal(p, s) => DataType::Decimal128(*p, *s),
            Self::Array(element) => DataType::List(Arc::new(Field::new(ELEMENT, element.arrow_type(), true))),
            Self::Struct(fields) => DataType::Struct(fields.iter().map(|(name, ty)| Field::new(name, ty.arrow_type(), true)).collect()),
        }
    }

    /// The dotted paths of the leaf values read under `path`: a struct's fields
    /// (`address.city`), through arrays of structs (`items[].sku`); `path` itself for other types.
    pub fn leaf_paths(&self, path: &str) -> Vec<String> {
        match self {
            Self::Struct(fields) => fields.iter().flat_map(|(name, ty)| ty.leaf_paths(&format!("{path}.{name}"))).collect(),
            Self::Array(element) if element.holds_struct() => element.leaf_paths(&format!("{path}[]")),
            _ => vec![path.to_string()],
        }
    }

    fn holds_struct(&self) -> bool {
        match self {
            Self::Struct(_) => true,
            Self::Array(element) => element.holds_struct(),
            _ => false,
        }
    }
}

/// `inner` of `name<inner>` (the name compared without case).
fn strip_generic<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = text.find('<')?;
    (text[..open].trim().eq_ignore_ascii_case(name) && text.ends_with('>')).then(|| &text[open + 1..text.len() - 1])
}

/// The fields of `struct<...>`: `name:type` separated by commas at the top nesting level; names
/// unique (without case) and usable as column names.
fn parse_struct_fields(inner: &str) -> Option<Vec<(String, ColumnType)>> {
    let mut fields: Vec<(String, ColumnType)> = Vec::new();
    for part in split_top_level(inner)? {
        let (name, ty) = part.split_once(':')?;
        let name = name.trim();
        let clash = fields.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if name.is_empty() || clash || name.contains(NOT_IN_FIELD_NAMES) || name.chars().any(char::is_control) {
            return None;
        }
        fields.push((name.to_string(), ColumnType::parse(ty).filter(ColumnType::can_nest)?));
    }
    (!fields.is_empty()).then_some(fields)
}

/// Splits at commas outside `<...>` and `(...)`; None when the brackets do not balance.
fn split_top_level(text: &str) -> Option<Vec<&str>> {
    let (mut depth, mut start, mut parts) = (0i32, 0, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '<' | '(' => depth += 1,
            '>' | ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    parts.push(&text[start..]);
    (depth == 0).then_some(parts)
}

impl TableSchema {
    /// Reads and validates a schema file; `key` names where the configuration refers to it.
    pub fn load(path: &Path, key: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut schema: TableSchema =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        schema.validate(key)?;
        Ok(schema)
    }

    fn validate(&mut self, key: &str) -> Result<(), ConfigError> {
        if self.columns.is_empty() {
            return Err(ConfigError::invalid(key, "the schema has no columns"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, col) in self.columns.iter_mut().enumerate() {
            let ckey = format!("{key}.columns[{i}]");
            if col.name.is_empty() || !seen.insert(col.name.clone()) {
                return Err(ConfigError::invalid(format!("{ckey}.name"), format!("column name '{}' is empty or repeated", col.name)));
            }
            let ty = ColumnType::parse(&col.type_name).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{ckey}.type"),
                    format!(
                        "unknown type '{}' (use string, long, integer, short, double, float, boolean, date, timestamp, decimal(p,s), json, array<T> or struct<name:T,...>; json cannot sit inside array or struct)",
                        col.type_name
                    ),
                )
            })?;
            let is_timestamp = ty == ColumnType::Timestamp;
            col.column_type = Some(ty);
            let ts = &col.timestamp;
            let has_ts_options = ts.format.is_some() || ts.timezone.is_some() || ts.epoch_unit.is_some();
            if has_ts_options && !is_timestamp {
                return Err(ConfigError::invalid(&ckey, "format, timezone and epoch_unit apply to timestamp columns only"));
            }
            if ts.epoch_unit.is_some() && (ts.format.is_some() || ts.timezone.is_some()) {
                return Err(ConfigError::invalid(&ckey, "epoch_unit excludes format and timezone: epoch numbers are UTC by definition"));
            }
            if let Some(tz) = &ts.timezone {
                tz.parse::<chrono_tz::Tz>().map_err(|_| {
                    ConfigError::invalid(format!("{ckey}.timezone"), format!("'{tz}' is not an IANA time zone such as UTC or Europe/Paris"))
                })?;
            }
            if let Some(fmt) = &ts.format {
                if chrono::format::StrftimeItems::new(fmt).any(|item| matches!(item, chrono::format::Item::Error)) {
                    return Err(ConfigError::invalid(format!("{ckey}.format"), format!("'{fmt}' is not a valid chrono format")));
                }
            }
        }
        // Dotted JSON names read nested fields: a path may not repeat or sit inside a value.
        let paths: Vec<(usize, &str)> = self.columns.iter().enumerate().map(|(i, c)| (i, c.json_key())).collect();
        for &(i, a) in &paths {
            if a.split('.').any(str::is_empty) {
                return Err(ConfigError::invalid(format!("{key}.columns[{i}].json_name"), format!("'{a}' has an empty segment")));
            }
            for &(j, b) in &paths {
                if i != j && (a == b || b.starts_with(&format!("{a}."))) {
                    return Err(ConfigError::invalid(
                        format!("{key}.columns[{j}].json_name"),
                        format!("'{b}' is read by columns[{i}] ('{a}') too"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Looks a column up by name.
    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The Arrow schema of the decoded columns (all nullable: required-ness is checked per row
    /// so that one bad message is rejected rather than the whole batch).
    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(self.columns.iter().map(|c| Field::new(&c.name, c.data_type(), true)).collect::<Vec<_>>()))
    }
}

impl ColumnSpec {
    /// The validated column type.
    pub fn data_type(&self) -> DataType {
        self.kind().arrow_type()
    }

    /// The validated column type (validation fills it; unparsed specs default to string).
    pub fn kind(&self) -> ColumnType {
        self.column_type.clone().or_else(|| ColumnType::parse(&self.type_name)).unwrap_or(ColumnType::String)
    }

    /// The dotted paths of the message values this column reads (see [`ColumnType::leaf_paths`]).
    pub fn read_paths(&self) -> Vec<String> {
        self.kind().leaf_paths(self.json_key())
    }

    /// The JSON key the value is read from.
    pub fn json_key(&self) -> &str {
        self.json_name.as_deref().unwrap_or(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_types_parse_name_and_map_to_arrow() {
        let ty = ColumnType::parse("array<struct<sku:string, qty:integer, price:decimal(10,2)>>").unwrap();
        let expected = ColumnType::Array(Box::new(ColumnType::Struct(vec![
            ("sku".into(), ColumnType::String),
            ("qty".into(), ColumnType::Integer),
            ("price".into(), ColumnType::Decimal(10, 2)),
        ])));
        assert_eq!(ty, expected);
        assert_eq!(ty.type_name(), "array<struct<sku:string,qty:integer,price:decimal(10,2)>>");
        assert_eq!(ColumnType::parse(&ty.type_name()), Some(ty.clone()));
        assert_eq!(ColumnType::from_arrow(&ty.arrow_type()), Some(ty.clone()));
        let DataType::List(element) = ty.arrow_type() else { panic!("an array is a list") };
        assert_eq!((element.name().as_str(), element.is_nullable()), ("element", true));
        let address = ColumnType::parse("struct<city:string,geo:struct<lat:double,lon:double>>").unwrap();
        assert_eq!(address.leaf_paths("address"), vec!["address.city", "address.geo.lat", "address.geo.lon"]);
        assert_eq!(ty.leaf_paths("items"), vec!["items[].sku", "items[].qty", "items[].price"]);
        assert_eq!(ColumnType::parse("array<long>").unwrap().leaf_paths("tags"), vec!["tags"]);
    }

    #[test]
    fn malformed_nested_types_are_refused() {
        for bad in [
            "array<>",
            "array<json>",
            "struct<>",
            "struct<a:json>",
            "struct<a long>",
            "struct<a:long,A:string>",
            "struct<a b:long>",
            "array<long",
            "struct<a:array<long>,b:long>>",
            "map<string,long>",
        ] {
            assert_eq!(ColumnType::parse(bad), None, "{bad}");
        }
        assert!(ColumnType::parse("struct<a:array<long>,b:map>").is_none());
        assert!(ColumnType::parse("ARRAY<Long>").is_some());
    }
}
