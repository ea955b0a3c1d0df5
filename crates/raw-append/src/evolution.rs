//! Schema evolution (`unknown_fields = "add_columns"`): which of a slice's new fields become
//! which columns of a table. The decision is pure; the batch commits it (a metadata-only
//! commit, before any row that carries the fields) and decodes the slice again.

use arrow::datatypes::{Field, Schema};
use json_arrow::{InferredColumn, NewFields};
use pipeline_config::{ColumnSpec, ColumnType};

/// Characters a column name may not hold (Parquet and Hive-style engines without Delta column
/// mapping refuse them).
const NOT_IN_NAMES: &[char] = &[' ', ',', ';', '{', '}', '(', ')', '\n', '\t', '='];

/// What a slice's new fields do to one table.
#[derive(Debug, Default)]
pub struct EvolutionPlan {
    /// Message columns the route gains, in the order their fields were first seen.
    pub columns: Vec<ColumnSpec>,
    /// Of those, the ones the table does not hold yet (the metadata commit adds them).
    pub new_in_table: Vec<Field>,
    /// Fields that do not become columns, with the reason (their values stay out of the table).
    pub refused: Vec<(String, String)>,
}

/// Plans the columns for `inferred` fields found by `fields`, for a route whose rows have the
/// columns of `route` and a table whose current schema is `table` (columns another writer
/// added keep the table's type).
pub fn plan(inferred: Vec<InferredColumn>, fields: &NewFields, route: &Schema, table: &Schema) -> EvolutionPlan {
    let paths: Vec<String> = inferred.iter().map(|c| c.json_name.clone().unwrap_or_else(|| c.name.clone())).collect();
    let mut out = EvolutionPlan::default();
    for (column, path) in inferred.into_iter().zip(&paths) {
        let parent = paths.iter().find(|p| path.starts_with(&format!("{p}.")));
        let has_children = paths.iter().any(|p| p.starts_with(&format!("{path}.")));
        let decided = match (parent, column.type_name) {
            _ if let Some(nested) = fields.inside_nested(path) => Err(format!(
                "'{nested}' is an array or struct column whose type does not name this field; evolution adds columns, not fields of nested types: add it to the type by hand"
            )),
            (Some(parent), _) => Err(format!("'{parent}' is sometimes a value: the whole of it is kept in its own json column")),
            // Nothing to infer from (only nulls, only `[]`), but the table already has the column.
            (None, Err(reason)) => table_type(&column.name, table).ok_or(reason),
            (None, Ok(_)) if has_children => Ok(ColumnType::Json),
            (None, Ok(name)) => ColumnType::parse(&name).ok_or_else(|| format!("inferred type {name} is not a column type")),
        };
        let decided = decided.and_then(|ty| column_type(&column.name, ty, route, table));
        match decided {
            Ok((ty, in_table)) => {
                let json_name = Some(fields.message_path(path)).filter(|p| *p != column.name);
                if !in_table {
                    out.new_in_table.push(Field::new(&column.name, ty.arrow_type(), true));
                }
                out.columns.push(ColumnSpec {
                    name: column.name,
                    json_name,
                    type_name: ty.type_name(),
                    required: false,
                    timestamp: Default::default(),
                    column_type: Some(ty),
                });
            }
            Err(reason) => out.refused.push((fields.message_path(path), reason)),
        }
    }
    out
}

/// The type of the table's column `name`, when it has one that raw-append writes.
fn table_type(name: &str, table: &Schema) -> Option<ColumnType> {
    ColumnType::from_arrow(table.field_with_name(name).ok()?.data_type())
}

