//! Source (Kafka topic or Kinesis stream) → table routes resolved from the configuration.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use delta_io::TableSpec;
use json_arrow::{KnownFields, MessageDecoder, NewFields};
use pipeline_config::{
    ColumnSpec, Flatten, MetadataColumn, PartitionSource, PartitionSpec, PipelineConfig, RawAppendConfig, RawAppendSource, SourceFormat,
    SourceKind, TableConfig, UnknownFields,
};

use crate::router::Router;

/// One topic or stream routed into one table, with everything needed to turn messages into rows.
#[derive(Debug)]
pub struct Route {
    /// Source topic or stream (the `topic` of its partition keys).
    pub source: String,
    /// Kafka or Kinesis.
    pub kind: SourceKind,
    /// Logical table name (key under `[tables]`).
    pub table_name: String,
    /// Where and how the table is stored.
    pub spec: TableSpec,
    /// Decoder for the table's message schema.
    pub decoder: MessageDecoder,
    /// Partition columns and their sources.
    pub partitions: Vec<PartitionSpec>,
    /// Source metadata columns appended after the message columns.
    pub metadata: Vec<MetadataColumn>,
    /// `unknown_fields = "rescue"`: the paths the schema reads (the rest goes to `_rescued_data`,
    /// after the metadata columns).
    pub rescue: Option<KnownFields>,
    /// Bytes of the table's own object key prefix (S3 keys are limited as a whole).
    pub table_key_bytes: usize,
    /// How the source's messages are laid out.
    pub format: SourceFormat,
    /// A table of a routed source: it receives some of the source's messages and keeps its
    /// own floor of each partition; the source's progress is kept by the source's route.
    pub routed: bool,
    /// `unknown_fields = "add_columns"`: where new fields are looked for.
    pub evolution: Option<NewFields>,
    /// The source and table it was resolved from (an evolved route is resolved again).
    origin: Origin,
    /// When the table's column order differs from the order rows are built in (columns added
    /// by evolution come last in the table): for each table column, its built position.
    pub order: Option<Vec<usize>>,
}

/// What a route was resolved from.
#[derive(Debug, Clone)]
struct Origin {
    src: Arc<RawAppendSource>,
    table: TableConfig,
    max_message_bytes: usize,
}

impl Route {
    /// Resolves every route of the raw-append configuration: one per source (the table it is
    /// written to, or for a routed source the table keeping its progress), then the routed
    /// tables, and each routed source's router.
    pub fn all(config: &PipelineConfig, job: &RawAppendConfig) -> (Vec<Route>, HashMap<String, Router>) {
        let (max, storage) = (job.max_message_bytes.0 as usize, &config.lake.storage_options);
        let sources: Vec<Arc<RawAppendSource>> = job.sources.iter().cloned().map(Arc::new).collect();
        let mut routes: Vec<Route> = sources.iter().map(|src| Route::new(src, &src.table, max, storage)).collect();
        let mut routers = HashMap::new();
        for src in &sources {
            let Some(routing) = &src.routing else { continue };
            let mut by_name = HashMap::new();
            for (name, table) in &routing.tables {
                by_name.insert(name.clone(), routes.len());
                routes.push(Route { routed: true, ..Route::new(src, table, max, storage) });
            }
            routers.insert(src.name.clone(), Router::new(routing.clone(), by_name));
        }
        (routes, routers)
    }

