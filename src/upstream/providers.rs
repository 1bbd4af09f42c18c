//! The upstream providers: any OpenID Connect provider (Google is one, found through
//! discovery at its issuer) through the `openidconnect` crate, and GitHub through the `oauth2`
//! crate plus its REST API.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::linking::LinkMode;
use crate::config::Config;

/// What an upstream says about the person, after the checks.
#[derive(Debug, Clone)]
pub struct Profile {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub username: Option<String>,
}

#[derive(Debug, Clone)]
enum Kind {
    Oidc {
        issuer: String,
        scopes: Vec<String>,
    },
    Github {
        authorize_url: String,
        token_url: String,
        api_url: String,
    },
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub id: String,
    pub display_name: String,
    pub link_mode: LinkMode,
    client_id: String,
    client_secret: String,
    kind: Kind,
}

/// Why an upstream sign-in failed, in words for the person (the detail goes to the log).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0} could not be reached")]
    Unreachable(String),
    #[error("{0} answered in a way we could not accept")]
    Rejected(String),
}

/// Everything started and not finished yet, kept in the browser session.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Started {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

pub struct Providers {
    list: Vec<Provider>,
    http: reqwest::Client,
    /// Discovery documents, re-fetched hourly.
    metadata: Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>,
    callback_base: String,
}

const METADATA_TTL: Duration = Duration::from_secs(3600);

impl Providers {
    /// The providers with credentials; the others are off.
    pub fn from_config(config: &Config) -> Result<Self, reqwest::Error> {
        let u = &config.upstream;
        let mut list = Vec::new();
        if !u.google.client_id.is_empty() {
            list.push(Provider {
                id: "google".into(),
                display_name: "Google".into(),
                link_mode: u.google.link_by_email,
                client_id: u.google.client_id.clone(),
                client_secret: u.google.client_secret.clone(),
                kind: Kind::Oidc {
                    issuer: u.google.issuer.clone(),
                    scopes: vec!["openid".into(), "email".into(), "profile".into()],
                },
            });
        }
        if !u.github.client_id.is_empty() {
            list.push(Provider {
                id: "github".into(),
                display_name: "GitHub".into(),
                link_mode: u.github.link_by_email,
                client_id: u.github.client_id.clone(),
                client_secret: u.github.client_secret.clone(),
                kind: Kind::Github {
                    authorize_url: u.github.authorize_url.clone(),
                    token_url: u.github.token_url.clone(),
                    api_url: u.github.api_url.trim_end_matches('/').to_owned(),
                },
            });
        }
        for p in u.oidc.iter().filter(|p| !p.client_id.is_empty()) {
            list.push(Provider {
                id: p.id.clone(),
                display_name: if p.display_name.is_empty() {
                    p.id.clone()
                } else {
                    p.display_name.clone()
                },
                link_mode: p.link_by_email,
                client_id: p.client_id.clone(),
                client_secret: p.client_secret.clone(),
                kind: Kind::Oidc {
                    issuer: p.issuer.clone(),
                    scopes: p.scopes.clone(),
                },
            });
        }
        // No redirects: an upstream must not be able to point our requests elsewhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .user_agent("Tessera")
            .build()?;
        Ok(Self {
            list,
            http,
            metadata: Mutex::new(HashMap::new()),
            callback_base: config.issuer.trim_end_matches('/').to_owned(),
        })
    }

    pub fn enabled(&self) -> &[Provider] {
        &self.list
    }

    pub fn get(&self, id: &str) -> Option<&Provider> {
        self.list.iter().find(|p| p.id == id)
    }

    fn redirect_uri(&self, provider: &Provider) -> String {
        format!("{}/upstream/{}/callback", self.callback_base, provider.id)
    }

