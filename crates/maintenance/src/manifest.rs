//! Symlink manifests laid out as Delta Spark's `GENERATE symlink_format_manifest` writes them,
//! for readers that use Hive's `SymlinkTextInputFormat` (Athena, Presto, Hive, Spark on Hive
//! tables).
//!
//! `<table>/_symlink_format_manifest/<col=value>/.../manifest` holds one absolute,
//! non-percent-encoded URI of an active data file per line. Partition directories are
//! escaped as Hive escapes them; a null or empty value is `__HIVE_DEFAULT_PARTITION__`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{Future, IntoFuture};
use std::pin::Pin;

use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use deltalake::{DeltaTable, Path};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::MaintenanceError;

/// A scanned file: its decoded path, partition values and whether it is live.
type ScanFile = (String, HashMap<String, Option<String>>, bool);
/// Folder of the manifests, next to `_delta_log`.
pub const MANIFEST_DIR: &str = "_symlink_format_manifest";
const MANIFEST_FILE: &str = "manifest";
/// The table property that asks writers to keep manifests current after each commit.
const ENABLED_PROPERTY: &str = "delta.compatibility.symlinkFormatManifest.enabled";
const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The value Hive sees for a partition column: the value, or `__HIVE_DEFAULT_PARTITION__` for
/// null or empty (not escaped).
pub(crate) fn hive_value<'a>(values: &'a HashMap<String, Option<String>>, column: &str) -> &'a str {
    match values.get(column) {
        Some(Some(v)) if !v.is_empty() => v,
        _ => DEFAULT_PARTITION,
    }
}

