//! Athena DDL for the catalog tables: the statements a person or a SQL client runs, so a
//! scheduler can register partitions without `MSCK REPAIR TABLE`.

use deltalake::kernel::{DataType, PrimitiveType};
use deltalake::DeltaTable;
use serde::Serialize;

use super::model::{catalog_tables, CatalogTables, Column};
use crate::MaintenanceError;

/// The statements for one table.
#[derive(Debug, Clone, Serialize)]
pub struct AthenaDdl {
    /// `CREATE EXTERNAL TABLE ... TBLPROPERTIES ('table_type'='DELTA')`.
    pub native: String,
    /// `CREATE EXTERNAL TABLE ..._symlink (...) ... SymlinkTextInputFormat`.
    pub symlink: String,
    /// One `ALTER TABLE ... ADD IF NOT EXISTS PARTITION ... LOCATION ...` per partition.
    pub add_partitions: Vec<String>,
}

impl AthenaDdl {
    /// All statements, each ending with `;`, separated by blank lines.
    pub fn script(&self) -> String {
        let mut out = vec![self.native.clone(), self.symlink.clone()];
        out.extend(self.add_partitions.iter().cloned());
        out.iter().map(|s| format!("{s};")).collect::<Vec<_>>().join("\n\n") + "\n"
    }
}

/// The DDL for `table` registered as `database.name` (native) and `database.name_symlink`
/// (manifests; partitions are those with active files at the loaded version).
pub fn athena_ddl(table: &DeltaTable, database: &str, name: &str) -> Result<AthenaDdl, MaintenanceError> {
    render(&catalog_tables(table, database, name)?)
}

/// The statements that create `tables`.
fn render(tables: &CatalogTables) -> Result<AthenaDdl, MaintenanceError> {
    let qualified = |n: &str| format!("{}.{}", ident(&tables.database), ident(n));
    let column = |c: &Column| Ok(format!("{} {}", ident(&c.name), hive_type(&c.data_type, TypeSyntax::Ddl)?));
    let native = format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS {}\nLOCATION '{}'\nTBLPROPERTIES ('table_type'='DELTA')",
        qualified(&tables.native.name),
        literal(&tables.native.location)
    );
    let symlink_table = &tables.symlink;
    let data_columns =
        symlink_table.columns.iter().map(|c| Ok(format!("  {}", column(c)?))).collect::<Result<Vec<_>, MaintenanceError>>()?;
    let partitioned = symlink_table.partition_keys.iter().map(column).collect::<Result<Vec<_>, MaintenanceError>>()?;
    let mut symlink = format!("CREATE EXTERNAL TABLE IF NOT EXISTS {} (\n{}\n)", qualified(&symlink_table.name), data_columns.join(",\n"));
    if !partitioned.is_empty() {
        symlink.push_str(&format!("\nPARTITIONED BY ({})", partitioned.join(", ")));
    }
    symlink.push_str(&format!(
        "\nROW FORMAT SERDE '{PARQUET_SERDE}'\nSTORED AS INPUTFORMAT '{SYMLINK_INPUT_FORMAT}'\nOUTPUTFORMAT '{IGNORE_KEY_OUTPUT_FORMAT}'\nLOCATION '{}'",
        literal(&symlink_table.location)
    ));
    let add_partitions = tables
        .partitions
        .iter()
        .map(|partition| {
            let spec: Vec<String> = symlink_table
                .partition_keys
                .iter()
                .zip(&partition.values)
                .map(|(key, value)| format!("{}='{}'", ident(&key.name), literal(value)))
                .collect();
            format!(
                "ALTER TABLE {} ADD IF NOT EXISTS PARTITION ({}) LOCATION '{}'",
                qualified(&symlink_table.name),
                spec.join(", "),
                literal(&partition.location)
            )
        })
        .collect();
    Ok(AthenaDdl { native, symlink, add_partitions })
}

