//! Layered configuration: built-in defaults → a TOML file → `TESSERA_*` environment variables.
//!
//! Every key is documented, with its default, in `config/tessera.example.toml`. Loading either
//! yields a validated [`Config`] or a [`ConfigError`] that names the key and the problem in one
//! line, so the CLI can print it and exit with status 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::one_line;

/// The file read when no `--config` is given; a missing default file is not an error.
pub const DEFAULT_CONFIG_FILE: &str = "config/tessera.toml";

/// Prefix of the environment variables that override the file (`TESSERA_KEYS__ROTATE_AFTER`).
const ENV_PREFIX: &str = "TESSERA_";

/// Top-level keys that environment variables may set. Other `TESSERA_*` variables (such as
/// `TESSERA_TEST_POSTGRES_URL`, read by the test suite) are not configuration and are ignored.
const TOP_LEVEL_KEYS: &[&str] = &[
    "issuer",
    "bind",
    "database_url",
    "log_format",
    "log_level",
    "database",
    "keys",
    "tokens",
    "http",
    "redis_url",
    "master_key",
    "master_key_file",
    "audit_retention",
    "accounts",
    "passwords",
    "sessions",
    "mail",
    "throttle",
    "clients",
    "upstream",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The issuer identifier: the `iss` of every token and the base of every endpoint URL.
    pub issuer: String,
    /// Address and port to listen on.
    pub bind: String,
    /// `sqlite://path` or `postgres://user@host/db`.
    pub database_url: String,
    /// `text` (human-readable) or `json`.
    pub log_format: LogFormat,
    /// A tracing `EnvFilter` directive; `RUST_LOG` overrides it when set.
    pub log_level: String,
    pub database: DatabaseConfig,
    pub keys: KeysConfig,
    pub tokens: TokensConfig,
    pub http: HttpConfig,
    /// `redis://host:port`: share throttling counters between replicas. Empty: in memory.
    pub redis_url: String,
    /// 32 bytes in base64: the AES-256-GCM key that encrypts the private signing keys in the
    /// database. Empty (and no `master_key_file`): they are stored unencrypted, with a warning
    /// at start.
    pub master_key: String,
    /// A file holding the master key (base64), instead of `master_key`.
    pub master_key_file: String,
    /// How long security events are kept in the audit log before the sweeper deletes them.
    #[serde(with = "duration")]
    pub audit_retention: Duration,
    pub accounts: AccountsConfig,
    pub passwords: PasswordsConfig,
    pub sessions: SessionsConfig,
    pub mail: MailConfig,
    pub throttle: ThrottleConfig,
    /// Clients declared in the file, created or updated at every start.
    pub clients: Vec<ClientConfig>,
    /// Upstream identity providers for social sign-in.
    pub upstream: UpstreamConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub google: GoogleConfig,
    pub github: GithubConfig,
    /// Any number of other OpenID Connect providers.
    pub oidc: Vec<OidcProviderConfig>,
}

/// Google: an OpenID Connect provider found through discovery at `issuer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoogleConfig {
    /// Empty: Google sign-in is off (no button).
    pub client_id: String,
    pub client_secret: String,
    pub issuer: String,
    pub link_by_email: crate::upstream::linking::LinkMode,
}

impl Default for GoogleConfig {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_secret: String::new(),
            issuer: "https://accounts.google.com".into(),
            link_by_email: crate::upstream::linking::LinkMode::Confirm,
        }
    }
}

/// GitHub (OAuth 2 plus its REST API); the URLs can point at GitHub Enterprise.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubConfig {
    /// Empty: GitHub sign-in is off (no button).
    pub client_id: String,
    pub client_secret: String,
    pub authorize_url: String,
    pub token_url: String,
    pub api_url: String,
    pub link_by_email: crate::upstream::linking::LinkMode,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_secret: String::new(),
            authorize_url: "https://github.com/login/oauth/authorize".into(),
            token_url: "https://github.com/login/oauth/access_token".into(),
            api_url: "https://api.github.com".into(),
            link_by_email: crate::upstream::linking::LinkMode::Confirm,
        }
    }
}

