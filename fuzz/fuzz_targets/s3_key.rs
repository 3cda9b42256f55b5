//! Object keys from S3 event notifications: any text decodes to a key or an error; and
//! every key, encoded the way S3 encodes keys in notifications, decodes to itself.
#![no_main]

use ingest_batch::keys::{decode_event_key, encode_event_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = decode_event_key(text);
    if !text.is_empty() {
        assert_eq!(
            decode_event_key(&encode_event_key(text)).as_deref(),
            Ok(text),
            "round trip"
        );
    }
});
