//! KPL-aggregated records written by the awslabs `aws_kinesis_agg` producer library (the
//! Python aggregator, KPL-compatible) de-aggregate to exactly the user records it was
//! given. The fixtures (`tests/fixtures/kpl/*.b64`) were generated with it once and are
//! checked in with the records it was fed (`*.expected.json`).

use ingest_stream::kpl::{KplError, deaggregate, is_aggregated};

fn fixture(name: &str) -> (Vec<u8>, serde_json::Value) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kpl/");
    let encoded = std::fs::read_to_string(format!("{dir}{name}.b64")).expect("fixture");
    let data = base64_decode(encoded.trim());
    let expected = std::fs::read_to_string(format!("{dir}{name}.expected.json")).expect("expected");
    (data, serde_json::from_str(&expected).expect("json"))
}

/// Standard base64, enough for fixtures (no dependency for it).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        other => panic!("not base64: {other}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=').map(value).collect();
    bytes
        .chunks(4)
        .flat_map(|chunk| {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, v)| acc | (u32::from(*v) << (18 - 6 * i)));
            let out = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.into_iter().take(chunk.len() - 1).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn aggregated_fixtures_yield_the_records_the_producer_was_given() {
    for name in ["three-records", "explicit-hash-key"] {
        let (data, expected) = fixture(name);
        assert!(is_aggregated(&data), "{name}");
        let records = deaggregate(&data).expect("de-aggregates");
        let expected = expected.as_array().expect("a list");
        assert_eq!(records.len(), expected.len(), "{name}");
        for (record, want) in records.iter().zip(expected) {
            assert_eq!(
                record.sub_sequence_number,
                want["sub_sequence_number"].as_u64().expect("n")
            );
            assert_eq!(
                record.partition_key,
                want["partition_key"].as_str().expect("key")
            );
            assert_eq!(
                record.explicit_hash_key.as_deref(),
                want["explicit_hash_key"].as_str()
            );
            assert_eq!(
                String::from_utf8(record.data.clone()).expect("utf8"),
                want["data"].as_str().expect("data")
            );
        }
    }
}

#[test]
fn a_corrupted_fixture_fails_its_checksum() {
    let (mut data, _) = fixture("three-records");
    let middle = data.len() / 2;
    data[middle] ^= 0x40;
    assert_eq!(deaggregate(&data), Err(KplError::Checksum));
    data.truncate(30);
    assert!(deaggregate(&data).is_err());
}