/// A generic OpenID Connect provider (`[[upstream.oidc]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcProviderConfig {
    /// Short name used in URLs and the `idp` claim, e.g. "okta".
    pub id: String,
    /// Shown on the button: "Continue with …".
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub link_by_email: crate::upstream::linking::LinkMode,
}

impl Default for OidcProviderConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            display_name: String::new(),
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            link_by_email: crate::upstream::linking::LinkMode::Confirm,
        }
    }
}

/// A client declared in the configuration file (`[[clients]]`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    pub id: String,
    pub name: String,
    /// The secret of a confidential client (stored hashed). Prefer an environment variable,
    /// e.g. `TESSERA_CLIENTS__0__SECRET`… or keep the file private.
    pub secret: String,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Default: authorization_code and refresh_token.
    pub grant_types: Vec<String>,
    /// Default: openid profile email offline_access.
    pub scopes: Vec<String>,
    /// First-party app: no consent page.
    pub skip_consent: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// Whether people may create their own accounts at /register.
    pub registration: bool,
    /// How long an email verification link stays valid.
    #[serde(with = "duration")]
    pub verification_ttl: Duration,
    /// How long a password reset link stays valid.
    #[serde(with = "duration")]
    pub reset_ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordsConfig {
    /// Shortest password accepted.
    pub min_length: usize,
    /// argon2id memory cost in KiB (OWASP minimum: 19456).
    pub memory_kib: u32,
    /// argon2id passes (OWASP minimum with 19 MiB: 2).
    pub iterations: u32,
    /// argon2id lanes.
    pub parallelism: u32,
    /// Hashes computed at once; the rest queue, so a burst of sign-ins never starves the
    /// protocol endpoints. 0 means the number of CPUs.
    pub max_concurrent: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Name of the browser session cookie.
    pub cookie_name: String,
    /// A session unused for this long ends.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// A sign-in lasts at most this long, however active.
    #[serde(with = "duration")]
    pub absolute_timeout: Duration,
    /// A session nobody is signed in to (an authorization request waiting for a sign-in, a
    /// sign-in with an upstream provider under way, a message for the next page) is kept at
    /// most this long after it was last written.
    #[serde(with = "duration")]
    pub visitor_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// The From: address of every message.
    pub from: String,
    /// With no SMTP host, messages are written here as .eml files.
    pub outbox: String,
    /// SMTP server; empty means "use the outbox".
    pub smtp_host: String,
    pub smtp_port: u16,
    /// "starttls", "tls" (implicit TLS) or "none" (only for a local relay).
    pub smtp_security: String,
    pub smtp_username: String,
    pub smtp_password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// The counting window of every limit below.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Failed sign-ins per account per window.
    pub login_failures_per_account: u32,
    /// Sign-in attempts per client IP per window.
    pub logins_per_ip: u32,
    /// Registrations per client IP per window.
    pub registrations_per_ip: u32,
    /// Password reset requests per account per window.
    pub resets_per_account: u32,
    /// Password reset and verification requests per client IP per window.
    pub resets_per_ip: u32,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            registration: true,
            verification_ttl: Duration::from_secs(24 * 3600),
            reset_ttl: Duration::from_secs(3600),
        }
    }
}

