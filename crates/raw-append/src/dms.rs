//! AWS DMS records: which messages of a chunk are rows (control records and records without
//! `data` are counted and skipped, never dead-lettered: DMS sends them by design).

use json_arrow::Picked;

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
pub enum Record {
    /// A row. A message that is not a DMS record at all (not JSON, no `metadata`) is a row
    /// too: decoding rejects it with a reason.
    Row,
    /// `metadata.record-type = "control"`: skipped.
    Control,
    /// A data record without `data` (or with `"data": null`): skipped.
    WithoutData,
}

/// The fields a record is told by, as picked for [`classify`]: `data` and
/// `metadata.record-type`.
pub fn fields() -> [Vec<String>; 2] {
    [vec!["data".to_string()], vec!["metadata".to_string(), "record-type".to_string()]]
}

/// Tells a record's kind from the values of [`fields`] picked from it; a malformed message is
/// a row whatever was found in it (its decoding rejects it with the reason).
pub fn classify(picked: &Picked<'_>) -> Record {
    match picked.values() {
        _ if picked.malformed() => Record::Row,
        [_, Some(br#""control""#), ..] => Record::Control,
        [None, Some(_), ..] => Record::WithoutData,
        _ => Record::Row,
    }
}

impl Skipped {
    /// Counts `record` if it is skipped; true when it is.
    pub fn count(&mut self, record: &Record) -> bool {
        match record {
            Record::Row => return false,
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
        let messages: [&[u8]; 8] = [
            br#"{"data": {"id": 1}, "metadata": {"record-type": "data", "operation": "load"}}"#,
            br#"{"control": {"table-def": {}}, "metadata": {"record-type": "control", "operation": "create-table"}}"#,
            br#"{"metadata": {"record-type": "data", "operation": "delete"}}"#,
            br#"{"data": null, "metadata": {"record-type": "data", "operation": "insert"}}"#,
            b"not json",
            br#"{"data": {"id": 2}}"#,
            br#"{"metadata": {"record-type": "data"}, "x" 1}"#,
            br#"{"metadata": {"record-type": "control", "operation": "#,
        ];
        let (picker, mut picked) = (json_arrow::FieldPicker::new(fields()), Picked::default());
        let mut skipped = Skipped::default();
        let kept: Vec<usize> = (0..messages.len())
            .filter(|&i| {
                picker.pick(messages[i], &mut picked);
                !skipped.count(&classify(&picked))
            })
            .collect();
        assert_eq!(kept, vec![0, 4, 5, 6, 7], "records that are not DMS-shaped or malformed are kept for decoding to reject or read");
        assert_eq!(skipped, Skipped { control: 1, without_data: 2 });
    }
}
