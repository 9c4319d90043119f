//! Name patterns: `*` wildcards over room names (permissions, history limits) and browser
//! origins (CORS). One matcher for all of them, with no allocation per match.

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        assert!(glob_match("http://localhost:*", "http://localhost:5173"));
        assert!(!glob_match(
            "http://localhost:*",
            "http://localhost.evil.com"
        ));
        assert!(glob_match(
            "https://*.example.com",
            "https://app.example.com"
        ));
        assert!(!glob_match(
            "https://*.example.com",
            "https://example.com.evil"
        ));
        assert!(glob_match("https://exact.com", "https://exact.com"));
        assert!(!glob_match("https://exact.com", "https://exact.com.au"));
        assert!(glob_match("*", "anything"));
    }
}