    fn new(src: &Arc<RawAppendSource>, table: &TableConfig, max_message_bytes: usize, storage: &BTreeMap<String, String>) -> Route {
        let message_schema = src.format.message_schema(&table.schema);
        let decoder = MessageDecoder::new(&message_schema, max_message_bytes);
        let mut fields: Vec<Field> = decoder.table_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        let appended = src.appended_columns().into_iter();
        fields.extend(appended.map(|(name, ty)| Field::new(name, ty.map_or(DataType::Binary, |t| t.arrow_type()), true)));
        // A DMS record's `metadata` is the format's envelope, never a field to rescue.
        let envelope = (src.format == SourceFormat::Dms).then_some("metadata");
        let read: Vec<String> = message_schema.columns.iter().flat_map(ColumnSpec::read_paths).collect();
        let rescue = src.rescues().then(|| KnownFields::from_paths(read.iter().map(String::as_str).chain(envelope)));
        let derived = table.partitions.iter().filter(|p| p.source != PartitionSource::Column);
        fields.extend(derived.map(|p| Field::new(&p.column, DataType::Utf8, true)));
        Route {
            table_key_bytes: object_key_bytes(&table.location),
            source: src.name.clone(),
            kind: src.kind,
            table_name: table.name.clone(),
            spec: TableSpec {
                location: table.location.clone(),
                name: table.name.clone(),
                schema: Arc::new(Schema::new(fields)),
                partition_columns: table.partition_columns(),
                properties: table.properties.clone(),
                storage: storage.clone(),
            },
            decoder,
            partitions: table.partitions.clone(),
            metadata: src.metadata_columns.clone(),
            rescue,
            format: src.format,
            routed: false,
            evolution: (src.unknown_fields == UnknownFields::AddColumns).then(|| new_fields(src.format, &message_schema.columns)),
            origin: Origin { src: src.clone(), table: table.clone(), max_message_bytes },
            order: None,
        }
    }

    /// A routed table of the same source (an inferred table seen for the first time).
    pub fn sibling(&self, table: &TableConfig) -> Route {
        let Origin { src, max_message_bytes, .. } = &self.origin;
        Route { routed: true, ..Route::new(src, table, *max_message_bytes, &self.spec.storage) }
    }

    /// The route with `added` message columns (schema evolution): they come after every
    /// column the table had, the others keep their places.
    pub fn evolved(&self, added: &[ColumnSpec]) -> Route {
        let Origin { src, table, max_message_bytes } = &self.origin;
        let mut table = table.clone();
        table.schema.columns.extend(added.iter().cloned());
        let built = Route::new(src, &table, *max_message_bytes, &self.spec.storage);
        let names = self.schema().fields().iter().map(|f| f.name().as_str()).chain(added.iter().map(|c| c.name.as_str()));
        let order: Vec<usize> = names.filter_map(|n| built.schema().index_of(n).ok()).collect();
        let fields: Vec<Field> = order.iter().map(|&i| built.schema().field(i).clone()).collect();
        Route {
            spec: TableSpec { schema: Arc::new(Schema::new(fields)), ..built.spec.clone() },
            order: Some(order),
            routed: self.routed,
            ..built
        }
    }

    /// Whether this route keeps the progress of a source of `kind` (it is not a routed table):
    /// the routes the readers read.
    pub fn reads(&self, kind: SourceKind) -> bool {
        self.kind == kind && !self.routed
    }

    /// How new fields' nested objects become columns.
    pub fn flatten(&self) -> &Flatten {
        &self.origin.src.flatten
    }

    /// The full table schema (message columns, metadata columns, derived partition columns).
    pub fn schema(&self) -> &SchemaRef {
        &self.spec.schema
    }
}

/// Where a source's new fields are looked for: the message's top level, or `data` of AWS DMS
/// records (their `metadata` is the format's own).
fn new_fields(format: SourceFormat, columns: &[ColumnSpec]) -> NewFields {
    let (prefix, root) = match format {
        SourceFormat::Json => ("", None),
        SourceFormat::Dms => ("data.", Some("data")),
    };
    let under_root = |path: &str| path.strip_prefix(prefix).map(str::to_string);
    let read: Vec<String> = columns.iter().flat_map(ColumnSpec::read_paths).filter_map(|p| under_root(&p)).collect();
    let nested = columns.iter().filter(|c| c.kind().is_nested()).filter_map(|c| under_root(c.json_key()));
    NewFields::new(read.iter().map(String::as_str), root).with_nested(nested)
}

/// Bytes of the object key prefix of `location` (`s3://bucket/<key>`); 0 for local paths,
/// whose limit is per path component.
fn object_key_bytes(location: &str) -> usize {
    location.strip_prefix("s3://").and_then(|rest| rest.split_once('/')).map_or(0, |(_, key)| key.len() + 1)
}

/// Index of the route keeping each source's progress, by source name (the `topic` of
/// partition keys).
pub fn by_topic(routes: &[Route]) -> HashMap<String, usize> {
    routes.iter().enumerate().filter(|(_, r)| !r.routed).map(|(i, r)| (r.source.clone(), i)).collect()
}
