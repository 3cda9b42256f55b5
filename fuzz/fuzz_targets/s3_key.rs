//! Object keys from S3 event notifications: any text decodes to a key or an error; and
//! every key, encoded the way S3 encodes keys in notifications, decodes to itself.
#![no_main]

use ingest_batch::keys::decode_event_key;
use libfuzzer_sys::fuzz_target;

/// Form-URL encoding as S3 applies it to notification keys: `+` for a space, `%XX` for
/// every byte outside the unreserved set.
fn encode(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len() * 3);
    for byte in key.bytes() {
        match byte {
            b' ' => encoded.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                encoded.push(byte as char)
            }
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    encoded
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = decode_event_key(text);
    if !text.is_empty() {
        assert_eq!(
            decode_event_key(&encode(text)).as_deref(),
            Ok(text),
            "round trip"
        );
    }
});
