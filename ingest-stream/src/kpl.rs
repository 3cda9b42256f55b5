//! De-aggregation of records written by the Kinesis Producer Library (KPL), which packs
//! many user records into one Kinesis record by default:
//!
//! ```text
//! F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf bytes (16 bytes)
//!
//! AggregatedRecord { repeated string partition_key_table = 1;
//!                    repeated string explicit_hash_key_table = 2;
//!                    repeated Record records = 3; }
//! Record { uint64 partition_key_index = 1; uint64 explicit_hash_key_index = 2;
//!          bytes data = 3; repeated Tag tags = 4; }
//! ```
//!
//! Each user record keeps its position in the container as its sub-sequence number, so
//! (sequence number, sub-sequence number) identifies it for the lineage columns. The
//! protobuf is read by hand (three messages, four wire types): no code generator in the
//! build for so small a format.

use md5::{Digest, Md5};

/// The four bytes an aggregated record starts with.
pub(crate) const KPL_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const CHECKSUM_BYTES: usize = 16;

/// One user record of an aggregated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its index in the container.
    pub sub_sequence_number: u64,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

/// Why an aggregated record could not be read. Such a record is quarantined whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    #[error("KPL aggregated record: the MD5 checksum does not match its contents")]
    Checksum,
    #[error("KPL aggregated record: {0}")]
    Malformed(String),
}

/// Whether `data` is a KPL aggregated record (magic, then at least a checksum).
pub fn is_aggregated(data: &[u8]) -> bool {
    data.len() >= KPL_MAGIC.len() + CHECKSUM_BYTES && data.starts_with(&KPL_MAGIC)
}

/// The user records of an aggregated record, in order.
pub fn deaggregate(data: &[u8]) -> Result<Vec<UserRecord>, KplError> {
    if !is_aggregated(data) {
        return Err(KplError::Malformed("too short or no magic prefix".into()));
    }
    let body = &data[KPL_MAGIC.len()..data.len() - CHECKSUM_BYTES];
    let checksum = &data[data.len() - CHECKSUM_BYTES..];
    if Md5::digest(body).as_slice() != checksum {
        return Err(KplError::Checksum);
    }
    let mut partition_keys = Vec::new();
    let mut hash_keys = Vec::new();
    let mut raw_records = Vec::new();
    let mut reader = Reader::new(body);
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (1, Value::Bytes(bytes)) => partition_keys.push(utf8(bytes, "partition key")?),
            (2, Value::Bytes(bytes)) => hash_keys.push(utf8(bytes, "explicit hash key")?),
            (3, Value::Bytes(bytes)) => raw_records.push(bytes),
            (1..=3, _) => return Err(wire_type_error(field, "AggregatedRecord")),
            _ => {} // unknown fields are skipped, as protobuf readers do
        }
    }
    raw_records
        .into_iter()
        .enumerate()
        .map(|(index, bytes)| {
            let mut partition_key_index = None;
            let mut hash_key_index = None;
            let mut payload = None;
            let mut reader = Reader::new(bytes);
            while let Some((field, value)) = reader.field()? {
                match (field, value) {
                    (1, Value::Varint(n)) => partition_key_index = Some(n),
                    (2, Value::Varint(n)) => hash_key_index = Some(n),
                    (3, Value::Bytes(data)) => payload = Some(data.to_vec()),
                    (1..=3, _) => return Err(wire_type_error(field, "Record")),
                    _ => {} // tags and unknown fields
                }
            }
            let lookup = |table: &[String], index: u64, what: &str| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| table.get(i))
                    .cloned()
                    .ok_or_else(|| {
                        KplError::Malformed(format!(
                            "{what} index {index} is outside its table of {}",
                            table.len()
                        ))
                    })
            };
            let partition_key = lookup(
                &partition_keys,
                partition_key_index.ok_or_else(|| missing(index, "partition_key_index"))?,
                "partition key",
            )?;
            let explicit_hash_key = hash_key_index
                .map(|i| lookup(&hash_keys, i, "explicit hash key"))
                .transpose()?;
            Ok(UserRecord {
                sub_sequence_number: index as u64,
                partition_key,
                explicit_hash_key,
                data: payload.ok_or_else(|| missing(index, "data"))?,
            })
        })
        .collect()
}

fn missing(index: usize, field: &str) -> KplError {
    KplError::Malformed(format!("record {index} has no {field}"))
}

fn wire_type_error(field: u64, message: &str) -> KplError {
    KplError::Malformed(format!(
        "field {field} of {message} has the wrong wire type"
    ))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, KplError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| KplError::Malformed(format!("a {what} is not UTF-8")))
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Reads protobuf fields one at a time.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn truncated(&self) -> KplError {
        KplError::Malformed(format!("truncated protobuf at byte {}", self.at))
    }

    fn varint(&mut self) -> Result<u64, KplError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or_else(|| self.truncated())?;
            self.at += 1;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(KplError::Malformed(format!(
            "varint longer than 10 bytes at byte {}",
            self.at
        )))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], KplError> {
        let len = usize::try_from(len).map_err(|_| self.truncated())?;
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.truncated())?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// The next field number and value, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, KplError> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (field, wire_type) = (key >> 3, key & 7);
        let value = match wire_type {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            other => {
                return Err(KplError::Malformed(format!(
                    "unsupported wire type {other} at byte {}",
                    self.at
                )));
            }
        };
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_records_are_not_aggregated() {
        assert!(!is_aggregated(b"{\"a\":1}"));
        assert!(!is_aggregated(&KPL_MAGIC));
        assert!(deaggregate(b"{}").is_err());
    }

    #[test]
    fn truncated_and_tampered_containers_are_errors_not_panics() {
        let body = [0x1A, 0x05, 0x08, 0x00, 0x1A, 0x01]; // a record whose data is cut short
        let mut data = KPL_MAGIC.to_vec();
        data.extend(body);
        data.extend(Md5::digest(body));
        let err = deaggregate(&data).expect_err("truncated");
        assert!(err.to_string().contains("truncated"), "{err}");

        let mut tampered = data.clone();
        tampered[5] ^= 1;
        assert_eq!(deaggregate(&tampered), Err(KplError::Checksum));

        // An index outside the partition key table.
        let record = [0x08, 0x07, 0x1A, 0x01, b'x'];
        let mut body = vec![0x1A, record.len() as u8];
        body.extend(record);
        let mut data = KPL_MAGIC.to_vec();
        data.extend(&body);
        data.extend(Md5::digest(&body));
        let err = deaggregate(&data).expect_err("bad index");
        assert!(err.to_string().contains("partition key index 7"), "{err}");
    }
}
