//! AWS DMS records: which messages of a chunk are rows (control records and records without
//! `data` are counted and skipped, never dead-lettered: DMS sends them by design).

use json_arrow::{raw_members, raw_value};

/// DMS records skipped, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// `metadata.record-type = "control"` (create or drop table, add column, ...).
    pub control: u64,
    /// Data records without `data` (or with `"data": null`).
    pub without_data: u64,
}

impl Skipped {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: Skipped) {
        self.control += other.control;
        self.without_data += other.without_data;
    }
}

/// What one DMS record is.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A row, with its raw `metadata` object if it has one. A message that is not a DMS record
    /// at all (not JSON, no `metadata`) is a row too: decoding rejects it with a reason.
    Row {
        /// The record's `metadata` member (what routing reads).
        metadata: Option<&'a [u8]>,
    },
    /// `metadata.record-type = "control"`: skipped.
    Control,
    /// A data record without `data` (or with `"data": null`): skipped.
    WithoutData,
}

/// Tells a record's kind in one pass over its members (`data` comes first and is the long one).
pub fn classify(payload: &[u8]) -> Record<'_> {
    let record_type = ["record-type".to_string()];
    let [data, metadata] = raw_members(payload, ["data", "metadata"]);
    match metadata.and_then(|m| raw_value(m, &record_type)) {
        Some(br#""control""#) => Record::Control,
        Some(_) if data.is_none() => Record::WithoutData,
        _ => Record::Row { metadata },
    }
}

impl<'a> Record<'a> {
    /// The record's raw `metadata` object (None for skipped records or when it has none).
    pub fn metadata(&self) -> Option<&'a [u8]> {
        match self {
            Record::Row { metadata } => *metadata,
            Record::Control | Record::WithoutData => None,
        }
    }
}

impl Skipped {
    /// Counts `record` if it is skipped; true when it is.
    pub fn count(&mut self, record: &Record<'_>) -> bool {
        match record {
            Record::Row { .. } => return false,
            Record::Control => self.control += 1,
            Record::WithoutData => self.without_data += 1,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_records_and_records_without_data_are_skipped_the_rest_kept() {
        let messages: [&[u8]; 6] = [
            br#"{"data": {"id": 1}, "metadata": {"record-type": "data", "operation": "load"}}"#,
            br#"{"control": {"table-def": {}}, "metadata": {"record-type": "control", "operation": "create-table"}}"#,
            br#"{"metadata": {"record-type": "data", "operation": "delete"}}"#,
            br#"{"data": null, "metadata": {"record-type": "data", "operation": "insert"}}"#,
            b"not json",
            br#"{"data": {"id": 2}}"#,
        ];
        let mut skipped = Skipped::default();
        let kept: Vec<usize> = (0..messages.len()).filter(|&i| !skipped.count(&classify(messages[i]))).collect();
        assert_eq!(kept, vec![0, 4, 5], "records that are not DMS-shaped are kept for decoding to reject or read");
        assert_eq!(skipped, Skipped { control: 1, without_data: 2 });
        let metadata = br#"{"record-type": "data", "operation": "load"}"#;
        assert_eq!(classify(messages[0]), Record::Row { metadata: Some(&metadata[..]) });
        assert_eq!(classify(messages[5]), Record::Row { metadata: None });
    }
}