/// Escapes a partition column name or value as Hive (and Spark's `ExternalCatalogUtils`) do
/// for directory names: `%XX` (upper-case hex) for ASCII control characters, `"`, `#`, `%`,
/// `'`, `*`, `/`, `:`, `=`, `?`, `\`, DEL, `{`, `[`, `]` and `^`; everything else (spaces and
/// non-ASCII included) as is.
pub fn hive_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let escaped = matches!(
            c,
            '\u{01}'..='\u{1F}' | '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '\u{7F}' | '{' | '[' | ']' | '^'
        );
        if escaped {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The Hive-style directory of a partition, `col=value/...` in partition-column order
/// (empty for an unpartitioned table).
pub fn partition_directory(columns: &[String], values: &HashMap<String, Option<String>>) -> String {
    columns
        .iter()
        .map(|col| {
            let value = match hive_value(values, col) {
                DEFAULT_PARTITION => DEFAULT_PARTITION.to_string(),
                v => hive_escape(v),
            };
            format!("{}={value}", hive_escape(col))
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether the table asks for manifests after every commit
/// (`delta.compatibility.symlinkFormatManifest.enabled = true`).
pub fn manifests_enabled(table: &DeltaTable) -> bool {
    table
        .snapshot()
        .ok()
        .and_then(|s| s.metadata().configuration().get(ENABLED_PROPERTY).map(|v| v.eq_ignore_ascii_case("true")))
        .unwrap_or(false)
}

/// What a manifest run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ManifestMetrics {
    /// Table version the manifests describe.
    pub version: u64,
    /// Manifests written.
    pub manifests_written: u64,
    /// Stale manifests removed (partitions without files).
    pub manifests_deleted: u64,
    /// Data files listed across the written manifests.
    pub files_listed: u64,
    /// Partition directories written, relative to the manifest folder (for catalog DDL).
    #[serde(skip)]
    pub partitions: Vec<String>,
}

/// Writes the symlink manifests of a table: all of them (stale ones deleted), or only those
/// of some partitions (the incremental mode writers use after a commit).
pub struct Manifests {
    table: DeltaTable,
    only: Option<BTreeSet<String>>,
}

impl Manifests {
    /// Manifests for every partition of `table` at its loaded version.
    pub fn new(table: DeltaTable) -> Self {
        Self { table, only: None }
    }

    /// Restricts the run to the partitions with these values (as in `add.partitionValues`);
    /// a listed partition that no longer has files loses its manifest.
    pub fn for_partitions<'a>(mut self, partitions: impl IntoIterator<Item = &'a HashMap<String, Option<String>>>) -> Self {
        let columns = self.partition_columns();
        self.only = Some(partitions.into_iter().map(|values| partition_directory(&columns, values)).collect());
        self
    }

    fn partition_columns(&self) -> Vec<String> {
        self.table.snapshot().map(|s| s.metadata().partition_columns().to_vec()).unwrap_or_default()
    }

    async fn execute(self) -> Result<ManifestMetrics, MaintenanceError> {
        let location = self.table.table_url().to_string();
        let root = plain_root_uri(self.table.table_url());
        let listing = match self.table.snapshot() {
            // A writer's table after its commit: the files are in memory already.
            Ok(snapshot) => {
                refuse_unsupported(snapshot.metadata().configuration(), &location)?;
                let files = snapshot
                    .log_data()
                    .iter()
                    .map(|f| (f.path().into_owned(), f.partition_values_map(), f.deletion_vector_descriptor().is_some()))
                    .collect();
                Listing { version: snapshot.version(), columns: snapshot.metadata().partition_columns().to_vec(), files }
            }
            // A table handle that was not loaded: list the files without parsing statistics.
            Err(_) => list_files(&self.table, &location).await?,
        };
        let columns = listing.columns;

        let mut manifests: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Thousands of files share a partition: its directory is escaped once.
        let mut directories: HashMap<Vec<Option<String>>, String> = HashMap::new();
        for (path, values, has_dv) in listing.files {
            if has_dv {
                return Err(MaintenanceError::Refused(format!(
                    "{location}: file {path} has a deletion vector; symlink readers would return deleted rows. Purge deletion vectors (REORG TABLE ... APPLY (PURGE)) first"
                )));
            }
            let key: Vec<Option<String>> = columns.iter().map(|c| values.get(c).cloned().flatten()).collect();
            let directory = directories.entry(key).or_insert_with(|| partition_directory(&columns, &values));
            if self.only.as_ref().is_some_and(|only| !only.contains(directory.as_str())) {
                continue;
            }
            match manifests.get_mut(directory.as_str()) {
                Some(lines) => lines.push(file_uri(&root, &path)),
                None => {
                    manifests.insert(directory.clone(), vec![file_uri(&root, &path)]);
                }
            }
        }

        let store = self.table.object_store();
        let mut metrics = ManifestMetrics { version: listing.version, ..Default::default() };
        let mut uploads = Vec::with_capacity(manifests.len());
        for (directory, lines) in manifests.iter_mut() {
            let mut lines = std::mem::take(lines);
            lines.sort_unstable();
            metrics.manifests_written += 1;
            metrics.files_listed += lines.len() as u64;
            metrics.partitions.push(directory.clone());
            let mut body = lines.join("\n");
            body.push('\n');
            uploads.push((manifest_path(directory)?, body));
        }
        // Each manifest is its own object: write several at once (S3 round trips dominate).
        futures::stream::iter(uploads.into_iter().map(|(path, body)| {
            let store = store.clone();
            async move { store.put(&path, PutPayload::from(body.into_bytes())).await.map(|_| ()) }
        }))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .map_err(MaintenanceError::store(&location))?;

        // Partitions without files lose their manifest, or readers would list deleted files.
        let stale: Vec<String> = match &self.only {
            Some(only) => only.iter().filter(|d| !manifests.contains_key(*d)).cloned().collect(),
            None => {
                existing_manifest_directories(store.as_ref(), &location).await?.into_iter().filter(|d| !manifests.contains_key(d)).collect()
            }
        };
        for directory in stale {
            match store.delete(&manifest_path(&directory)?).await {
                Ok(()) => metrics.manifests_deleted += 1,
                Err(deltalake::ObjectStoreError::NotFound { .. }) => {}
                Err(e) => return Err(MaintenanceError::store(&location)(e)),
            }
        }
        Ok(metrics)
    }
}

impl IntoFuture for Manifests {
    type Output = Result<ManifestMetrics, MaintenanceError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}

/// The active files of a table version: path (decoded), partition values, deletion vector.
struct Listing {
    version: u64,
    columns: Vec<String>,
    files: Vec<(String, HashMap<String, Option<String>>, bool)>,
}

/// Lists the latest version's files with delta-kernel's log replay, skipping statistics (a
/// loaded `DeltaTable` parses every file's statistics, most of a manifest run's cost on a
/// streaming table with many small files).
async fn list_files(table: &DeltaTable, location: &str) -> Result<Listing, MaintenanceError> {
    let log_store = table.log_store();
    let snapshot = deltalake::kernel::Snapshot::try_new(log_store.as_ref(), None).await.map_err(MaintenanceError::delta(location))?;
    refuse_unsupported(snapshot.metadata().configuration(), location)?;
    let scan = snapshot.scan_builder().with_skip_stats(true).build().map_err(MaintenanceError::delta(location))?;
    let mut stream = scan.scan_metadata(log_store.engine(None));
    let mut files = Vec::new();
    while let Some(batch) = stream.try_next().await.map_err(MaintenanceError::delta(location))? {
        files = batch
            .visit_scan_files(files, |files: &mut Vec<ScanFile>, file| {
                // Log paths are URL-encoded; partition values absent from the map are null.
                let path = percent_encoding::percent_decode_str(&file.path).decode_utf8_lossy().into_owned();
                let values = file.partition_values.into_iter().map(|(k, v)| (k, Some(v))).collect();
                files.push((path, values, file.dv_info.has_vector()));
            })
            .map_err(|e| MaintenanceError::delta(location)(e.into()))?;
    }
    Ok(Listing { version: snapshot.version(), columns: snapshot.metadata().partition_columns().to_vec(), files })
}

/// Spark refuses these too: a symlink reader cannot apply deletion vectors or map columns.
fn refuse_unsupported(configuration: &HashMap<String, String>, location: &str) -> Result<(), MaintenanceError> {
    if configuration.get("delta.columnMapping.mode").is_some_and(|m| !m.eq_ignore_ascii_case("none")) {
        return Err(MaintenanceError::Refused(format!(
            "{location}: column mapping is enabled; symlink manifest readers resolve columns by physical name and would read the wrong columns. Use the native Delta table in Athena instead"
        )));
    }
    if configuration.get("delta.enableDeletionVectors").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(MaintenanceError::Refused(format!(
            "{location}: deletion vectors are enabled (delta.enableDeletionVectors); symlink readers would return deleted rows. Disable them and purge, or use the native Delta table in Athena"
        )));
    }
    Ok(())
}

fn manifest_path(directory: &str) -> Result<Path, MaintenanceError> {
    let raw = if directory.is_empty() {
        format!("{MANIFEST_DIR}/{MANIFEST_FILE}")
    } else {
        format!("{MANIFEST_DIR}/{directory}/{MANIFEST_FILE}")
    };
    // parse keeps the Hive escapes as they are (`from` would percent-encode the `%`).
    Path::parse(&raw).map_err(|e| MaintenanceError::Refused(format!("manifest path {raw}: {e}")))
}

async fn existing_manifest_directories(store: &dyn ObjectStore, location: &str) -> Result<BTreeSet<String>, MaintenanceError> {
    let prefix = Path::parse(MANIFEST_DIR).map_err(|e| MaintenanceError::Refused(e.to_string()))?;
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.map_err(MaintenanceError::store(location))?;
    Ok(objects
        .into_iter()
        .filter_map(|o| {
            let key = o.location.as_ref();
            let rest = key.strip_prefix(MANIFEST_DIR)?.strip_prefix('/')?;
            if rest == MANIFEST_FILE {
                return Some(String::new());
            }
            rest.strip_suffix(MANIFEST_FILE)?.strip_suffix('/').map(str::to_string)
        })
        .collect())
}

/// The table root as Hadoop prints a path: no percent-encoding, `file:/abs` for local tables
/// (what Spark writes), `s3://bucket/prefix` otherwise; no trailing slash.
pub(crate) fn plain_root_uri(url: &url::Url) -> String {
    let decoded = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let text = match url.scheme() {
        "file" => format!("file:{}", decoded(url.path())),
        _ => decoded(url.as_str()),
    };
    text.trim_end_matches('/').to_string()
}

/// The absolute URI of a data file; `path` is the decoded `add.path` (relative, or absolute
/// for shallow clones).
fn file_uri(root: &str, path: &str) -> String {
    if path.contains("://") || path.starts_with("file:") {
        path.to_string()
    } else {
        format!("{root}/{}", path.trim_start_matches('/'))
    }
}

/// After a job's commit: rewrites the touched partitions' symlink manifests when the table
/// asks for it (`delta.compatibility.symlinkFormatManifest.enabled`). The commit has landed, so
/// a failure here is reported, not fatal: the next commit to the partition or a full
/// `maintenance manifest` run repairs it.
pub async fn update_touched_manifests<'a>(
    table: &DeltaTable,
    name: &str,
    touched: impl IntoIterator<Item = &'a HashMap<String, Option<String>>>,
) {
    if !manifests_enabled(table) {
        return;
    }
    match Manifests::new(table.clone()).for_partitions(touched).await {
        Ok(m) => tracing::debug!(table = name, manifests = m.manifests_written, "manifests updated"),
        Err(e) => {
            tracing::error!(table = name, error = %e, stage = "manifest", "symlink manifests not updated; run `maintenance manifest` to repair")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_hive() {
        assert_eq!(hive_escape("a/b"), "a%2Fb");
        assert_eq!(hive_escape("x=y"), "x%3Dy");
        assert_eq!(hive_escape("50% off"), "50%25 off");
        assert_eq!(hive_escape("#?:*'\"\\{[]^"), "%23%3F%3A%2A%27%22%5C%7B%5B%5D%5E");
        assert_eq!(hive_escape("tab\there\u{7f}"), "tab%09here%7F");
        assert_eq!(hive_escape("日本語 ok} ~|<>"), "日本語 ok} ~|<>");
        assert_eq!(hive_escape(".."), "..");
    }

    #[test]
    fn partition_directories_in_column_order_with_default_partition() {
        let columns = vec!["year".to_string(), "owner".to_string()];
        let values: HashMap<String, Option<String>> = [("owner".to_string(), None), ("year".to_string(), Some("2022".to_string()))].into();
        assert_eq!(partition_directory(&columns, &values), "year=2022/owner=__HIVE_DEFAULT_PARTITION__");
        let empty: HashMap<String, Option<String>> =
            [("owner".to_string(), Some(String::new())), ("year".to_string(), Some("a:b".to_string()))].into();
        assert_eq!(partition_directory(&columns, &empty), "year=a%3Ab/owner=__HIVE_DEFAULT_PARTITION__");
        assert_eq!(partition_directory(&[], &HashMap::new()), "");
    }

    #[test]
    fn uris_are_not_percent_encoded() {
        let local = url::Url::parse("file:///tmp/my%20lake/raw/order/").unwrap();
        assert_eq!(plain_root_uri(&local), "file:/tmp/my lake/raw/order");
        let s3 = url::Url::parse("s3://bucket/lake/raw%20x/").unwrap();
        assert_eq!(plain_root_uri(&s3), "s3://bucket/lake/raw x");
        assert_eq!(file_uri("s3://b/t", "year=a%3Ab/part-1.parquet"), "s3://b/t/year=a%3Ab/part-1.parquet");
    }
}