    async fn discover(
        &self,
        provider: &Provider,
        issuer: &str,
    ) -> Result<CoreProviderMetadata, UpstreamError> {
        let mut cache = self.metadata.lock().await;
        if let Some((at, metadata)) = cache.get(&provider.id)
            && at.elapsed() < METADATA_TTL
        {
            return Ok(metadata.clone());
        }
        let issuer_url = IssuerUrl::new(issuer.to_owned())
            .map_err(|_| UpstreamError::Rejected(provider.display_name.clone()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer_url, &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = provider.id, error = %e, "upstream discovery failed");
                UpstreamError::Unreachable(provider.display_name.clone())
            })?;
        cache.insert(provider.id.clone(), (Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    /// The URL to send the browser to, and what to remember to check the answer.
    pub async fn start(&self, provider: &Provider) -> Result<(String, Started), UpstreamError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let redirect = RedirectUrl::new(self.redirect_uri(provider))
            .map_err(|_| UpstreamError::Rejected(provider.display_name.clone()))?;
        match &provider.kind {
            Kind::Oidc { issuer, scopes } => {
                let metadata = self.discover(provider, issuer).await?;
                let client = CoreClient::from_provider_metadata(
                    metadata,
                    ClientId::new(provider.client_id.clone()),
                    Some(ClientSecret::new(provider.client_secret.clone())),
                )
                .set_redirect_uri(redirect);
                let mut request = client
                    .authorize_url(
                        CoreAuthenticationFlow::AuthorizationCode,
                        CsrfToken::new_random,
                        Nonce::new_random,
                    )
                    .set_pkce_challenge(challenge);
                for s in scopes.iter().filter(|s| s.as_str() != "openid") {
                    request = request.add_scope(Scope::new(s.clone()));
                }
                let (url, state, nonce) = request.url();
                Ok((
                    url.to_string(),
                    Started {
                        state: state.secret().clone(),
                        nonce: nonce.secret().clone(),
                        verifier: verifier.secret().clone(),
                    },
                ))
            }
            Kind::Github {
                authorize_url,
                token_url,
                ..
            } => {
                let client = github_client(provider, authorize_url, token_url, redirect)?;
                let (url, state) = client
                    .authorize_url(oauth2::CsrfToken::new_random)
                    .add_scope(oauth2::Scope::new("read:user".into()))
                    .add_scope(oauth2::Scope::new("user:email".into()))
                    .set_pkce_challenge(oauth2::PkceCodeChallenge::from_code_verifier_sha256(
                        &oauth2::PkceCodeVerifier::new(verifier.secret().clone()),
                    ))
                    .url();
                Ok((
                    url.to_string(),
                    Started {
                        state: state.secret().clone(),
                        nonce: String::new(),
                        verifier: verifier.secret().clone(),
                    },
                ))
            }
        }
    }

    /// Exchanges the code and checks everything: for OpenID Connect the ID token's signature
    /// (through the upstream's JWKS), issuer, audience, expiry and nonce; for GitHub the
    /// account and its primary email as the REST API reports them.
    pub async fn finish(
        &self,
        provider: &Provider,
        code: &str,
        started: &Started,
    ) -> Result<Profile, UpstreamError> {
        let rejected = |what: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(provider = provider.id, error = %e, what, "upstream answer rejected");
            UpstreamError::Rejected(provider.display_name.clone())
        };
        let redirect =
            RedirectUrl::new(self.redirect_uri(provider)).map_err(|e| rejected("redirect", &e))?;
        match &provider.kind {
            Kind::Oidc { issuer, .. } => {
                let metadata = self.discover(provider, issuer).await?;
                let client = CoreClient::from_provider_metadata(
                    metadata,
                    ClientId::new(provider.client_id.clone()),
                    Some(ClientSecret::new(provider.client_secret.clone())),
                )
                .set_redirect_uri(redirect);
                let response = client
                    .exchange_code(AuthorizationCode::new(code.to_owned()))
                    .map_err(|e| rejected("token endpoint", &e))?
                    .set_pkce_verifier(PkceCodeVerifier::new(started.verifier.clone()))
                    .request_async(&self.http)
                    .await
                    .map_err(|e| rejected("code exchange", &e))?;
                let id_token = response
                    .id_token()
                    .ok_or_else(|| rejected("id token", &"missing"))?;
                let verifier = client.id_token_verifier();
                let claims = id_token
                    .claims(&verifier, &Nonce::new(started.nonce.clone()))
                    .map_err(|e| rejected("id token", &e))?;
                let _ = response.access_token();
                Ok(Profile {
                    subject: claims.subject().as_str().to_owned(),
                    email: claims.email().map(|e| e.as_str().to_owned()),
                    email_verified: claims.email_verified().unwrap_or(false),
                    name: claims
                        .name()
                        .and_then(|n| n.get(None))
                        .map(|n| n.as_str().to_owned()),
                    username: claims.preferred_username().map(|u| u.as_str().to_owned()),
                })
            }
            Kind::Github {
                authorize_url,
                token_url,
                api_url,
            } => {
                let client = github_client(provider, authorize_url, token_url, redirect)?;
                let response = client
                    .exchange_code(oauth2::AuthorizationCode::new(code.to_owned()))
                    .set_pkce_verifier(oauth2::PkceCodeVerifier::new(started.verifier.clone()))
                    .request_async(&self.http)
                    .await
                    .map_err(|e| rejected("code exchange", &e))?;
                let token = response.access_token().secret().clone();
                self.github_profile(provider, api_url, &token).await
            }
        }
    }

