//! Array and struct columns: arrow-json decodes them with every number and timestamp inside as
//! its text, and each value is then converted exactly like a top-level one (a value its field
//! cannot hold rejects the message that carries it, naming the field).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use arrow::error::ArrowError;
use pipeline_config::{ColumnType, TimestampSpec};

use crate::numbers::{convert_numbers, NumberKind};
use crate::TimestampParser;

/// What arrow-json decodes a nested column of `ty` into: the stored type, with numbers and
/// timestamps at any depth as their text.
pub(crate) fn wire_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::Array(element) => DataType::List(element_field(element, wire_type(element))),
        ColumnType::Struct(fields) => DataType::Struct(fields.iter().map(|(name, t)| Field::new(name, wire_type(t), true)).collect()),
        ColumnType::Timestamp => DataType::Utf8,
        other if NumberKind::of(other).is_some() => DataType::Utf8,
        other => other.arrow_type(),
    }
}

/// The element field of a list of `element` values, holding `data_type`.
fn element_field(element: &ColumnType, data_type: DataType) -> FieldRef {
    let DataType::List(stored) = ColumnType::Array(Box::new(element.clone())).arrow_type() else {
        unreachable!("an array column is stored as a list")
    };
    Arc::new(stored.as_ref().clone().with_data_type(data_type))
}

/// Converts `wire` (decoded as [`wire_type`] of `ty`) into the stored type; a value that does
/// not fit goes to `bad` as (row, reason) with its path (`items[].qty`) and becomes null.
pub(crate) fn convert(path: &str, ty: &ColumnType, wire: &ArrayRef, bad: &mut Vec<(usize, String)>) -> Result<ArrayRef, ArrowError> {
    match ty {
        ColumnType::Array(element) => {
            let list = wire.as_list::<i32>();
            let mut inner_bad = Vec::new();
            let values = convert(&format!("{path}[]"), element, list.values(), &mut inner_bad)?;
            if !inner_bad.is_empty() {
                let owners = owners(list.offsets(), list.values().len());
                bad.extend(inner_bad.into_iter().map(|(i, reason)| (owners[i], reason)));
            }
            let field = element_field(element, element.arrow_type());
            Ok(Arc::new(ListArray::try_new(field, list.offsets().clone(), values, list.nulls().cloned())?))
        }
        ColumnType::Struct(fields) => {
            let object = wire.as_struct();
            let mut columns = Vec::with_capacity(fields.len());
            for ((name, t), column) in fields.iter().zip(object.columns()) {
                columns.push(convert(&format!("{path}.{name}"), t, column, bad)?);
            }
            let DataType::Struct(stored) = ty.arrow_type() else { unreachable!("a struct column is stored as a struct") };
            Ok(Arc::new(StructArray::try_new(stored, columns, object.nulls().cloned())?))
        }
        ColumnType::Timestamp => {
            let parser = TimestampParser::from_spec(&TimestampSpec::default());
            Ok(Arc::new(parser.convert_strings(path, wire.as_string::<i32>(), bad)))
        }
        other => match NumberKind::of(other) {
            Some(kind) => convert_numbers(path, kind, wire.as_string::<i32>(), bad),
            None => Ok(wire.clone()),
        },
    }
}

/// For each of a list's `len` values, the row whose list holds it.
fn owners(offsets: &OffsetBuffer<i32>, len: usize) -> Vec<usize> {
    let mut owner = vec![0; len];
    for (row, range) in offsets.windows(2).enumerate() {
        let (start, end) = (range[0] as usize, range[1] as usize);
        owner[start.min(len)..end.min(len)].fill(row);
    }
    owner
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn wire_types_hold_numbers_and_timestamps_as_text() {
        let ty = ColumnType::parse("array<struct<qty:long,at:timestamp,ok:boolean>>").unwrap();
        let expected = ColumnType::parse("array<struct<qty:string,at:string,ok:boolean>>").unwrap().arrow_type();
        assert_eq!(wire_type(&ty), expected);
    }

    #[test]
    fn a_bad_element_names_its_path_and_rejects_the_row_that_holds_it() {
        let ty = ColumnType::parse("array<long>").unwrap();
        let values: ArrayRef = Arc::new(StringArray::from(vec![Some("1"), Some("2"), Some("3.5"), None, Some("4")]));
        let field = element_field(&ColumnType::Long, DataType::Utf8);
        let wire: ArrayRef = Arc::new(ListArray::new(field, OffsetBuffer::new(vec![0, 2, 2, 4, 5].into()), values, None));
        let mut bad = Vec::new();
        let out = convert("tags", &ty, &wire, &mut bad).unwrap();
        assert_eq!(bad, vec![(2, "field 'tags[]': 3.5 is not an integer (column type long)".to_string())]);
        let list = out.as_list::<i32>();
        assert_eq!(out.data_type(), &ty.arrow_type());
        let first = list.value(0);
        assert_eq!(first.as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec(), vec![1, 2]);
        assert_eq!(list.value(1).len(), 0);
    }
}
