//! From a Kinesis record's bytes to JSON user records: KPL de-aggregation, then per user
//! record optional gzip or zstd (recognised by their magic bytes), then JSON.

use std::io::Read;

use crate::kpl::{self, KplError};

/// The most bytes one user record may decompress to: a guard against compression bombs
/// (Kinesis records are at most 1 MiB compressed).
pub(crate) const MAX_DECOMPRESSED_BYTES: u64 = 16 * 1024 * 1024;

const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why a record's bytes could not be decoded; the record is quarantined with this reason.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Kpl(#[from] KplError),
    #[error("not valid {format} data")]
    Decompress {
        format: &'static str,
        source: std::io::Error,
    },
    #[error("decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes")]
    TooLarge,
    #[error("not valid JSON")]
    Json { source: serde_json::Error },
}

/// One user record's bytes and its sub-sequence number (0 unless KPL-aggregated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawUserRecord {
    pub sub_sequence_number: u64,
    pub data: Vec<u8>,
}

/// The user records of one Kinesis record: its de-aggregated records, or itself.
pub fn user_records(data: &[u8]) -> Result<Vec<RawUserRecord>, DecodeError> {
    if kpl::is_aggregated(data) {
        return Ok(kpl::deaggregate(data)?
            .into_iter()
            .map(|record| RawUserRecord {
                sub_sequence_number: record.sub_sequence_number,
                data: record.data,
            })
            .collect());
    }
    Ok(vec![RawUserRecord {
        sub_sequence_number: 0,
        data: data.to_vec(),
    }])
}

/// A user record's JSON value, decompressing it first when it is gzip or zstd.
pub fn json_value(data: &[u8]) -> Result<serde_json::Value, DecodeError> {
    let decompressed;
    let bytes = if data.starts_with(&GZIP_MAGIC) {
        decompressed = decompress("gzip", flate2::read::MultiGzDecoder::new(data))?;
        &decompressed[..]
    } else if data.starts_with(&ZSTD_MAGIC) {
        let decoder =
            zstd::stream::read::Decoder::new(data).map_err(|source| DecodeError::Decompress {
                format: "zstd",
                source,
            })?;
        decompressed = decompress("zstd", decoder)?;
        &decompressed[..]
    } else {
        data
    };
    // Some producers (.NET, PowerShell) start UTF-8 text with a byte order mark.
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    serde_json::from_slice(bytes).map_err(|source| DecodeError::Json { source })
}

fn decompress(format: &'static str, reader: impl Read) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    reader
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|source| DecodeError::Decompress { format, source })?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn plain_gzip_and_zstd_json_decode_alike() {
        let json = br#"{"event_id":"e1","order_id":7}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(json).expect("compress");
        let gz = gz.finish().expect("finish");
        let zst = zstd::encode_all(&json[..], 3).expect("zstd");
        let expected: serde_json::Value = serde_json::from_slice(json).expect("json");
        for data in [json.to_vec(), gz, zst] {
            assert_eq!(json_value(&data).expect("decodes"), expected);
        }
    }

    #[test]
    fn corrupt_compression_bombs_and_bad_json_are_clear_errors() {
        let mut truncated_gzip = GZIP_MAGIC.to_vec();
        truncated_gzip.extend([8, 0, 0, 0]);
        assert!(matches!(
            json_value(&truncated_gzip),
            Err(DecodeError::Decompress { format: "gzip", .. })
        ));
        let bomb = zstd::encode_all(&vec![b' '; 17 * 1024 * 1024][..], 3).expect("zstd");
        assert!(matches!(json_value(&bomb), Err(DecodeError::TooLarge)));
        let err = json_value(b"{\"a\":").expect_err("bad json");
        assert!(
            shared::error::report(&err).starts_with("not valid JSON"),
            "{err}"
        );
        let records = user_records(b"{}").expect("plain");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].sub_sequence_number, 0);
    }
}
