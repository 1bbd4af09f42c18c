//! Compact JWS serialisation (RFC 7515 §7.1) of JWTs signed with RS256.
//!
//! Signing uses an aws-lc-rs key pair parsed once when the key ring loads, rather than
//! `jsonwebtoken::encode`, which re-parses the PKCS#8 key on every call and so signs at well
//! under half the speed (see `../shared/STACK.md`). Verification, in the tests and later in
//! the endpoints that accept JWTs, goes through `jsonwebtoken`.

use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use serde::Serialize;

use super::b64url;

/// The JOSE header Tessera writes.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'a str,
    kid: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("claims could not be serialised: {0}")]
    Claims(#[from] serde_json::Error),
    #[error("RSA signing failed")]
    Rsa,
}

/// Signs `claims` as an RS256 JWT with header `typ` (`"JWT"`, or `"at+jwt"` for RFC 9068
/// access tokens) and `kid`.
pub fn sign_rs256(
    pair: &KeyPair,
    kid: &str,
    typ: &str,
    claims: &impl Serialize,
) -> Result<String, SignError> {
    let header = serde_json::to_vec(&Header {
        alg: "RS256",
        typ,
        kid,
    })?;
    let claims = serde_json::to_vec(claims)?;
    let mut token = String::with_capacity(64 + header.len() * 4 / 3 + claims.len() * 4 / 3 + 344);
    token.push_str(&b64url(header));
    token.push('.');
    token.push_str(&b64url(claims));
    let mut signature = vec![0u8; pair.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    pair.sign(&RSA_PKCS1_SHA256, &rng, token.as_bytes(), &mut signature)
        .map_err(|_| SignError::Rsa)?;
    token.push('.');
    token.push_str(&b64url(signature));
    Ok(token)
}
