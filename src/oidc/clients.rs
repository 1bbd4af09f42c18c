//! Registering clients: the rules shared by `tessera client create` and `[[clients]]` in the
//! configuration file.

use crate::config::{ClientConfig, Config};
use crate::crypto::secrets::{random_token, token_hash};
use crate::store::clients::Client;
use crate::store::{self, Store};

pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];
/// The scopes with a meaning in OpenID Connect; clients may also carry their own API scopes.
pub const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// What a new client looks like before it is stored.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub id: Option<String>,
    pub name: String,
    pub secret: Option<String>,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub auth_method: Option<String>,
    pub skip_consent: bool,
}

/// A redirect URI must be absolute, without a fragment (RFC 6749 §3.1.2) or credentials, and
/// is then matched byte for byte.
pub fn validate_uri(uri: &str) -> Result<(), String> {
    let parsed = url::Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URI"))?;
    if parsed.fragment().is_some() || uri.contains('#') {
        return Err(format!("{uri:?} must not have a fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("{uri:?} must not contain credentials"));
    }
    // Registered URIs are compared as strings; one the URL parser would rewrite (`https:///x`
    // becomes `https://x/`) could never match what a browser sends.
    let authority = uri.split_once("://").map(|(_, rest)| rest);
    if matches!(parsed.scheme(), "http" | "https")
        && (parsed.host_str().is_none_or(str::is_empty)
            || authority.is_none_or(|a| a.starts_with('/')))
    {
        return Err(format!("{uri:?} has no host"));
    }
    if matches!(parsed.scheme(), "javascript" | "data" | "file" | "vbscript") {
        return Err(format!("{uri:?} uses a forbidden scheme"));
    }
    Ok(())
}

fn scope_ok(s: &str) -> bool {
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Checks a spec and fills in defaults.
pub fn normalise(mut spec: Spec) -> Result<Spec, String> {
    spec.name = spec.name.trim().to_owned();
    if spec.name.is_empty()
        || spec.name.chars().count() > 100
        || spec.name.chars().any(char::is_control)
    {
        return Err("the name must be 1 to 100 characters".into());
    }
    if let Some(id) = &spec.id
        && (id.is_empty()
            || id.len() > 128
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)))
    {
        return Err("a client id is 1 to 128 letters, digits, '-', '.', '_' or '~'".into());
    }
    if spec.grant_types.is_empty() {
        spec.grant_types = vec!["authorization_code".into(), "refresh_token".into()];
    }
    spec.grant_types.sort();
    spec.grant_types.dedup();
    for g in &spec.grant_types {
        if !GRANT_TYPES.contains(&g.as_str()) {
            return Err(format!(
                "unknown grant type {g:?} (use {})",
                GRANT_TYPES.join(", ")
            ));
        }
    }
    if spec.public && spec.grant_types.iter().any(|g| g == "client_credentials") {
        return Err("a public client cannot use client_credentials".into());
    }
    if spec.scopes.is_empty() {
        spec.scopes = OIDC_SCOPES.iter().map(|s| (*s).to_owned()).collect();
    }
    spec.scopes.dedup();
    if let Some(bad) = spec.scopes.iter().find(|s| !scope_ok(s)) {
        return Err(format!("invalid scope {bad:?}"));
    }
    let uses_code = spec.grant_types.iter().any(|g| g == "authorization_code");
    if uses_code && spec.redirect_uris.is_empty() {
        return Err("the authorization_code grant needs at least one redirect URI".into());
    }
    for uri in spec
        .redirect_uris
        .iter()
        .chain(&spec.post_logout_redirect_uris)
    {
        validate_uri(uri)?;
    }
    spec.auth_method = Some(match (spec.public, spec.auth_method.as_deref()) {
        (true, None | Some("none")) => "none".into(),
        (true, Some(other)) => {
            return Err(format!(
                "a public client authenticates with none, not {other}"
            ));
        }
        (false, None) => "client_secret_basic".into(),
        (false, Some(m @ ("client_secret_basic" | "client_secret_post"))) => m.into(),
        (false, Some(other)) => {
            return Err(format!(
                "unsupported auth method {other:?} (client_secret_basic, client_secret_post)"
            ));
        }
    });
    Ok(spec)
}

/// Validates a `[[clients]]` entry at configuration load.
pub fn validate_declared(c: &ClientConfig) -> Result<(), String> {
    if c.id.is_empty() {
        return Err("id is required".into());
    }
    if !c.public && c.secret.len() < 16 {
        return Err("a confidential client needs a secret of at least 16 characters".into());
    }
    normalise(spec_of(c)).map(drop)
}

fn spec_of(c: &ClientConfig) -> Spec {
    Spec {
        id: Some(c.id.clone()),
        name: if c.name.is_empty() {
            c.id.clone()
        } else {
            c.name.clone()
        },
        secret: (!c.public).then(|| c.secret.clone()),
        public: c.public,
        redirect_uris: c.redirect_uris.clone(),
        post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
        grant_types: c.grant_types.clone(),
        scopes: c.scopes.clone(),
        auth_method: None,
        skip_consent: c.skip_consent,
    }
}

/// Stores a client; returns it and, for a new confidential client without a given secret, the
/// generated secret (shown once, stored only as a hash).
pub async fn register(
    store: &Store,
    spec: Spec,
) -> Result<(Client, Option<String>), RegisterError> {
    let spec = normalise(spec).map_err(RegisterError::Invalid)?;
    let secret = if spec.public {
        None
    } else {
        Some(spec.secret.clone().unwrap_or_else(random_token))
    };
    let now = store::now_unix();
    let client = Client {
        id: spec
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
        name: spec.name,
        secret_hash: secret.as_deref().map(token_hash),
        public: spec.public,
        redirect_uris: spec.redirect_uris,
        post_logout_redirect_uris: spec.post_logout_redirect_uris,
        grant_types: spec.grant_types,
        scopes: spec.scopes,
        auth_method: spec
            .auth_method
            .unwrap_or_else(|| "client_secret_basic".into()),
        skip_consent: spec.skip_consent,
        created_at: now,
    };
    let mut tx = store.begin_write().await?;
    store::clients::upsert(&mut tx, &client, now).await?;
    tx.commit().await?;
    store.settle().await;
    Ok((client, secret))
}

/// Creates or updates every client declared in the configuration.
pub async fn sync_declared(store: &Store, config: &Config) -> Result<usize, RegisterError> {
    for c in &config.clients {
        register(store, spec_of(c)).await?;
    }
    Ok(config.clients.len())
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_absolute_without_fragments_or_credentials() {
        assert!(validate_uri("https://app.example/cb").is_ok());
        assert!(validate_uri("http://127.0.0.1:3000/cb?x=1").is_ok());
        assert!(validate_uri("com.example.app:/oauth").is_ok());
        for bad in [
            "/cb",
            "https://app.example/cb#x",
            "https://u:p@app.example/cb",
            "javascript:alert(1)",
            "https:///cb",
        ] {
            assert!(validate_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_and_refusals() {
        let spec = normalise(Spec {
            name: "App".into(),
            redirect_uris: vec!["https://a.example/cb".into()],
            ..Spec::default()
        })
        .unwrap();
        assert_eq!(spec.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(spec.auth_method.as_deref(), Some("client_secret_basic"));
        assert!(
            normalise(Spec {
                name: "App".into(),
                ..Spec::default()
            })
            .is_err(),
            "code flow without redirect URI"
        );
        assert!(
            normalise(Spec {
                name: "App".into(),
                public: true,
                grant_types: vec!["client_credentials".into()],
                ..Spec::default()
            })
            .is_err()
        );
        assert!(
            normalise(Spec {
                name: "App".into(),
                grant_types: vec!["password".into()],
                redirect_uris: vec!["https://a/cb".into()],
                ..Spec::default()
            })
            .is_err()
        );
    }
}
