//! Athena DDL for a Delta table: the native Delta table and the symlink-manifest table with
//! its partitions, so a scheduler can register partitions without `MSCK REPAIR TABLE`.

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::{DataType, PrimitiveType, StructType};
use deltalake::DeltaTable;
use serde::Serialize;

use crate::manifest::{hive_value, partition_directory, plain_root_uri, MANIFEST_DIR};
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
    let location = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(MaintenanceError::delta(&location))?;
    let root = plain_root_uri(table.table_url());
    let schema: StructType = snapshot.schema().as_ref().clone();
    let partition_columns = snapshot.metadata().partition_columns().to_vec();
    let qualified = |n: &str| format!("{}.{}", ident(database), ident(n));
    let symlink_name = format!("{name}_symlink");

    let native = format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS {}\nLOCATION '{}/'\nTBLPROPERTIES ('table_type'='DELTA')",
        qualified(name),
        literal(&root)
    );

    let mut data_columns = Vec::new();
    let mut partition_specs = Vec::new();
    for field in schema.fields() {
        let column = format!("  {} {}", ident(field.name()), hive_type(field.data_type())?);
        if partition_columns.contains(field.name()) {
            partition_specs.push((field.name().to_string(), column));
        } else {
            data_columns.push(column);
        }
    }
    // PARTITIONED BY follows the table's partition order, not the schema's.
    let partitioned: Vec<String> =
        partition_columns.iter().filter_map(|p| partition_specs.iter().find(|(n, _)| n == p).map(|(_, c)| c.trim().to_string())).collect();
    let mut symlink = format!("CREATE EXTERNAL TABLE IF NOT EXISTS {} (\n{}\n)", qualified(&symlink_name), data_columns.join(",\n"));
    if !partitioned.is_empty() {
        symlink.push_str(&format!("\nPARTITIONED BY ({})", partitioned.join(", ")));
    }
    symlink.push_str(&format!(
        "\nROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'\n\
         STORED AS INPUTFORMAT 'org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat'\n\
         OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'\n\
         LOCATION '{}/{MANIFEST_DIR}/'",
        literal(&root)
    ));

    let mut partitions: BTreeMap<String, HashMap<String, Option<String>>> = BTreeMap::new();
    if !partition_columns.is_empty() {
        for file in snapshot.log_data() {
            let values = file.partition_values_map();
            partitions.entry(partition_directory(&partition_columns, &values)).or_insert(values);
        }
    }
    let add_partitions = partitions
        .iter()
        .map(|(directory, values)| {
            let spec: Vec<String> =
                partition_columns.iter().map(|c| format!("{}='{}'", ident(c), literal(hive_value(values, c)))).collect();
            format!(
                "ALTER TABLE {} ADD IF NOT EXISTS PARTITION ({}) LOCATION '{}/{MANIFEST_DIR}/{}/'",
                qualified(&symlink_name),
                spec.join(", "),
                literal(&root),
                literal(directory)
            )
        })
        .collect();
    Ok(AthenaDdl { native, symlink, add_partitions })
}

/// The Hive type Athena reads a Delta type as.
pub(crate) fn hive_type(t: &DataType) -> Result<String, MaintenanceError> {
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
        DataType::Array(a) => format!("array<{}>", hive_type(a.element_type())?),
        DataType::Map(m) => format!("map<{},{}>", hive_type(m.key_type())?, hive_type(m.value_type())?),
        DataType::Struct(s) => {
            let fields = s
                .fields()
                .map(|f| Ok(format!("{}:{}", ident(f.name()), hive_type(f.data_type())?)))
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
    use deltalake::kernel::{ArrayType, DecimalType, MapType, StructField};

    #[test]
    fn hive_types() {
        let t = |d: DataType| hive_type(&d).unwrap();
        assert_eq!(t(DataType::LONG), "bigint");
        assert_eq!(t(DataType::TIMESTAMP), "timestamp");
        assert_eq!(t(DataType::Primitive(PrimitiveType::Decimal(DecimalType::try_new(10, 2).unwrap()))), "decimal(10,2)");
        assert_eq!(t(DataType::Array(Box::new(ArrayType::new(DataType::STRING, true)))), "array<string>");
        assert_eq!(t(DataType::Map(Box::new(MapType::new(DataType::STRING, DataType::INTEGER, true)))), "map<string,int>");
        let inner =
            StructType::try_new(vec![StructField::new("a", DataType::INTEGER, true), StructField::new("b c", DataType::DOUBLE, true)])
                .unwrap();
        assert_eq!(t(DataType::Struct(Box::new(inner))), "struct<`a`:int,`b c`:double>");
    }

    #[test]
    fn literals_and_identifiers_are_quoted() {
        assert_eq!(literal("it's a\\b"), "it\\'s a\\\\b");
        assert_eq!(ident("we`ird"), "`we``ird`");
    }
}