impl Default for PasswordsConfig {
    fn default() -> Self {
        Self {
            min_length: 8,
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 0,
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            cookie_name: "tessera_session".into(),
            idle_timeout: Duration::from_secs(12 * 3600),
            absolute_timeout: Duration::from_secs(7 * 86_400),
            visitor_timeout: Duration::from_secs(3600),
        }
    }
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            from: "Tessera <no-reply@localhost>".into(),
            outbox: "data/outbox".into(),
            smtp_host: String::new(),
            smtp_port: 587,
            smtp_security: "starttls".into(),
            smtp_username: String::new(),
            smtp_password: String::new(),
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(15 * 60),
            login_failures_per_account: 5,
            logins_per_ip: 50,
            registrations_per_ip: 10,
            resets_per_account: 3,
            resets_per_ip: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Connections per replica (PostgreSQL), or readers (SQLite, which also keeps one writer).
    pub max_connections: u32,
    /// How long start-up waits for the first connection before giving up.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long a request waits for a pooled connection before it is answered with 503.
    #[serde(with = "duration")]
    pub acquire_timeout: Duration,
    /// How often expired rows (sessions, links, codes, refresh tokens, revoked token ids) are
    /// deleted.
    #[serde(with = "duration")]
    pub sweep_interval: Duration,
    /// PostgreSQL: keep the clients and the revoked access-token ids in memory, kept current
    /// by `LISTEN`/`NOTIFY` (see `store::mirror`). Off: every request reads them from the
    /// database.
    pub mirror: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// RSA modulus size of newly generated keys: 2048, 3072 or 4096.
    pub rsa_bits: u32,
    /// A new signing key is generated when the newest key is this old.
    #[serde(with = "duration")]
    pub rotate_after: Duration,
    /// How long a new key is published in the JWKS before it starts signing.
    #[serde(with = "duration")]
    pub prepublish: Duration,
    /// How often each replica re-reads the key table (and runs scheduled rotation).
    #[serde(with = "duration")]
    pub refresh: Duration,
    /// How long a retired key stays published after the last token it signed has expired,
    /// to cover verifiers' clock skew.
    #[serde(with = "duration")]
    pub grace: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    #[serde(with = "duration")]
    pub id_token_ttl: Duration,
    #[serde(with = "duration")]
    pub access_token_ttl: Duration,
    /// Authorization code lifetime (at most 60 s).
    #[serde(with = "duration")]
    pub code_ttl: Duration,
    /// How long a code is remembered past its expiry, so that a late replay still revokes
    /// the tokens it issued (RFC 6749 §4.1.2).
    #[serde(with = "duration")]
    pub code_replay_window: Duration,
    /// A refresh token unused for this long expires; each rotation starts a new period.
    #[serde(with = "duration")]
    pub refresh_token_ttl: Duration,
    /// However often it is rotated, a refresh-token family ends this long after the sign-in.
    #[serde(with = "duration")]
    pub refresh_token_max_ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `Cache-Control: max-age` of the discovery document and the JWKS.
    #[serde(with = "duration")]
    pub metadata_max_age: Duration,
    /// Longest time a request may take before it is answered with 503.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Largest request head (request line and headers) read, in bytes: past it the request
    /// gets 431 without the rest being read. A URI longer than 64 KiB gets 414.
    pub header_limit: usize,
    /// How long a client may take to send a request head before the connection is closed
    /// (a slow-headers client ties up nothing for longer).
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight requests.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// How many reverse proxies stand in front of Tessera. 0: the client IP is the socket's
    /// peer. N: it is the N-th address from the right of `X-Forwarded-For` (each proxy
    /// appends the address it saw; the ones further left are the client's to forge).
    pub trusted_proxies: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            bind: "127.0.0.1:8080".into(),
            database_url: "sqlite://data/tessera.db".into(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            database: DatabaseConfig::default(),
            keys: KeysConfig::default(),
            tokens: TokensConfig::default(),
            http: HttpConfig::default(),
            redis_url: String::new(),
            master_key: String::new(),
            master_key_file: String::new(),
            audit_retention: Duration::from_secs(365 * 86_400),
            accounts: AccountsConfig::default(),
            passwords: PasswordsConfig::default(),
            sessions: SessionsConfig::default(),
            mail: MailConfig::default(),
            throttle: ThrottleConfig::default(),
            clients: Vec::new(),
            upstream: UpstreamConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: 10,
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(3),
            sweep_interval: Duration::from_secs(600),
            mirror: true,
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            rsa_bits: 2048,
            rotate_after: Duration::from_secs(30 * 86_400),
            prepublish: Duration::from_secs(86_400),
            refresh: Duration::from_secs(60),
            grace: Duration::from_secs(600),
        }
    }
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            id_token_ttl: Duration::from_secs(15 * 60),
            access_token_ttl: Duration::from_secs(15 * 60),
            code_ttl: Duration::from_secs(60),
            code_replay_window: Duration::from_secs(3_600),
            refresh_token_ttl: Duration::from_secs(30 * 86_400),
            refresh_token_max_ttl: Duration::from_secs(90 * 86_400),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            metadata_max_age: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            body_limit: 64 * 1024,
            header_limit: 80 * 1024,
            header_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            trusted_proxies: 0,
        }
    }
}

