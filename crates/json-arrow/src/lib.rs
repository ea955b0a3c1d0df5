//! Vectorised decoding of JSON messages into Arrow against a table schema.
//!
//! A table of flat scalar columns reads each message in one pass straight into its columns
//! (the flat path); other messages and tables are fed to arrow-json's tape decoder in chunks,
//! and a chunk that decodes cleanly costs no per-value work of ours. Only a chunk that fails is
//! decoded message by message to find the culprits, which are rejected with a reason while the
//! rest of the chunk is kept. Timestamps are converted column-wise afterwards (configured
//! format, zone or epoch unit), and numbers exactly (a value its column cannot hold is a
//! reject, never rounded). [`infer`] proposes a schema file from sample messages.

mod decoder;
pub mod infer;
mod nested;
mod new_fields;
mod numbers;
mod pick;
mod rescue;
mod scan;
mod timestamps;

pub use decoder::{DecodeError, DecodeRun, Decoded, MessageDecoder, Reject};
pub use infer::{InferredColumn, SchemaInference};
pub use new_fields::NewFields;
pub use numbers::{convert_numbers, NumberKind};
pub use pick::{FieldPicker, Picked};
pub use rescue::{raw_value, unknown_fields, KnownFields};
pub use timestamps::TimestampParser;