/// The type of new column `name` (the table's when it holds one of that name already, then
/// true), or why it cannot be added.
fn column_type(name: &str, inferred: ColumnType, route: &Schema, table: &Schema) -> Result<(ColumnType, bool), String> {
    if name.is_empty() || name.contains(NOT_IN_NAMES) || name.chars().any(char::is_control) {
        return Err(format!("'{name}' cannot be a column name (no spaces, control characters or ,;{{}}()=)"));
    }
    if route.fields().iter().any(|f| f.name().eq_ignore_ascii_case(name)) {
        return Err(format!("a column named '{name}' is already written from elsewhere (names compare without case)"));
    }
    let Some(existing) = table.fields().iter().find(|f| f.name().eq_ignore_ascii_case(name)) else { return Ok((inferred, false)) };
    if existing.name() != name {
        return Err(format!("the table has a column '{}' (names compare without case)", existing.name()));
    }
    if *existing.data_type() == inferred.arrow_type() {
        return Ok((inferred, true));
    }
    match ColumnType::from_arrow(existing.data_type()) {
        Some(ty) => Ok((ty, true)),
        None => Err(format!("the table's column '{name}' is of type {}, which raw-append does not write", existing.data_type())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;
    use json_arrow::SchemaInference;

    fn inferred(messages: &[&str]) -> Vec<InferredColumn> {
        let mut inference = SchemaInference::new("_", 2);
        let fields = NewFields::new(["id"], None);
        for m in messages {
            fields.observe(m.as_bytes(), &mut inference);
        }
        inference.evolution_columns()
    }

    fn schema(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>())
    }

    fn columns(plan: &EvolutionPlan) -> Vec<(&str, Option<&str>, &str)> {
        plan.columns.iter().map(|c| (c.name.as_str(), c.json_name.as_deref(), c.type_name.as_str())).collect()
    }

    #[test]
    fn new_fields_become_nullable_columns_read_from_their_paths() {
        let route = schema(&[("id", DataType::Int64), ("_kafka_offset", DataType::Int64)]);
        let found = inferred(&[r#"{"id": 1, "price": 2.5, "address": {"city": "Oslo"}, "tags": ["a"], "seen": "2026-01-02 03:04:05"}"#]);
        let plan = plan(found, &NewFields::new(["id"], None), &route, &route);
        assert_eq!(
            columns(&plan),
            vec![
                ("price", None, "double"),
                ("address_city", Some("address.city"), "string"),
                ("tags", None, "json"),
                ("seen", None, "timestamp")
            ]
        );
        assert_eq!(plan.new_in_table.len(), 4);
        assert!(plan.new_in_table.iter().all(|f| f.is_nullable()));
        assert!(plan.refused.is_empty());
    }

    #[test]
    fn columns_another_writer_added_keep_the_tables_type_and_clashes_are_refused() {
        let route = schema(&[("id", DataType::Int64), ("_kafka_offset", DataType::Int64)]);
        let table =
            schema(&[("id", DataType::Int64), ("_kafka_offset", DataType::Int64), ("price", DataType::Utf8), ("Qty", DataType::Int64)]);
        let found = inferred(&[r#"{"id": 1, "price": 2, "qty": 3, "_KAFKA_OFFSET": 4, "a b": 5, "nothing": null}"#]);
        let plan = plan(found, &NewFields::new(["id"], None), &route, &table);
        assert_eq!(columns(&plan), vec![("price", None, "string")]);
        assert!(plan.new_in_table.is_empty(), "price exists in the table");
        let refused: Vec<&str> = plan.refused.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(refused, vec!["qty", "_KAFKA_OFFSET", "a b", "nothing"]);
    }

    #[test]
    fn a_field_that_is_sometimes_an_object_is_kept_whole() {
        let route = schema(&[("id", DataType::Int64)]);
        let found = inferred(&[r#"{"id": 1, "size": 3}"#, r#"{"id": 2, "size": {"w": 1}}"#]);
        let plan = plan(found, &NewFields::new(["id"], None), &route, &route);
        assert_eq!(columns(&plan), vec![("size", None, "json")]);
        assert_eq!(plan.refused.len(), 1);
        assert_eq!(plan.refused[0].0, "size.w");
    }

    #[test]
    fn typed_nested_fields_become_array_and_struct_columns_whose_fields_are_then_fixed() {
        let route = schema(&[("id", DataType::Int64)]);
        let mut inference = SchemaInference::new("_", 1).nested_as(pipeline_config::NestedAs::Typed);
        let fields = NewFields::new(["id"], None);
        fields.observe(br#"{"id": 1, "items": [{"sku": "a", "qty": 2}], "address": {"city": "Oslo"}}"#, &mut inference);
        let first = plan(inference.evolution_columns(), &fields, &route, &route);
        assert_eq!(columns(&first), vec![("items", None, "array<struct<sku:string,qty:long>>"), ("address", None, "struct<city:string>")]);
        assert_eq!(first.new_in_table[0].data_type(), &ColumnType::parse("array<struct<sku:string,qty:long>>").unwrap().arrow_type());

        // The evolved route reads those columns; a field their types do not name is refused.
        let evolved = schema(&[("id", DataType::Int64), ("address", first.columns[1].kind().arrow_type())]);
        let fields = NewFields::new(["id", "address.city"], None).with_nested(["address".to_string()]);
        let mut inference = SchemaInference::new("_", 2).nested_as(pipeline_config::NestedAs::Typed);
        fields.observe(br#"{"id": 2, "address": {"city": "Oslo", "zip": "0150"}}"#, &mut inference);
        let second = plan(inference.evolution_columns(), &fields, &evolved, &evolved);
        assert!(second.columns.is_empty());
        assert_eq!(second.refused[0].0, "address.zip");
        assert!(second.refused[0].1.contains("'address' is an array or struct column"), "{}", second.refused[0].1);

        // After a restart, a field seen only as `[]` takes the type the table gave it.
        let table = schema(&[("id", DataType::Int64), ("items", first.columns[0].kind().arrow_type())]);
        let mut inference = SchemaInference::new("_", 1).nested_as(pipeline_config::NestedAs::Typed);
        NewFields::new(["id"], None).observe(br#"{"id": 3, "items": []}"#, &mut inference);
        let restarted = plan(inference.evolution_columns(), &NewFields::new(["id"], None), &route, &table);
        assert_eq!(columns(&restarted), vec![("items", None, "array<struct<sku:string,qty:long>>")]);
        assert!(restarted.new_in_table.is_empty() && restarted.refused.is_empty());
    }

    #[test]
    fn dms_columns_are_read_under_data() {
        let route = schema(&[("id", DataType::Int64)]);
        let mut inference = SchemaInference::new("_", 2);
        let fields = NewFields::new(["id"], Some("data"));
        fields.observe(br#"{"data": {"id": 1, "email": "a@b"}, "metadata": {"operation": "load"}}"#, &mut inference);
        let plan = plan(inference.evolution_columns(), &fields, &route, &route);
        assert_eq!(columns(&plan), vec![("email", Some("data.email"), "string")]);
    }
}
