//! AWS DMS records: which messages of a chunk are rows (control records and records without
//! `data` are counted and skipped, never dead-lettered: DMS sends them by design).

use json_arrow::{raw_members, raw_value, Decoded};

/// The messages of a chunk that are rows, and what was skipped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Indexes of the messages to decode.
    pub kept: Vec<u32>,
    /// Skipped counts.
    pub skipped: Skipped,
}

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

/// Chooses the messages that are rows. A message that is not a DMS record at all (not JSON,
/// no `metadata`) is kept: decoding rejects it with a reason.
pub fn select(payloads: &[&[u8]]) -> Selection {
    let record_type = ["record-type".to_string()];
    let mut selection = Selection::default();
    for (i, payload) in payloads.iter().enumerate() {
        // One pass over the record's members: `data` comes first and is the long one.
        let [data, metadata] = raw_members(payload, ["data", "metadata"]);
        match metadata.and_then(|m| raw_value(m, &record_type)) {
            Some(br#""control""#) => selection.skipped.control += 1,
            Some(_) if data.is_none() => selection.skipped.without_data += 1,
            _ => selection.kept.push(i as u32),
        }
    }
    selection
}

/// Decoding of the kept messages, with rows and rejects pointing at the chunk's messages again.
pub fn restore(decoded: Decoded, kept: &[u32]) -> Decoded {
    let Decoded { batch, rows, mut rejects } = decoded;
    for reject in &mut rejects {
        reject.index = kept[reject.index] as usize;
    }
    Decoded { batch, rows: rows.into_iter().map(|r| kept[r as usize]).collect(), rejects }
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
        let s = select(&messages);
        assert_eq!(s.kept, vec![0, 4, 5], "records that are not DMS-shaped are kept for decoding to reject or read");
        assert_eq!(s.skipped, Skipped { control: 1, without_data: 2 });
    }
}
