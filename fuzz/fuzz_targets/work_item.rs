//! Work-item decoding: any message body either decodes to a valid item or is refused with
//! an error; a decoded item survives a round trip with the same idempotency key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::envelope::{MessageSizeLimit, WorkItem};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(item) = WorkItem::from_json(text) else {
        return;
    };
    let key = item.idempotency_key();
    let _ = item.idempotency_source();
    let _ = item.dataset();
    let _ = item.arrived_at_ms();
    let _ = item.source_bytes(text.len());
    if let WorkItem::File(file) = &item {
        let _ = file.file_id();
        let _ = file.parts_total();
    }
    if let Ok(json) = item.to_json(MessageSizeLimit::default()) {
        let again = WorkItem::from_json(&json).expect("an encoded item decodes");
        assert_eq!(again, item, "round trip");
        assert_eq!(again.idempotency_key(), key, "stable key");
    }
});