/// A configuration problem, always tied to the key (or file) it is about.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Which kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl Config {
    /// Why `keys.prepublish` is too short for several replicas, if it is: a new key must be
    /// known to every replica (they re-read keys every `keys.refresh`) and every verifier's
    /// cached JWKS (`http.metadata_max_age`) before it signs. Fine for a single server, hence a
    /// warning rather than an error. Key times are whole seconds, so under a second is none.
    pub fn prepublish_warning(&self) -> Option<String> {
        // Saturating: both are operator-set and may be absurdly long; never a panic at start.
        let needed = self.keys.refresh.saturating_add(self.http.metadata_max_age);
        let effective = Duration::from_secs(self.keys.prepublish.as_secs());
        (effective < needed).then(|| {
            format!(
                "keys.prepublish ({}) is shorter than keys.refresh + http.metadata_max_age ({}): with several replicas, or verifiers caching the JWKS, a new key can sign before they know it",
                humantime::format_duration(effective),
                humantime::format_duration(needed)
            )
        })
    }

    /// The master key that seals the private signing keys, if one is configured.
    pub fn master_key(&self) -> Result<Option<crate::crypto::sealed::MasterKey>, ConfigError> {
        use crate::crypto::sealed::MasterKey;
        match (self.master_key.is_empty(), self.master_key_file.is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Err(ConfigError::new(
                "master_key",
                "set master_key or master_key_file, not both",
            )),
            (false, true) => MasterKey::parse(&self.master_key)
                .map(Some)
                .map_err(|why| ConfigError::new("master_key", why)),
            (true, false) => {
                let text = std::fs::read_to_string(&self.master_key_file).map_err(|e| {
                    ConfigError::new(
                        "master_key_file",
                        format!("cannot read {:?}: {e}", self.master_key_file),
                    )
                })?;
                MasterKey::parse(&text)
                    .map(Some)
                    .map_err(|why| ConfigError::new("master_key_file", why))
            }
        }
    }

    /// Loads defaults, then `file` (or `config/tessera.toml` when it exists), then the process
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given as `(name, value)` pairs, so tests stay
    /// independent of the process environment.
    pub fn load_with_env<K, V>(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let figment = merge_file(Figment::from(Serialized::defaults(Config::default())), file)?;
        Self::layer_env(figment, vars)
    }

    /// As [`Config::load_with_env`], with the file's contents given as TOML text rather than
    /// a path (the configuration fuzz target parses through it).
    #[doc(hidden)]
    pub fn from_toml_str_with_env<K, V>(
        toml: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml));
        Self::layer_env(figment, vars)
    }

    /// The environment layer over `figment` (defaults and the file), then validation.
    fn layer_env<K, V>(
        mut figment: Figment,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut from_env = Vec::new();
        for (name, value) in vars {
            if let Some(key) = env_key(name.as_ref()) {
                figment = figment.merge(Serialized::global(&key, parse_env_value(value.as_ref())));
                from_env.push((key, name.as_ref().to_owned()));
            }
        }
        extract(figment, &from_env)
    }

    /// The path under which every route is served: the issuer's path without a trailing slash
    /// ("" for an issuer at the root). OIDC Discovery 1.0 §4 puts the configuration document at
    /// the issuer plus `/.well-known/openid-configuration`.
    pub fn base_path(&self) -> String {
        Url::parse(&self.issuer)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// `issuer` + `path`, for advertising an endpoint.
    pub fn endpoint_url(&self, path: &str) -> String {
        format!("{}{}", self.issuer.trim_end_matches('/'), path)
    }

    pub fn bind_addr(&self) -> SocketAddr {
        self.bind
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    pub fn database_kind(&self) -> DatabaseKind {
        database_kind(&self.database_url).unwrap_or(DatabaseKind::Sqlite)
    }

    /// Whether the issuer is https, in which case cookies are `Secure`.
    pub fn is_https(&self) -> bool {
        self.issuer.starts_with("https://")
    }

    /// The longest lifetime of any JWT Tessera signs: a retired key must stay published at
    /// least this long after it stops signing.
    pub fn max_jwt_ttl(&self) -> Duration {
        self.tokens.id_token_ttl.max(self.tokens.access_token_ttl)
    }

    fn validate(self) -> Result<Self, ConfigError> {
        let issuer = Url::parse(&self.issuer).map_err(|e| {
            ConfigError::new("issuer", format!("not a URL ({e}): {:?}", self.issuer))
        })?;
        if !matches!(issuer.scheme(), "http" | "https") {
            return Err(ConfigError::new("issuer", "must be an http or https URL"));
        }
        // OIDC Discovery 1.0 §3: the issuer has no query or fragment component.
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(ConfigError::new(
                "issuer",
                "must not have a query or fragment",
            ));
        }
        if issuer.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::new("issuer", "must name a host"));
        }
        self.bind.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new("bind", format!("not an address:port: {:?}", self.bind))
        })?;
        database_kind(&self.database_url)?;
        Url::parse(&self.database_url)
            .map_err(|e| ConfigError::new("database_url", format!("not a URL ({e})")))?;
        if self.database.max_connections == 0 {
            return Err(ConfigError::new(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if !matches!(self.keys.rsa_bits, 2048 | 3072 | 4096) {
            return Err(ConfigError::new(
                "keys.rsa_bits",
                "must be 2048, 3072 or 4096",
            ));
        }
        if self.keys.rotate_after < Duration::from_secs(60) {
            return Err(ConfigError::new(
                "keys.rotate_after",
                "must be at least 1 minute",
            ));
        }
        if self.keys.refresh.is_zero() {
            return Err(ConfigError::new(
                "keys.refresh",
                "must be greater than zero",
            ));
        }
        for (key, ttl) in [
            ("tokens.id_token_ttl", self.tokens.id_token_ttl),
            ("tokens.access_token_ttl", self.tokens.access_token_ttl),
        ] {
            if ttl.is_zero() || ttl > Duration::from_secs(86_400) {
                return Err(ConfigError::new(
                    key,
                    "must be between 1 second and 24 hours",
                ));
            }
        }
        if self.tokens.code_ttl.is_zero() || self.tokens.code_ttl > Duration::from_secs(600) {
            return Err(ConfigError::new(
                "tokens.code_ttl",
                "must be between 1 second and 10 minutes (60 s or less is advised)",
            ));
        }
        if self.tokens.refresh_token_ttl.is_zero()
            || self.tokens.refresh_token_max_ttl < self.tokens.refresh_token_ttl
        {
            return Err(ConfigError::new(
                "tokens.refresh_token_max_ttl",
                "must be at least tokens.refresh_token_ttl, which must be greater than zero",
            ));
        }
        for (i, c) in self.clients.iter().enumerate() {
            crate::oidc::clients::validate_declared(c)
                .map_err(|problem| ConfigError::new(format!("clients[{i}]"), problem))?;
        }
        let u = &self.upstream;
        let urls = [
            ("upstream.google.issuer", u.google.issuer.as_str()),
            (
                "upstream.github.authorize_url",
                u.github.authorize_url.as_str(),
            ),
            ("upstream.github.token_url", u.github.token_url.as_str()),
            ("upstream.github.api_url", u.github.api_url.as_str()),
        ];
        for (key, value) in urls {
            Url::parse(value).map_err(|e| ConfigError::new(key, format!("not a URL ({e})")))?;
        }
        let mut ids = vec!["google".to_owned(), "github".to_owned()];
        for (i, p) in u.oidc.iter().enumerate() {
            let key = format!("upstream.oidc[{i}]");
            if p.id.is_empty()
                || !p
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(ConfigError::new(
                    key,
                    "id must be lowercase letters, digits or '-'",
                ));
            }
            if ids.contains(&p.id) {
                return Err(ConfigError::new(
                    key,
                    format!("the id {:?} is used twice", p.id),
                ));
            }
            ids.push(p.id.clone());
            Url::parse(&p.issuer).map_err(|e| {
                ConfigError::new(format!("{key}.issuer"), format!("not a URL ({e})"))
            })?;
        }
        if self.http.body_limit < 1024 {
            return Err(ConfigError::new(
                "http.body_limit",
                "must be at least 1024 bytes",
            ));
        }
        if self.database.sweep_interval.is_zero() {
            return Err(ConfigError::new(
                "database.sweep_interval",
                "must be greater than zero",
            ));
        }
        if self.audit_retention.is_zero() {
            return Err(ConfigError::new(
                "audit_retention",
                "must be greater than zero",
            ));
        }
        if self.http.header_limit < 8192 {
            return Err(ConfigError::new(
                "http.header_limit",
                "must be at least 8192 bytes",
            ));
        }
        if self.http.header_timeout.is_zero() {
            return Err(ConfigError::new(
                "http.header_timeout",
                "must be greater than zero",
            ));
        }
        if self.http.request_timeout.is_zero() {
            return Err(ConfigError::new(
                "http.request_timeout",
                "must be greater than zero",
            ));
        }
        if !self.redis_url.is_empty() {
            let url = Url::parse(&self.redis_url)
                .map_err(|e| ConfigError::new("redis_url", format!("not a URL ({e})")))?;
            if !matches!(url.scheme(), "redis" | "rediss") {
                return Err(ConfigError::new(
                    "redis_url",
                    "must be a redis:// or rediss:// URL",
                ));
            }
        }
        self.master_key()?;
        let p = &self.passwords;
        if !(8..=128).contains(&p.min_length) {
            return Err(ConfigError::new(
                "passwords.min_length",
                "must be between 8 and 128",
            ));
        }
        argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None).map_err(|e| {
            ConfigError::new("passwords", format!("invalid argon2 parameters: {e}"))
        })?;
        if self.sessions.cookie_name.is_empty()
            || !self
                .sessions
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError::new(
                "sessions.cookie_name",
                "must be letters, digits, '_' or '-'",
            ));
        }
        if self.sessions.idle_timeout.is_zero()
            || self.sessions.absolute_timeout.is_zero()
            || self.sessions.visitor_timeout.is_zero()
        {
            return Err(ConfigError::new(
                "sessions",
                "timeouts must be greater than zero",
            ));
        }
        self.mail
            .from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| {
                ConfigError::new(
                    "mail.from",
                    format!("not an email address ({e}): {:?}", self.mail.from),
                )
            })?;
        if !matches!(
            self.mail.smtp_security.as_str(),
            "starttls" | "tls" | "none"
        ) {
            return Err(ConfigError::new(
                "mail.smtp_security",
                "must be starttls, tls or none",
            ));
        }
        if self.throttle.window.is_zero() {
            return Err(ConfigError::new(
                "throttle.window",
                "must be greater than zero",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| ConfigError::new("log_level", e.to_string()))?;
        Ok(self)
    }
}

