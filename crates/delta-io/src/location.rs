//! Table locations and object-store options.

use std::collections::HashMap;
use std::path::Path;

use url::Url;

use crate::DeltaIoError;

fn local(location: &str) -> impl Fn(std::io::Error) -> DeltaIoError + '_ {
    move |source| DeltaIoError::LocalFolder { location: location.to_string(), source }
}

/// The URL of a table location: `s3://...` as is, local paths made absolute (and created).
pub fn table_url(location: &str) -> Result<Url, DeltaIoError> {
    if location.starts_with("s3://") || location.starts_with("file://") {
        let url = Url::parse(location).map_err(|source| DeltaIoError::BadUrl { location: location.into(), source })?;
        if url.scheme() == "file" {
            if let Ok(path) = url.to_file_path() {
                std::fs::create_dir_all(&path).map_err(local(location))?;
            }
        }
        return Ok(url);
    }
    let path = Path::new(location);
    std::fs::create_dir_all(path).map_err(local(location))?;
    let abs = std::fs::canonicalize(path).map_err(local(location))?;
    Url::from_directory_path(&abs).map_err(|_| local(location)(std::io::Error::other("not an absolute directory path")))
}

/// Object-store options: the configured ones plus `AWS_ENDPOINT_URL` (S3-compatible stores;
/// plain http is allowed for it) from the environment. Credentials stay with the AWS chain.
pub fn storage_options(configured: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    let mut opts: HashMap<String, String> = configured.clone().into_iter().collect();
    for var in ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Ok(v) = std::env::var(var) {
            opts.entry(var.to_string()).or_insert(v);
        }
    }
    if opts.get("AWS_ENDPOINT_URL").is_some_and(|e| e.starts_with("http://")) {
        opts.entry("AWS_ALLOW_HTTP".into()).or_insert_with(|| "true".into());
    }
    if !opts.contains_key("AWS_REGION") {
        if let Some(r) = opts.get("AWS_DEFAULT_REGION").cloned() {
            opts.insert("AWS_REGION".into(), r);
        }
    }
    opts
}

/// An object store rooted at `location` (for job state kept next to the tables).
pub fn object_store_at(
    location: &str,
    configured: &std::collections::BTreeMap<String, String>,
) -> Result<std::sync::Arc<dyn deltalake::ObjectStore>, DeltaIoError> {
    let url = table_url(location)?;
    let store = deltalake::DeltaTableBuilder::from_url(url)
        .and_then(|b| b.with_storage_options(storage_options(configured)).build_storage())
        .map_err(DeltaIoError::delta(location))?;
    Ok(store.object_store(None))
}
