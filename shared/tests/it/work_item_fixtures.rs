//! Golden work-item documents: every valid fixture decodes, re-encodes to the same JSON and
//! keeps its idempotency key (a changed key would make the ledger load data twice after an
//! upgrade); every invalid one is refused with an error that names what is wrong.

use std::path::PathBuf;

use shared::envelope::{EnvelopeError, MessageSizeLimit, WorkItem};

fn fixture(relative: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests/fixtures/work_items",
        relative,
    ]
    .iter()
    .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

#[test]
fn valid_fixtures_round_trip_and_keep_their_idempotency_keys() {
    // The keys are SHA-256 of the canonical text documented on
    // `WorkItem::idempotency_source`; checked independently with Python's hashlib.
    let golden = [
        (
            "valid/file_whole.json",
            "file-20133a36714402fe7bb559724714a9a0c1b91be1ea403f765c5d057c3eb7b565",
        ),
        (
            "valid/file_part.json",
            "file-468a4f05023f9c350d666241b21363285fa085170cca9e84c3f2a63269494a01",
        ),
        (
            "valid/records_inline.json",
            "records-4c4bd9cf9b2b6c4f84907c939fbc8860e871d03caedde4c56a2f0bb93b871236",
        ),
        (
            "valid/records_claim_check.json",
            "records-0a46bb817ce20d2b2341a384453dfc695f5d2d5a69056105fc46777184019a9b",
        ),
    ];
    let mut wrong = Vec::new();
    for (name, expected_key) in golden {
        let text = fixture(name);
        let item = WorkItem::from_json(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
        let encoded = item
            .to_json(MessageSizeLimit::default())
            .expect("re-encodes");
        let as_value = |t: &str| serde_json::from_str::<serde_json::Value>(t).expect("json");
        assert_eq!(
            as_value(&encoded),
            as_value(&text),
            "{name} changed on a round trip"
        );
        if item.idempotency_key().as_str() != expected_key {
            wrong.push(format!("{name}: {}", item.idempotency_key()));
        }
    }
    assert!(
        wrong.is_empty(),
        "idempotency keys changed:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn invalid_fixtures_are_refused_with_errors_that_name_the_problem() {
    let cases = [
        (
            "future_version.json",
            "work item version 2 is not supported by this build (it reads version 1)",
        ),
        (
            "missing_version.json",
            "work item has no numeric \"version\" field",
        ),
        (
            "string_version.json",
            "work item has no numeric \"version\" field",
        ),
        (
            "truncated.json",
            "work item is not valid JSON: EOF while parsing an object",
        ),
        (
            "not_an_object.json",
            "work item of version 1 is malformed: expected a JSON object",
        ),
        (
            "unknown_kind.json",
            "unknown variant `bundle`, expected `file` or `records`",
        ),
        (
            "unknown_format.json",
            "unknown variant `xlsx`, expected one of `csv`, `jsonl`, `parquet`",
        ),
        ("unknown_field.json", "unknown field `colour`"),
        (
            "part_without_range.json",
            "work item for dataset \"orders\" is invalid: a part must have a byte range",
        ),
        (
            "range_beyond_size.json",
            "byte range 50..200 is empty or beyond the object size 100",
        ),
        (
            "first_after_last.json",
            "first position 20/0 is after last position 9/0",
        ),
        ("empty_inline.json", "inline payload holds no records"),
    ];
    for (name, expected) in cases {
        let err = WorkItem::from_json(&fixture(&format!("invalid/{name}"))).expect_err(name);
        let message = shared::error::report(&err);
        assert!(
            message.contains(expected),
            "{name}: got {message:?}, expected it to contain {expected:?}"
        );
        assert!(
            matches!(
                err,
                EnvelopeError::NotJson { .. }
                    | EnvelopeError::MissingVersion
                    | EnvelopeError::UnsupportedVersion { .. }
                    | EnvelopeError::Malformed { .. }
                    | EnvelopeError::Invalid { .. }
            ),
            "{name}: {err:?}"
        );
    }
}
