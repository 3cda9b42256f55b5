//! Text cut to a byte budget (warehouse `VARCHAR` sizes, message attributes).

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character
/// boundary.
pub(crate) fn byte_prefix(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` as a TOML basic string, quoted and escaped (JSON's escapes are TOML's).
pub fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_a_character_boundary_within_the_budget() {
        assert_eq!(byte_prefix("ééé", 3), "é");
        assert_eq!(byte_prefix("ééé", 4), "éé");
        assert_eq!(byte_prefix("short", 10), "short");
        assert_eq!(byte_prefix("é", 1), "");
    }
}
