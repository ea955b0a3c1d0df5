//! The shape of arrays and objects kept whole (`nested = "typed"`): merged over every value
//! seen, it names a Delta `array<...>` / `struct<...>` type.

use std::collections::BTreeSet;

use pipeline_config::ColumnType;

use super::{scalar_type, Kind, Value};

/// What the values of a nested field looked like, merged over the samples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Shape {
    /// Nothing but nulls and empty arrays yet.
    #[default]
    Unknown,
    /// Scalars of these kinds.
    Scalar(BTreeSet<Kind>),
    /// Arrays whose elements have this shape.
    Array(Box<Shape>),
    /// Objects with these fields, in the order first seen.
    Object(Vec<(String, Shape)>),
    /// Values of different shapes (an array here, an object or a scalar there).
    Mixed,
}

impl Shape {
    /// The shape of one value; `kind` tells scalars apart.
    pub(super) fn of(value: &Value, kind: &impl Fn(&Value) -> Kind) -> Shape {
        match value {
            Value::Null => Shape::Unknown,
            Value::Array(items) => Shape::Array(Box::new(items.iter().fold(Shape::Unknown, |acc, v| acc.merged(Shape::of(v, kind))))),
            // Merged into an empty object so that a key sent twice is one field.
            Value::Object(fields) => {
                Shape::Object(Vec::new()).merged(Shape::Object(fields.iter().map(|(k, v)| (k.clone(), Shape::of(v, kind))).collect()))
            }
            scalar => Shape::Scalar(BTreeSet::from([kind(scalar)])),
        }
    }

    /// The shape that fits values of both.
    pub(super) fn merged(self, other: Shape) -> Shape {
        match (self, other) {
            (Shape::Unknown, s) | (s, Shape::Unknown) => s,
            (Shape::Scalar(mut a), Shape::Scalar(b)) => {
                a.extend(b);
                Shape::Scalar(a)
            }
            (Shape::Array(a), Shape::Array(b)) => Shape::Array(Box::new(a.merged(*b))),
            (Shape::Object(mut a), Shape::Object(b)) => {
                for (key, shape) in b {
                    match a.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, mine)) => *mine = std::mem::take(mine).merged(shape),
                        None => a.push((key, shape)),
                    }
                }
                Shape::Object(a)
            }
            _ => Shape::Mixed,
        }
    }

    /// The column type for values of this shape: Ok(None) when they are better kept as JSON
    /// text (shapes that disagree, keys that cannot be field names), Err when nothing but
    /// nulls and empty arrays were seen.
    pub(super) fn column_type(&self) -> Result<Option<String>, String> {
        let named = match self.type_name() {
            Err(Unnamed::Unknown) => return Err("only nulls or empty arrays seen: no type to infer".into()),
            Err(Unnamed::Json) => return Ok(None),
            Ok(name) => name,
        };
        Ok(ColumnType::parse(&named).map(|_| named))
    }

    fn type_name(&self) -> Result<String, Unnamed> {
        match self {
            Shape::Unknown => Err(Unnamed::Unknown),
            Shape::Mixed => Err(Unnamed::Json),
            // Scalars of different kinds keep their JSON text in a string, as new columns do.
            Shape::Scalar(kinds) => Ok(scalar_type(kinds).unwrap_or_else(|_| "string".into())),
            Shape::Array(element) => Ok(format!("array<{}>", element.type_name()?)),
            Shape::Object(fields) if fields.is_empty() => Err(Unnamed::Json),
            Shape::Object(fields) => {
                let mut parts = Vec::with_capacity(fields.len());
                for (key, shape) in fields {
                    // A field only ever null: its text, whatever comes later, fits a string.
                    let ty = match shape.type_name() {
                        Err(Unnamed::Unknown) => "string".into(),
                        other => other?,
                    };
                    parts.push(format!("{key}:{ty}"));
                }
                Ok(format!("struct<{}>", parts.join(",")))
            }
        }
    }
}

/// Why a shape names no type.
enum Unnamed {
    Unknown,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_of(values: &[&str]) -> Shape {
        let kind = |v: &Value| match v {
            Value::Long => Kind::Long,
            Value::Double => Kind::Double,
            Value::Bool => Kind::Bool,
            _ => Kind::Text,
        };
        values.iter().map(|t| Shape::of(&serde_json::from_str(t).unwrap(), &kind)).fold(Shape::Unknown, Shape::merged)
    }

    #[test]
    fn arrays_and_objects_merge_into_one_type() {
        let items = shape_of(&[r#"[{"sku": "a", "qty": 1}]"#, r#"[]"#, r#"[{"sku": "b", "qty": 2.5, "note": null}, null]"#]);
        assert_eq!(items.column_type(), Ok(Some("array<struct<sku:string,qty:double,note:string>>".into())));
        assert_eq!(shape_of(&["[[1, 2], [3]]"]).column_type(), Ok(Some("array<array<long>>".into())));
        assert_eq!(shape_of(&["[1, \"x\"]"]).column_type(), Ok(Some("array<string>".into())), "mixed scalars keep their text");
    }

    #[test]
    fn disagreeing_shapes_are_json_and_only_empty_ones_have_no_type() {
        assert_eq!(shape_of(&["[1]", r#"[{"a": 1}]"#]).column_type(), Ok(None));
        assert_eq!(shape_of(&[r#"{"a b": 1}"#]).column_type(), Ok(None), "a key that cannot be a field name");
        assert_eq!(shape_of(&[r#"{"a": 1, "A": 2}"#]).column_type(), Ok(None), "names that differ only in case");
        assert!(shape_of(&["[]", "[null]"]).column_type().unwrap_err().contains("only nulls or empty arrays"));
    }
}
