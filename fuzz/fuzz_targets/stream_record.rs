//! Stream record decoding as the stream Lambda does it: KPL de-aggregation, then per user
//! record gzip/zstd by magic bytes and JSON, then validation against a dataset. Any bytes
//! end in records or a reason, never a panic, a hang or an allocation past the guard.
#![no_main]

use std::sync::LazyLock;

use ingest_stream::decode::{json_value, user_records};
use libfuzzer_sys::fuzz_target;
use shared::catalog::Catalog;
use shared::validate::validate_record;

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    Catalog::from_toml(
        include_str!("../../catalog/ecommerce.toml"),
        "ecommerce.toml",
    )
    .expect("the example catalog")
});

fuzz_target!(|data: &[u8]| {
    let Ok(records) = user_records(data) else {
        return;
    };
    let dataset = CATALOG
        .get("order_status_events")
        .expect("a stream dataset");
    for record in records {
        if let Ok(value) = json_value(&record.data) {
            let _ = validate_record(dataset, &value);
        }
    }
});
