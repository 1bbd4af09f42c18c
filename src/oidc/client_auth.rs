//! Client authentication at the token, revocation and introspection endpoints (RFC 6749
//! §2.3): `client_secret_basic`, `client_secret_post`, or `none` for public clients.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use url::form_urlencoded;

use super::error::{Code, OAuthError};
use super::params::Params;
use crate::crypto::secrets::{constant_time_eq, token_hash};
use crate::store::clients::Client;
use crate::store::{self, Store};

fn invalid_client(basic: bool, why: &str) -> OAuthError {
    OAuthError {
        basic_challenge: basic,
        ..OAuthError::new(Code::InvalidClient, why)
    }
}

/// `Authorization: Basic` credentials; each part is form-urlencoded (RFC 6749 §2.3.1).
pub(crate) fn basic_credentials(
    headers: &HeaderMap,
) -> Result<Option<(String, String)>, OAuthError> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // Two Authorization headers are two sets of credentials (RFC 6749 §2.3: one method per
    // request; RFC 9110 §5.3: not a list header): refused, never one of them picked.
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "the Authorization header is repeated",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| invalid_client(true, "malformed Authorization header"))?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(invalid_client(true, "malformed Authorization header"));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid_client(true, "unsupported authentication scheme"));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| invalid_client(true, "malformed Basic credentials"))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| invalid_client(true, "malformed Basic credentials"))?;
    let unescape = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    let id = unescape(id).unwrap_or_default();
    let secret = unescape(secret).unwrap_or_default();
    if id.is_empty() || id.chars().any(char::is_control) {
        return Err(invalid_client(true, "malformed Basic credentials"));
    }
    Ok(Some((id, secret)))
}

/// Authenticates the client of a back-channel request.
pub async fn authenticate(
    store: &Store,
    headers: &HeaderMap,
    params: &Params,
) -> Result<Client, OAuthError> {
    let presented = Presented::from_request(headers, params)?;
    let client = store::clients::find(store, &presented.client_id).await?;
    presented.accept(client)
}

/// The client credentials a request presents, not yet checked: read them, fetch the client
/// named by `client_id` (alone, or with what else the endpoint needs from the same round
/// trip), then [`Presented::accept`].
pub struct Presented {
    pub client_id: String,
    secret: Option<String>,
    basic: bool,
}

impl Presented {
    /// The credentials of one authentication method (RFC 6749 §2.3.1: Basic or the form, never
    /// both), or why they cannot be used.
    pub fn from_request(headers: &HeaderMap, params: &Params) -> Result<Self, OAuthError> {
        let basic = basic_credentials(headers)?;
        let form_id = params
            .get("client_id")
            .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
        let form_secret = params
            .get("client_secret")
            .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
        let used_basic = basic.is_some();
        let (client_id, secret) = match (basic, form_id, form_secret) {
            (Some(_), _, Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            (Some((id, _)), Some(other), None) if other != id => {
                return Err(OAuthError::invalid_request(
                    "client_id does not match the Authorization header",
                ));
            }
            (Some((id, secret)), _, None) => (id, Some(secret)),
            (None, Some(id), secret) => (id.to_owned(), secret.map(str::to_owned)),
            (None, None, _) => {
                return Err(invalid_client(false, "client authentication is required"));
            }
        };
        Ok(Self {
            client_id,
            secret,
            basic: used_basic,
        })
    }

    /// Checks the credentials against the stored client (`None`: no such client).
    pub fn accept(self, client: Option<Client>) -> Result<Client, OAuthError> {
        let used_basic = self.basic;
        let Some(client) = client else {
            return Err(invalid_client(used_basic, "unknown client or wrong secret"));
        };
        match (&client.secret_hash, self.secret) {
            // A confidential client proves its secret.
            (Some(stored), Some(given)) if !client.public => {
                if constant_time_eq(stored, &token_hash(&given)) {
                    Ok(client)
                } else {
                    Err(invalid_client(used_basic, "unknown client or wrong secret"))
                }
            }
            (Some(_), None) => Err(invalid_client(
                used_basic,
                "this client must authenticate with its secret",
            )),
            // A public client (`none`) presents only its id.
            (None, None) if client.public => Ok(client),
            _ => Err(invalid_client(used_basic, "unknown client or wrong secret")),
        }
    }
}
