//! The rdkafka client context: MSK IAM tokens and rebalances that resume from the table.

use std::collections::{BTreeSet, HashMap};
use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use crate::watermarks::list_watermarks;
use crate::{is_fatal, KafkaError, MskTokenProvider, PartitionKey};

/// Watermarks are fetched on assignment; a slow broker gets this long.
const WATERMARK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Answers "next offset to read" for a partition from the target table (never from group
/// offsets), given the partition's (low, high) watermarks so data that is gone is never
/// skipped silently.
pub type ProgressLookup = Arc<dyn Fn(&PartitionKey, (i64, i64)) -> Result<i64, KafkaError> + Send + Sync>;

/// Called when partitions are about to be revoked; returns once the batch in progress is
/// committed, so the next owner resumes from a table that holds everything read so far.
pub type RevokeHook = Arc<dyn Fn() + Send + Sync>;

/// Client context shared by our consumers and producers.
#[derive(Default, Clone)]
pub struct LakeContext {
    msk: Option<Arc<MskTokenProvider>>,
    progress: Option<ProgressLookup>,
    on_revoke: Option<RevokeHook>,
    /// Partitions revoked since the reader last looked; messages read before the revocation
    /// and not yet handed over are dropped.
    pub(crate) revoked: Arc<Mutex<BTreeSet<(String, i32)>>>,
    /// Bumped on every revocation, so the reader checks `revoked` only when it changed.
    pub(crate) revocations: Arc<AtomicU64>,
    /// Set when a rebalance failed to resume a partition; the reader surfaces it.
    pub(crate) rebalance_error: Arc<Mutex<Option<KafkaError>>>,
    /// Set when librdkafka reports an error retrying cannot fix; the reader surfaces it.
    pub(crate) fatal: Arc<Mutex<Option<String>>>,
    /// librdkafka's last error that it retries (a refused connection), for the error a timeout
    /// reports.
    pub(crate) last_error: Arc<Mutex<Option<String>>>,
}

impl LakeContext {
    /// A context that signs MSK IAM tokens with `msk`, if given.
    pub fn new(msk: Option<Arc<MskTokenProvider>>) -> Self {
        Self { msk, ..Default::default() }
    }

    /// Makes group assignments start where the table's progress says.
    pub fn with_progress(mut self, lookup: ProgressLookup) -> Self {
        self.progress = Some(lookup);
        self
    }

    /// Commits the batch in progress before partitions are handed to another task.
    pub fn with_revoke_hook(mut self, hook: RevokeHook) -> Self {
        self.on_revoke = Some(hook);
        self
    }
}

impl ClientContext for LakeContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // End-of-partition is how trigger-once learns it caught up, not a failure.
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        if matches!(error, KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)) {
            return;
        }
        if error.rdkafka_error_code().is_some_and(is_fatal) {
            if let Ok(mut slot) = self.fatal.lock() {
                slot.get_or_insert_with(|| format!("{error}: {reason}"));
            }
            return;
        }
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(format!("{error}: {reason}"));
        }
        tracing::warn!(error = %error, reason, stage = "kafka_client", "librdkafka reported an error; it retries");
    }

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        match &self.msk {
            Some(p) => p.token().map_err(Into::into),
            None => Err("OAUTHBEARER needs kafka.sasl_mechanism = \"AWS_MSK_IAM\"".into()),
        }
    }
}

impl LakeContext {
    /// The error librdkafka reported that retrying cannot fix, if any (taken: reported once).
    pub(crate) fn take_fatal(&self) -> Option<KafkaError> {
        self.fatal.lock().ok().and_then(|mut f| f.take()).map(KafkaError::Fatal)
    }

    /// The watermarks of a new assignment's partitions, asked at once; none are needed
    /// without a progress lookup.
    fn assignment_watermarks(
        &self,
        consumer: &BaseConsumer<Self>,
        keys: &[PartitionKey],
    ) -> Result<HashMap<PartitionKey, (i64, i64)>, KafkaError> {
        match self.progress {
            Some(_) => list_watermarks(consumer, keys, WATERMARK_TIMEOUT),
            None => Ok(HashMap::new()),
        }
    }

    /// Where an assigned partition resumes: the table's progress checked against the
    /// partition's watermarks (from [`Self::assignment_watermarks`], which answers every
    /// partition or fails), or the beginning when no lookup is configured.
    fn resume_offset(&self, key: &PartitionKey, watermarks: &HashMap<PartitionKey, (i64, i64)>) -> Result<Offset, KafkaError> {
        let Some(lookup) = &self.progress else { return Ok(Offset::Beginning) };
        lookup(key, watermarks.get(key).copied().unwrap_or_default()).map(Offset::Offset)
    }

    /// Records why a rebalance left partitions unassigned: the reader fails the run with it.
    fn fail_rebalance(&self, error: KafkaError) {
        if let Ok(mut slot) = self.rebalance_error.lock() {
            slot.get_or_insert(error);
        }
    }
}

impl ConsumerContext for LakeContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Seek every new partition to the table's progress before any fetch happens.
                let mut assigned = TopicPartitionList::new();
                let mut keys: Vec<PartitionKey> = tpl.elements().iter().map(|e| PartitionKey::new(e.topic(), e.partition())).collect();
                let watermarks = self.assignment_watermarks(consumer, &keys).unwrap_or_else(|e| {
                    // Without watermarks no partition is assigned.
                    self.fail_rebalance(e);
                    keys.clear();
                    HashMap::new()
                });
                for key in keys {
                    let offset = match self.resume_offset(&key, &watermarks) {
                        Ok(offset) => offset,
                        Err(e) => {
                            // Never read a partition whose progress is unknown or whose unread
                            // data is gone: the reader fails the run instead.
                            self.fail_rebalance(e);
                            continue;
                        }
                    };
                    if let Err(e) = assigned.add_partition_offset(&key.topic, key.partition, offset) {
                        tracing::error!(error = %e, "cannot build assignment");
                    }
                }
                tracing::info!(stage = "rebalance", partitions = assigned.count(), "partitions assigned; resuming from table progress");
                if let Err(e) = consumer.assign(&assigned) {
                    tracing::error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(stage = "rebalance", partitions = tpl.count(), "partitions revoked: committing the batch in progress first");
                if let Some(hook) = &self.on_revoke {
                    hook();
                }
                if let Ok(mut revoked) = self.revoked.lock() {
                    for elem in tpl.elements() {
                        revoked.insert((elem.topic().to_string(), elem.partition()));
                    }
                }
                self.revocations.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => tracing::error!(code = ?other, "rebalance error"),
        }
    }
}
