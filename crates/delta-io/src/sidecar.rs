//! Small objects a job keeps beside a table's data, under `_lakehouse/` in the table folder:
//! Delta readers never see them and vacuum leaves them alone (it skips folders starting with
//! `_`), so they live exactly as long as the table.

use deltalake::logstore::object_store::{ObjectStoreExt as _, PutPayload};
use deltalake::{DeltaTable, ObjectStoreError, Path};

use crate::DeltaIoError;

/// The folder under a table's root that holds the job's side objects.
pub const SIDECAR_FOLDER: &str = "_lakehouse";

/// Side objects of one table.
#[derive(Debug, Clone)]
pub struct Sidecar {
    store: deltalake::logstore::ObjectStoreRef,
    location: String,
}

impl Sidecar {
    /// The side objects of `table`.
    pub fn of(table: &DeltaTable) -> Self {
        Self { store: table.object_store(), location: table.table_url().to_string() }
    }

    fn path(&self, relative: &str) -> Result<Path, DeltaIoError> {
        Path::parse(format!("{SIDECAR_FOLDER}/{relative}")).map_err(|e| self.error(relative, e.into()))
    }

    fn error(&self, relative: &str, source: ObjectStoreError) -> DeltaIoError {
        DeltaIoError::Store { table: self.location.clone(), path: format!("{SIDECAR_FOLDER}/{relative}"), source: Box::new(source) }
    }

    /// Writes (or replaces) the object at `relative`.
    pub async fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<(), DeltaIoError> {
        let path = self.path(relative)?;
        self.store.put(&path, PutPayload::from(bytes)).await.map_err(|e| self.error(relative, e))?;
        Ok(())
    }

    /// The object at `relative`, or None when there is none.
    pub async fn get(&self, relative: &str) -> Result<Option<Vec<u8>>, DeltaIoError> {
        let path = self.path(relative)?;
        match self.store.get(&path).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(|e| self.error(relative, e))?.to_vec())),
            Err(ObjectStoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(relative, e)),
        }
    }

    /// Deletes the object at `relative` (nothing when there is none).
    pub async fn delete(&self, relative: &str) -> Result<(), DeltaIoError> {
        let path = self.path(relative)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(ObjectStoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(relative, e)),
        }
    }

    /// The names of the folders directly under `relative` (empty when there is none).
    pub async fn folders(&self, relative: &str) -> Result<Vec<String>, DeltaIoError> {
        let path = self.path(relative)?;
        let listed = self.store.list_with_delimiter(Some(&path)).await.map_err(|e| self.error(relative, e))?;
        let mut names: Vec<String> = listed.common_prefixes.iter().filter_map(|p| p.filename().map(String::from)).collect();
        names.sort();
        Ok(names)
    }
}
