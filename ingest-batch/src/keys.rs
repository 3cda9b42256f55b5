//! Object keys as S3 event notifications carry them: form-URL-encoded (`+` for a space,
//! `%XX` for every other byte that needs it, UTF-8 underneath). The key a work item holds,
//! and the one `GetObject` needs, is the decoded one.

/// Why an encoded key could not be decoded. Such an event cannot name an object, so it is
/// counted and logged rather than retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key {encoded:?}: `%` at byte {at} is not followed by two hex digits")]
    BadEscape { encoded: String, at: usize },
    #[error("key {encoded:?} does not decode to UTF-8")]
    NotUtf8 { encoded: String },
    #[error("the event carries an empty object key")]
    Empty,
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes a key from an S3 event notification.
pub fn decode_event_key(encoded: &str) -> Result<String, KeyError> {
    if encoded.is_empty() {
        return Err(KeyError::Empty);
    }
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'+' => {
                decoded.push(b' ');
                at += 1;
            }
            b'%' => {
                let escape = bytes
                    .get(at + 1)
                    .and_then(|high| hex_value(*high))
                    .zip(bytes.get(at + 2).and_then(|low| hex_value(*low)));
                let Some((high, low)) = escape else {
                    return Err(KeyError::BadEscape {
                        encoded: encoded.to_owned(),
                        at,
                    });
                };
                decoded.push(high << 4 | low);
                at += 3;
            }
            other => {
                decoded.push(other);
                at += 1;
            }
        }
    }
    String::from_utf8(decoded).map_err(|_| KeyError::NotUtf8 {
        encoded: encoded.to_owned(),
    })
}

/// Encodes a key the way S3 does in event notifications: `+` for a space, `%XX` for every
/// byte outside the unreserved set. The inverse of [`decode_event_key`]; for building
/// events (backfills, tests).
pub fn encode_event_key(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len() * 3);
    for byte in key.bytes() {
        match byte {
            b' ' => encoded.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                encoded.push(char::from(byte))
            }
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_escapes_and_unicode_decode_the_way_s3_encodes_them() {
        assert_eq!(
            decode_event_key("landing/orders/2026+11+22/file.csv").as_deref(),
            Ok("landing/orders/2026 11 22/file.csv")
        );
        // A literal plus is sent as %2B; a literal percent as %25.
        assert_eq!(
            decode_event_key("a%2Bb%25c%3D%26.csv").as_deref(),
            Ok("a+b%c=&.csv")
        );
        assert_eq!(
            decode_event_key("kunden/M%C3%BCnchen/%E6%9D%B1%E4%BA%AC+%F0%9F%93%A6.csv").as_deref(),
            Ok("kunden/München/東京 📦.csv")
        );
        assert_eq!(
            decode_event_key("%2f%2F").as_deref(),
            Ok("//"),
            "either case"
        );
        assert_eq!(decode_event_key("plain.csv").as_deref(), Ok("plain.csv"));
    }

    #[test]
    fn encoding_is_what_s3_sends_and_decodes_back() {
        let key = "landing/a b+c%d/Zürich 📦.csv";
        assert_eq!(
            encode_event_key(key),
            "landing/a+b%2Bc%25d/Z%C3%BCrich+%F0%9F%93%A6.csv"
        );
        assert_eq!(decode_event_key(&encode_event_key(key)).as_deref(), Ok(key));
    }

    #[test]
    fn broken_encodings_are_errors_that_name_the_key() {
        assert_eq!(
            decode_event_key("bad%2"),
            Err(KeyError::BadEscape {
                encoded: "bad%2".into(),
                at: 3
            })
        );
        assert_eq!(
            decode_event_key("bad%zz.csv"),
            Err(KeyError::BadEscape {
                encoded: "bad%zz.csv".into(),
                at: 3
            })
        );
        assert_eq!(
            decode_event_key("latin1-%E9.csv"),
            Err(KeyError::NotUtf8 {
                encoded: "latin1-%E9.csv".into()
            })
        );
        assert_eq!(decode_event_key(""), Err(KeyError::Empty));
        assert!(
            decode_event_key("x%4")
                .expect_err("truncated")
                .to_string()
                .contains("\"x%4\"")
        );
    }
}
