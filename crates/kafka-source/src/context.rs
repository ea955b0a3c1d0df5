//! The rdkafka client context: MSK IAM tokens and rebalances that resume from the table.

use std::collections::BTreeSet;
use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use crate::watermarks::list_offsets;
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
    /// Where each assigned partition resumes: the table's progress checked against the
    /// partition's watermarks (asked for all of them at once), or the beginning when no
    /// lookup is configured. An error when the watermarks cannot be had.
    #[allow(clippy::type_complexity)] // one outcome per partition, beside the request's own
    fn resume_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
        keys: &[PartitionKey],
    ) -> Result<Vec<(PartitionKey, Result<Offset, KafkaError>)>, KafkaError> {
        let Some(lookup) = &self.progress else { return Ok(keys.iter().map(|k| (k.clone(), Ok(Offset::Beginning))).collect()) };
        let lows = list_offsets(consumer, keys, Offset::Beginning, WATERMARK_TIMEOUT)?;
        let highs = list_offsets(consumer, keys, Offset::End, WATERMARK_TIMEOUT)?;
        // list_offsets answers every key it was asked, or fails.
        let watermarks = |key: &PartitionKey| (lows.get(key).copied().unwrap_or_default(), highs.get(key).copied().unwrap_or_default());
        Ok(keys.iter().map(|key| (key.clone(), lookup(key, watermarks(key)).map(Offset::Offset))).collect())
    }
}

impl ConsumerContext for LakeContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Seek every new partition to the table's progress before any fetch happens.
                let mut assigned = TopicPartitionList::new();
                let keys: Vec<PartitionKey> = tpl.elements().iter().map(|e| PartitionKey::new(e.topic(), e.partition())).collect();
                let resumed = self.resume_offsets(consumer, &keys).unwrap_or_else(|e| {
                    // Without watermarks no partition is assigned: the reader fails the run.
                    if let Ok(mut slot) = self.rebalance_error.lock() {
                        slot.get_or_insert(e);
                    }
                    Vec::new()
                });
                for (key, offset) in resumed {
                    let offset = match offset {
                        Ok(offset) => offset,
                        Err(e) => {
                            // Never read a partition whose progress is unknown or whose unread
                            // data is gone: the reader fails the run instead.
                            if let Ok(mut slot) = self.rebalance_error.lock() {
                                slot.get_or_insert(e);
                            }
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
