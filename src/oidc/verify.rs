//! Verifying the JWTs Tessera issued, when they come back: access tokens at userinfo,
//! introspection and revocation, ID tokens as `id_token_hint`.
//!
//! Only RS256 is accepted (no `none`, no HS256 with the public key as a secret: RFC 8725
//! §2.1, §3.1), only from a key in our own published set, with our issuer.

use jsonwebtoken::{Algorithm, Validation};
use serde::de::DeserializeOwned;

use super::tokens::{AccessClaims, IdClaims};
use crate::config::Config;
use crate::crypto::keys::KeyRing;

fn decode<T: DeserializeOwned>(
    keys: &KeyRing,
    token: &str,
    typ: Option<&str>,
    validation: &Validation,
) -> Option<T> {
    if token.len() > 8192 {
        return None;
    }
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.alg != Algorithm::RS256 {
        return None;
    }
    if let Some(typ) = typ
        && !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(typ))
    {
        return None;
    }
    let key = keys.decoding_key(header.kid.as_deref()?)?;
    jsonwebtoken::decode::<T>(token, &key, validation)
        .ok()
        .map(|data| data.claims)
}

/// A live access token of ours: signature, `typ: at+jwt`, issuer, audience, expiry. (Whether
/// its `jti` was revoked is the caller's question: it needs the database.)
pub fn access_token(keys: &KeyRing, config: &Config, token: &str) -> Option<AccessClaims> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 0;
    // RFC 7519 §4.1.5: "The "nbf" (not before) claim identifies the time before which the JWT
    // MUST NOT be accepted for processing." jsonwebtoken leaves it unchecked by default.
    validation.validate_nbf = true;
    decode(keys, token, Some("at+jwt"), &validation)
}

/// An ID token we issued, possibly expired (RP-Initiated Logout 1.0 §2: an expired ID token
/// is still a valid hint). Returns its claims; the caller checks `aud` against the client.
pub fn id_token_hint(keys: &KeyRing, config: &Config, token: &str) -> Option<IdClaims> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[&config.issuer]);
    validation.validate_exp = false;
    validation.validate_aud = false;
    // Expired is fine for a hint; not yet valid is not (RFC 7519 §4.1.5: "MUST NOT be
    // accepted for processing").
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    let header = jsonwebtoken::decode_header(token).ok()?;
    // An access token is not an ID token.
    if header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
    {
        return None;
    }
    decode(keys, token, None, &validation)
}
