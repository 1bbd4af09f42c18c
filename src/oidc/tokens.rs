//! The tokens Tessera issues: RFC 9068 JWT access tokens, OpenID Connect ID tokens, opaque
//! refresh tokens.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::crypto::keys::{KeyError, KeyRing};
use crate::crypto::{b64url, sha256};
use crate::store::users::UserRow;

/// Claims of an access token (RFC 9068 §2.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    /// The resource the token is for: Tessera's issuer (userinfo lives there).
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub auth_time: Option<i64>,
}

/// A fresh access-token id.
pub fn new_jti() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// When an access token issued at `now` expires.
pub fn access_exp(config: &Config, now: i64) -> i64 {
    now + i64::try_from(config.tokens.access_token_ttl.as_secs()).unwrap_or(900)
}

impl AccessClaims {
    /// The claims of a new access token `jti` for `sub` (a user id, or the client's id for
    /// client credentials). Built before signing so the grant can be stored and committed
    /// first, and the signature made without holding the database writer.
    pub fn new(
        config: &Config,
        jti: String,
        sub: &str,
        client_id: &str,
        scope: &str,
        auth_time: Option<i64>,
        now: i64,
    ) -> Self {
        Self {
            iss: config.issuer.clone(),
            sub: sub.to_owned(),
            aud: config.issuer.clone(),
            exp: access_exp(config, now),
            iat: now,
            jti,
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            auth_time,
        }
    }

    pub fn sign(&self, keys: &KeyRing) -> Result<String, KeyError> {
        // RFC 9068 §2.1: typ "at+jwt", so an access token cannot pass for an ID token.
        keys.sign("at+jwt", self)
    }
}

/// Claims of an ID token (OIDC Core §2, §3.1.3.6, §5.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nonce: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub at_hash: Option<String>,
    pub azp: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sid: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub amr: Vec<String>,
    /// The upstream provider the person signed in with, after a social sign-in.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub idp: Option<String>,
    #[serde(flatten)]
    pub profile: UserClaims,
}

/// The claims about a person that scopes release (OIDC Core §5.4).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserClaims {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email_verified: Option<bool>,
}

impl UserClaims {
    pub fn for_scopes(user: &UserRow, scopes: &[&str]) -> Self {
        let mut claims = Self::default();
        if scopes.contains(&"profile") {
            claims.name = Some(if user.display_name.is_empty() {
                user.username.clone()
            } else {
                user.display_name.clone()
            });
            claims.preferred_username = Some(user.username.clone());
        }
        if scopes.contains(&"email") {
            claims.email = Some(user.email.clone());
            claims.email_verified = Some(user.email_verified());
        }
        claims
    }
}

/// `at_hash`: the left half of SHA-256 over the access token, base64url (OIDC Core §3.1.3.6).
pub fn at_hash(access_token: &str) -> String {
    b64url(&sha256(access_token.as_bytes())[..16])
}

pub struct IdTokenInput<'a> {
    pub user: &'a UserRow,
    pub client_id: &'a str,
    pub scopes: &'a [&'a str],
    pub nonce: Option<&'a str>,
    pub auth_time: i64,
    pub amr: &'a str,
    pub sid: &'a str,
    pub idp: &'a str,
    pub access_token: &'a str,
    pub now: i64,
}

pub fn id_token(
    keys: &KeyRing,
    config: &Config,
    input: &IdTokenInput<'_>,
) -> Result<String, KeyError> {
    let claims = IdClaims {
        iss: config.issuer.clone(),
        sub: input.user.id.clone(),
        aud: input.client_id.to_owned(),
        exp: input.now + i64::try_from(config.tokens.id_token_ttl.as_secs()).unwrap_or(900),
        iat: input.now,
        auth_time: input.auth_time,
        nonce: input.nonce.map(str::to_owned),
        at_hash: Some(at_hash(input.access_token)),
        azp: input.client_id.to_owned(),
        sid: Some(input.sid.to_owned()).filter(|s| !s.is_empty()),
        amr: input.amr.split_whitespace().map(str::to_owned).collect(),
        idp: Some(input.idp.to_owned()).filter(|s| !s.is_empty()),
        profile: UserClaims::for_scopes(input.user, input.scopes),
    };
    keys.sign("JWT", &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_oidc_example() {
        // OIDC Core Appendix A.3: access token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y".
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