fn merge_file(figment: Figment, file: Option<&Path>) -> Result<Figment, ConfigError> {
    match file {
        Some(path) => {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("cannot read {}: no such file", path.display()),
                ));
            }
            Ok(figment.merge(Toml::file_exact(path)))
        }
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            Ok(if default.is_file() {
                figment.merge(Toml::file_exact(default))
            } else {
                figment
            })
        }
    }
}

fn extract(figment: Figment, from_env: &[(String, String)]) -> Result<Config, ConfigError> {
    let config: Config = figment.extract().map_err(|error| {
        // figment reports every problem; the first one is the one to fix.
        let error = error.into_iter().next().map(Box::new);
        match error {
            Some(e) => {
                let key = if e.path.is_empty() {
                    "config".to_owned()
                } else {
                    e.path.join(".")
                };
                let env_var = from_env
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v);
                let source = match (env_var, e.metadata.as_ref().and_then(|m| m.source.as_ref())) {
                    (Some(var), _) => format!(" (from {})", var.escape_debug()),
                    (None, Some(src)) => format!(" (from {src})"),
                    (None, None) => String::new(),
                };
                // The path comes from the file's own keys: control characters in a quoted
                // key are escaped, so the message stays on one line, and an empty quoted key
                // (`"" = 1`) is shown as `""`, so the message still names it.
                let shown = e
                    .path
                    .iter()
                    .map(|part| {
                        if part.is_empty() {
                            "\"\"".to_owned()
                        } else {
                            part.escape_debug().to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                ConfigError::new(
                    if shown.is_empty() { key } else { shown },
                    format!("{}{source}", one_line(&e.kind.to_string())),
                )
            }
            None => ConfigError::new("config", "could not be read"),
        }
    })?;
    config.validate()
}

/// Maps `TESSERA_KEYS__ROTATE_AFTER` to `keys.rotate_after`, or `None` for variables that are
/// not configuration.
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let key = rest.to_ascii_lowercase().replace("__", ".");
    let top = key.split('.').next()?;
    TOP_LEVEL_KEYS.contains(&top).then_some(key)
}

/// Environment values are strings; like figment's own `Env` provider, numbers and booleans are
/// passed on as such so `TESSERA_HTTP__BODY_LIMIT=1000` works.
fn parse_env_value(value: &str) -> figment::value::Value {
    match value.parse::<figment::value::Value>() {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

fn database_kind(url: &str) -> Result<DatabaseKind, ConfigError> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    match scheme {
        "sqlite" => Ok(DatabaseKind::Sqlite),
        "postgres" | "postgresql" => Ok(DatabaseKind::Postgres),
        "" => Err(ConfigError::new(
            "database_url",
            "missing scheme (use sqlite:// or postgres://)",
        )),
        other => Err(ConfigError::new(
            "database_url",
            format!("unknown database scheme {other:?} (use sqlite:// or postgres://)"),
        )),
    }
}

/// Durations as humantime strings (`"30d"`, `"90s"`, `"250ms"`) or whole seconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            de::Error::custom("expected a duration such as \"30d\", \"12h\", \"90s\" or \"250ms\"")
        })? {
            Raw::Seconds(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => parse(&t).map_err(de::Error::custom),
        }
    }

    /// Parses `"0"`, `"30d"`, `"1h 30m"`, `"250ms"`.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if let Ok(secs) = text.parse::<u64>() {
            return Ok(Duration::from_secs(secs));
        }
        humantime::parse_duration(text).map_err(|_| {
            format!(
                "invalid duration {text:?} (expected e.g. \"30d\", \"12h\", \"90s\", \"250ms\")"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load_with_env(None, vars.iter().copied())
    }

    #[test]
    fn defaults_match_the_interface_contract() {
        let c = load(&[]).unwrap();
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert_eq!(c.bind, "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite://data/tessera.db");
        assert_eq!(c.keys.rotate_after, Duration::from_secs(30 * 86_400));
        assert_eq!(c.keys.prepublish, Duration::from_secs(86_400));
        assert_eq!(c.keys.refresh, Duration::from_secs(60));
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let c = load(&[
            ("TESSERA_ISSUER", "https://id.example.com"),
            ("TESSERA_KEYS__ROTATE_AFTER", "7d"),
            ("TESSERA_KEYS__PREPUBLISH", "0"),
            ("TESSERA_HTTP__BODY_LIMIT", "2048"),
            ("TESSERA_TEST_POSTGRES_URL", "postgres://ignored"),
        ])
        .unwrap();
        assert_eq!(c.issuer, "https://id.example.com");
        assert_eq!(c.keys.rotate_after, Duration::from_secs(7 * 86_400));
        assert_eq!(c.keys.prepublish, Duration::ZERO);
        assert_eq!(c.http.body_limit, 2048);
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("TESSERA_ISSUER", "not a url", "issuer"),
            ("TESSERA_ISSUER", "https://id.example.com/?x=1", "issuer"),
            (
                "TESSERA_DATABASE_URL",
                "mysql://localhost/x",
                "database_url",
            ),
            ("TESSERA_KEYS__ROTATE_AFTER", "3x", "keys.rotate_after"),
            ("TESSERA_KEYS__RSA_BITS", "1024", "keys.rsa_bits"),
            ("TESSERA_BIND", "localhost", "bind"),
            ("TESSERA_LOG_FORMAT", "xml", "log_format"),
            ("TESSERA_MASTER_KEY", "c2hvcnQ=", "master_key"),
            (
                "TESSERA_MASTER_KEY_FILE",
                "/nonexistent/key",
                "master_key_file",
            ),
        ];
        for (var, value, key) in cases {
            let err = load(&[(var, value)]).unwrap_err();
            assert_eq!(err.key, *key, "{var}={value}: {err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn the_master_key_comes_from_the_environment_or_a_file_and_never_prints() {
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let c = load(&[("TESSERA_MASTER_KEY", key)]).unwrap();
        let master = c.master_key().unwrap().unwrap();
        assert!(!format!("{master:?}").contains(key));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("master.key");
        std::fs::write(&file, format!("{key}\n")).unwrap();
        let c = load(&[("TESSERA_MASTER_KEY_FILE", file.to_str().unwrap())]).unwrap();
        assert!(c.master_key().unwrap().is_some());
        assert!(load(&[]).unwrap().master_key().unwrap().is_none());
        let both = load(&[
            ("TESSERA_MASTER_KEY", key),
            ("TESSERA_MASTER_KEY_FILE", file.to_str().unwrap()),
        ]);
        assert_eq!(both.unwrap_err().key, "master_key");
    }

    #[test]
    fn a_prepublish_too_short_for_replicas_is_warned_about() {
        assert_eq!(load(&[]).unwrap().prepublish_warning(), None);
        let short = load(&[("TESSERA_KEYS__PREPUBLISH", "1m")]).unwrap();
        assert!(
            short
                .prepublish_warning()
                .unwrap()
                .contains("keys.prepublish (1m)")
        );
        // Key times are whole seconds: 900 ms is no prepublish at all.
        let sub = load(&[
            ("TESSERA_KEYS__PREPUBLISH", "900ms"),
            ("TESSERA_KEYS__REFRESH", "100ms"),
            ("TESSERA_HTTP__METADATA_MAX_AGE", "0s"),
        ])
        .unwrap();
        assert!(sub.prepublish_warning().unwrap().contains("(0s)"));
    }

    #[test]
    fn file_layer_sits_between_defaults_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "issuer = \"https://file.example\"\n[keys]\nrefresh = \"5s\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(Some(&path), [("TESSERA_ISSUER", "https://env.example")])
            .unwrap();
        assert_eq!(c.issuer, "https://env.example");
        assert_eq!(c.keys.refresh, Duration::from_secs(5));

        std::fs::write(&path, "[keys]\nrotate_afterr = \"5d\"\n").unwrap();
        let err = Config::load_with_env(Some(&path), [("", ""); 0]).unwrap_err();
        assert!(err.to_string().contains("rotate_afterr"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_named_even_when_empty_or_odd() {
        let cases: &[(&str, &str)] = &[
            ("\"\" = \"x\"", "\"\""),
            ("\"iss\\r\" = 1", "iss\\r"),
            ("[http]\nbody_limt = 1", "http.body_limt"),
        ];
        for (toml, key) in cases {
            let err = Config::from_toml_str_with_env(toml, Vec::<(&str, &str)>::new()).unwrap_err();
            assert_eq!(err.key, *key, "{toml:?}: {err}");
            assert!(!err.to_string().contains(['\n', '\r']), "one line: {err}");
        }
    }

    #[test]
    fn every_top_level_key_is_settable_from_the_environment() {
        let json = serde_json::to_value(Config::default()).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), TOP_LEVEL_KEYS.len());
        for k in keys {
            assert!(
                TOP_LEVEL_KEYS.contains(&k.as_str()),
                "{k} missing from TOP_LEVEL_KEYS"
            );
        }
    }
}