/// Hive's Parquet SerDe (both tables' files are Parquet).
pub(crate) const PARQUET_SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";
/// Reads the files a symlink manifest lists.
pub(crate) const SYMLINK_INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat";
/// The output format Hive pairs with the symlink input format (never written through).
pub(crate) const IGNORE_KEY_OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat";

/// How struct field names are written inside a type: back-quoted in DDL, bare in Glue's
/// column types (as Athena itself stores them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeSyntax {
    Ddl,
    Glue,
}

/// The Hive type Athena reads a Delta type as.
pub(crate) fn hive_type(t: &DataType, syntax: TypeSyntax) -> Result<String, MaintenanceError> {
    Ok(match t {
        DataType::Primitive(p) => match p {
            PrimitiveType::String => "string".into(),
            PrimitiveType::Long => "bigint".into(),
            PrimitiveType::Integer => "int".into(),
            PrimitiveType::Short => "smallint".into(),
            PrimitiveType::Byte => "tinyint".into(),
            PrimitiveType::Float => "float".into(),
            PrimitiveType::Double => "double".into(),
            PrimitiveType::Boolean => "boolean".into(),
            PrimitiveType::Binary => "binary".into(),
            PrimitiveType::Date => "date".into(),
            PrimitiveType::Timestamp | PrimitiveType::TimestampNtz => "timestamp".into(),
            PrimitiveType::Decimal(d) => format!("decimal({},{})", d.precision(), d.scale()),
            other => return Err(MaintenanceError::Refused(format!("column type {other:?} has no Athena (Hive) equivalent"))),
        },
        DataType::Array(a) => format!("array<{}>", hive_type(a.element_type(), syntax)?),
        DataType::Map(m) => format!("map<{},{}>", hive_type(m.key_type(), syntax)?, hive_type(m.value_type(), syntax)?),
        DataType::Struct(s) => {
            let fields = s
                .fields()
                .map(|f| {
                    let name = if syntax == TypeSyntax::Ddl { ident(f.name()) } else { f.name().to_string() };
                    Ok(format!("{name}:{}", hive_type(f.data_type(), syntax)?))
                })
                .collect::<Result<Vec<_>, MaintenanceError>>()?;
            format!("struct<{}>", fields.join(","))
        }
        DataType::Variant(_) => return Err(MaintenanceError::Refused("variant columns have no Athena (Hive) equivalent".into())),
    })
}

/// A back-quoted identifier.
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The inside of a single-quoted Hive string literal.
fn literal(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::kernel::{ArrayType, DecimalType, MapType, StructField, StructType};

    #[test]
    fn hive_types() {
        let t = |d: DataType| hive_type(&d, TypeSyntax::Ddl).unwrap();
        assert_eq!(t(DataType::LONG), "bigint");
        assert_eq!(t(DataType::TIMESTAMP), "timestamp");
        assert_eq!(t(DataType::Primitive(PrimitiveType::Decimal(DecimalType::try_new(10, 2).unwrap()))), "decimal(10,2)");
        assert_eq!(t(DataType::Array(Box::new(ArrayType::new(DataType::STRING, true)))), "array<string>");
        assert_eq!(t(DataType::Map(Box::new(MapType::new(DataType::STRING, DataType::INTEGER, true)))), "map<string,int>");
        let inner =
            StructType::try_new(vec![StructField::new("a", DataType::INTEGER, true), StructField::new("b c", DataType::DOUBLE, true)])
                .unwrap();
        assert_eq!(t(DataType::Struct(Box::new(inner.clone()))), "struct<`a`:int,`b c`:double>");
        assert_eq!(hive_type(&DataType::Struct(Box::new(inner)), TypeSyntax::Glue).unwrap(), "struct<a:int,b c:double>");
    }

    #[test]
    fn literals_and_identifiers_are_quoted() {
        assert_eq!(literal("it's a\\b"), "it\\'s a\\\\b");
        assert_eq!(ident("we`ird"), "`we``ird`");
    }
}
