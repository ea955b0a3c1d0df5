//! Whether partition values can become the directories of a data file.
//!
//! delta-rs writes a partition value as the directory `column=value`, percent-encoding reserved
//! characters and every non-ASCII byte (the Delta protocol's rule). A value that is too long
//! once encoded makes the upload fail ("File name too long" locally, an error on S3) on every
//! retry, so such rows are rejected before writing.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// Longest directory name local file systems accept (ext4, xfs, APFS, NTFS).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Longest S3 object key.
pub const MAX_KEY_BYTES: usize = 1024;
/// What a data file's own name adds below its partition directories
/// (`part-00001-<uuid>-c000.zstd.parquet`, with room to spare).
const FILE_NAME_BYTES: usize = 64;

/// The directory of a null partition value.
const NULL_PARTITION_DIR: &str = "__HIVE_DEFAULT_PARTITION__";

/// The characters delta-rs percent-encodes in a partition value (besides non-ASCII bytes).
const PARTITION_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'!')
    .add(b'"')
    .add(b'#')
    .add(b'$')
    .add(b'%')
    .add(b'&')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'+')
    .add(b',')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Bytes of the directory name `column=value` as delta-rs writes it.
pub fn segment_bytes(column: &str, value: &str) -> usize {
    let encoded: usize = utf8_percent_encode(value, PARTITION_VALUE).map(str::len).sum();
    column.len() + 1 + encoded
}

/// Why the partition `values` (column, value) of one row cannot be the directories of a data
/// file whose table sits `table_key_bytes` into its object store, if they cannot.
pub fn partition_path_problem(table_key_bytes: usize, values: &[(&str, Option<&str>)]) -> Option<String> {
    let mut key_bytes = table_key_bytes + FILE_NAME_BYTES;
    for (column, value) in values {
        let Some(value) = value else {
            key_bytes += column.len() + 1 + NULL_PARTITION_DIR.len() + 1;
            continue;
        };
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            return Some(format!(
                "partition column '{column}': the value holds the control character U+{:04X}, which cannot be part of a path",
                c as u32
            ));
        }
        let segment = segment_bytes(column, value);
        if segment > MAX_SEGMENT_BYTES {
            return Some(format!(
                "partition column '{column}': the value ({} bytes) is {segment} bytes as the directory name '{column}=…', over the {MAX_SEGMENT_BYTES}-byte limit of a path component",
                value.len()
            ));
        }
        key_bytes += segment + 1;
    }
    (key_bytes > MAX_KEY_BYTES).then(|| {
        format!("partition values make a data file key of about {key_bytes} bytes, over the {MAX_KEY_BYTES}-byte limit of an S3 key")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_lengths_follow_the_delta_protocol_rule() {
        assert_eq!(segment_bytes("order_owner", "alice"), 17);
        assert_eq!(segment_bytes("c", "a b/c"), 2 + 1 + 3 + 1 + 3 + 1);
        // é is two UTF-8 bytes, each percent-encoded.
        assert_eq!(segment_bytes("c", "é"), 2 + 6);
    }

    #[test]
    fn long_multibyte_and_control_values_are_refused_with_the_column_and_the_limit() {
        assert_eq!(partition_path_problem(20, &[("order_owner", Some("alice"))]), None);
        assert_eq!(partition_path_problem(20, &[("order_owner", None)]), None);
        let long = "x".repeat(300);
        let reason = partition_path_problem(20, &[("order_owner", Some(&long))]).unwrap();
        assert!(reason.contains("order_owner") && reason.contains("255"), "{reason}");
        let accents = "é".repeat(100);
        assert!(partition_path_problem(20, &[("order_owner", Some(&accents))]).unwrap().contains("612 bytes"));
        let fits = "x".repeat(243);
        assert_eq!(partition_path_problem(20, &[("order_owner", Some(&fits))]), None);
        assert!(partition_path_problem(20, &[("order_owner", Some("a\nb"))]).unwrap().contains("U+000A"));
        let wide: Vec<(&str, Option<&str>)> = ["a", "b", "c", "d", "e"].iter().map(|c| (*c, Some(fits.as_str()))).collect();
        assert!(partition_path_problem(20, &wide).unwrap().contains("S3 key"));
    }
}
