//! Random tokens and their stored form.

use super::{b64url, sha256};

/// A fresh 256-bit random token, base64url (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The system RNG failing is not recoverable; fall back to a fresh UUIDv4 pair, which is
    // still drawn from the OS RNG by getrandom.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        bytes[..16].copy_from_slice(a.as_bytes());
        bytes[16..].copy_from_slice(b.as_bytes());
    }
    b64url(bytes)
}

/// Whether `s` has the shape of a [`random_token`]: 43 base64url characters.
pub fn is_token_shaped(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// How a token is stored: SHA-256, base64url. A database leak then reveals no usable token.
pub fn token_hash(token: &str) -> String {
    b64url(sha256(token.as_bytes()))
}

/// Constant-time equality of two strings.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_have_the_token_shape() {
        for _ in 0..100 {
            assert!(is_token_shaped(&random_token()));
        }
        assert!(!is_token_shaped("x"));
        assert!(!is_token_shaped(&"a".repeat(42)));
        assert!(!is_token_shaped(&format!("{}=", "a".repeat(42))));
    }
}
