//! The tables a run writes and what it knows of their progress.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use delta_io::{open_existing, open_or_create, ProgressTable};
use kafka_source::PartitionKey;
use pipeline_config::RawAppendConfig;

use crate::handover::Resume;
use crate::router::Router;
use crate::routes::Route;
use crate::shard_positions::ShardPositions;
use crate::RawAppendError;

/// The tables a run writes and what it knows of their progress.
pub struct Sinks {
    /// Routes, shared with decode workers (replaced as a whole when a table's schema evolves,
    /// so a slice decoded with the old ones is known stale).
    pub routes: Arc<Vec<Arc<Route>>>,
    /// Index of the route keeping each source's progress, by topic.
    pub by_topic: Arc<HashMap<String, usize>>,
    /// Routed sources' routers, by topic.
    pub routers: Arc<HashMap<String, Router>>,
    /// One table per route: opened at start, routed tables when their first rows come.
    tables: Vec<Option<ProgressTable>>,
    /// The dead-letter table.
    pub dead_letter: ProgressTable,
    /// Where each partition resumed and what its next commit must find in its table.
    pub resume: Arc<Resume>,
    /// The job's settings.
    pub job: RawAppendConfig,
    /// New fields already reported as not becoming columns, per route (warned once per run).
    pub refused: HashSet<(usize, String)>,
    /// Latest known high watermark per partition (consumer-lag figures).
    pub high_watermarks: HashMap<PartitionKey, i64>,
    /// Per route: where Kinesis shard positions are kept (None for Kafka and routed routes).
    pub shard_positions: Vec<Option<ShardPositions>>,
}

/// What [`Sinks::open`] needs besides the routes.
pub struct SinkParts {
    /// The dead-letter table.
    pub dead_letter: ProgressTable,
    /// The job's settings.
    pub job: RawAppendConfig,
}

impl Sinks {
    /// Opens (or creates) the table of every route that keeps a source's progress; routed
    /// tables are created on first sight.
    pub async fn open(routes: Vec<Route>, routers: HashMap<String, Router>, parts: SinkParts) -> Result<Sinks, RawAppendError> {
        let mut tables = Vec::with_capacity(routes.len());
        let mut shard_positions = Vec::with_capacity(routes.len());
        for route in &routes {
            let table = match route.routed {
                true => None,
                false => Some(ProgressTable::new(open_or_create(&route.spec).await?)),
            };
            let kinesis = table.as_ref().filter(|_| route.kind == pipeline_config::SourceKind::Kinesis);
            shard_positions.push(kinesis.map(|t| ShardPositions::new(t.table(), &parts.job.job_id)));
            tables.push(table);
        }
        Ok(Sinks {
            by_topic: Arc::new(crate::routes::by_topic(&routes)),
            routes: Arc::new(routes.into_iter().map(Arc::new).collect()),
            refused: HashSet::new(),
            routers: Arc::new(routers),
            tables,
            dead_letter: parts.dead_letter,
            resume: Arc::new(Resume::new(parts.job.on_missing_offsets)),
            high_watermarks: HashMap::new(),
            shard_positions,
            job: parts.job,
        })
    }

    /// The txn app id of a source partition (`<job-id>:<topic>:<partition>`).
    pub fn app_id(&self, key: &PartitionKey) -> String {
        key.txn_app_id(&self.job.job_id)
    }

    /// Adds the route of inferred table `name` of routed source `source` (no-op when it has
    /// one); its table is created when its first fields are known.
    pub fn add_inferred_table(&mut self, source: &str, name: &str) -> Result<(), RawAppendError> {
        let router = self.routers.get(source).ok_or_else(|| RawAppendError::Internal(format!("no router for source {source}")))?;
        if router.knows(name) {
            return Ok(());
        }
        let inferred = router.inferred().ok_or_else(|| RawAppendError::Internal(format!("source {source} infers no table")))?;
        let route = self.routes[self.by_topic[source]].sibling(&inferred.table(name));
        let idx = self.routes.len();
        let mut routers: HashMap<String, Router> = self.routers.as_ref().clone();
        routers.entry(source.to_string()).and_modify(|r| r.add_table(name, idx));
        self.routers = Arc::new(routers);
        let mut routes: Vec<Arc<Route>> = self.routes.as_ref().clone();
        routes.push(Arc::new(route));
        self.routes = Arc::new(routes);
        self.tables.push(None);
        self.shard_positions.push(None);
        Ok(())
    }