    async fn github_profile(
        &self,
        provider: &Provider,
        api_url: &str,
        token: &str,
    ) -> Result<Profile, UpstreamError> {
        #[derive(Deserialize)]
        struct User {
            id: u64,
            login: String,
            name: Option<String>,
        }
        #[derive(Deserialize)]
        struct Email {
            email: String,
            primary: bool,
            verified: bool,
        }
        let get = |path: &str| {
            self.http
                .get(format!("{api_url}{path}"))
                .bearer_auth(token)
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28")
                .send()
        };
        let down = |e: reqwest::Error| {
            tracing::warn!(provider = provider.id, error = %e, "GitHub API request failed");
            UpstreamError::Unreachable(provider.display_name.clone())
        };
        let bad = |e: reqwest::Error| {
            tracing::warn!(provider = provider.id, error = %e, "GitHub API answer rejected");
            UpstreamError::Rejected(provider.display_name.clone())
        };
        let user: User = get("/user")
            .await
            .map_err(down)?
            .error_for_status()
            .map_err(bad)?
            .json()
            .await
            .map_err(bad)?;
        let emails: Vec<Email> = get("/user/emails")
            .await
            .map_err(down)?
            .error_for_status()
            .map_err(bad)?
            .json()
            .await
            .map_err(bad)?;
        // Only the primary address counts, and only if GitHub has verified it; a verified
        // secondary address is not the account's identity.
        let primary = emails.into_iter().find(|e| e.primary);
        Ok(Profile {
            subject: user.id.to_string(),
            email_verified: primary.as_ref().is_some_and(|e| e.verified),
            email: primary.map(|e| e.email),
            name: user.name,
            username: Some(user.login),
        })
    }
}

type GithubClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    oauth2::basic::BasicTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn github_client(
    provider: &Provider,
    authorize_url: &str,
    token_url: &str,
    redirect: RedirectUrl,
) -> Result<GithubClient, UpstreamError> {
    let rejected = || UpstreamError::Rejected(provider.display_name.clone());
    Ok(
        oauth2::basic::BasicClient::new(oauth2::ClientId::new(provider.client_id.clone()))
            .set_client_secret(oauth2::ClientSecret::new(provider.client_secret.clone()))
            .set_auth_uri(oauth2::AuthUrl::new(authorize_url.to_owned()).map_err(|_| rejected())?)
            .set_token_uri(oauth2::TokenUrl::new(token_url.to_owned()).map_err(|_| rejected())?)
            .set_redirect_uri(
                oauth2::RedirectUrl::new(redirect.as_str().to_owned()).map_err(|_| rejected())?,
            ),
    )
}