    /// Route `idx`'s table if it exists (opened on first call), None before its first commit.
    pub async fn existing_table(&mut self, idx: usize) -> Result<Option<&mut ProgressTable>, RawAppendError> {
        if self.tables[idx].is_none() {
            self.tables[idx] = open_existing(&self.routes[idx].spec).await?.map(ProgressTable::new);
        }
        Ok(self.tables[idx].as_mut())
    }

    /// Creates route `idx`'s table as `spec` says (or opens it, when another task was first);
    /// returns the version it was created at.
    pub async fn create_table(&mut self, idx: usize, spec: &delta_io::TableSpec) -> Result<Option<u64>, RawAppendError> {
        let table = ProgressTable::new(open_or_create(spec).await?);
        let version = table.table().version();
        self.tables[idx] = Some(table);
        Ok(version)
    }

    /// Loads the newest version of route `idx`'s table, when it is open.
    pub async fn refresh_table(&mut self, idx: usize) -> Result<(), RawAppendError> {
        if let Some(table) = self.tables[idx].as_mut() {
            table.refresh().await?;
        }
        Ok(())
    }

    /// Replaces route `idx` (its table's schema evolved).
    pub fn replace_route(&mut self, idx: usize, route: Route) {
        let mut routes: Vec<Arc<Route>> = self.routes.as_ref().clone();
        routes[idx] = Arc::new(route);
        self.routes = Arc::new(routes);
    }

    /// Opens (or creates) the tables of routes `idxs` not open yet, side by side: a routed
    /// source's first slice sees many tables at once.
    pub async fn open_tables(&mut self, idxs: impl IntoIterator<Item = usize>) -> Result<(), RawAppendError> {
        let closed: BTreeSet<usize> = idxs.into_iter().filter(|&i| self.tables[i].is_none()).collect();
        if closed.is_empty() {
            return Ok(());
        }
        let routes = self.routes.clone();
        let opened = futures::future::try_join_all(closed.iter().map(|&i| open_or_create(&routes[i].spec))).await?;
        for (i, table) in closed.into_iter().zip(opened) {
            self.tables[i] = Some(ProgressTable::new(table));
        }
        Ok(())
    }

    /// The tables of routes `idxs`, in ascending route order with their indexes, for commits
    /// side by side; every one must be open (see [`Sinks::open_tables`]).
    pub fn tables_mut(&mut self, idxs: impl IntoIterator<Item = usize>) -> Result<Vec<(usize, &mut ProgressTable)>, RawAppendError> {
        let wanted: BTreeSet<usize> = idxs.into_iter().collect();
        let tables: Vec<(usize, &mut ProgressTable)> =
            self.tables.iter_mut().enumerate().filter(|(i, _)| wanted.contains(i)).filter_map(|(i, t)| Some((i, t.as_mut()?))).collect();
        match tables.len() == wanted.len() {
            true => Ok(tables),
            false => Err(RawAppendError::Internal("a table to commit is not open".into())),
        }
    }

    /// Route `idx`'s table, opened (or created) when it is a routed table seen for the first time.
    pub async fn table(&mut self, idx: usize) -> Result<&mut ProgressTable, RawAppendError> {
        self.open_tables([idx]).await?;
        self.tables[idx].as_mut().ok_or_else(|| RawAppendError::Internal("a table slot emptied while opening".into()))
    }
}
