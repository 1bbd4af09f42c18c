//! Every endpoint path, in one place: the router and the discovery document both read these,
//! so what is served and what is advertised cannot drift apart. Paths are relative to the
//! issuer's path.

/// OpenID Connect Discovery 1.0 §4.
pub const DISCOVERY: &str = "/.well-known/openid-configuration";
/// The JWK Set (RFC 7517 §5), advertised as `jwks_uri`.
pub const JWKS: &str = "/.well-known/jwks.json";

/// RFC 6749 §3.1: the authorization endpoint (GET and POST).
pub const AUTHORIZE: &str = "/authorize";
/// Where an authorization request resumes after sign-in (internal).
pub const AUTHORIZE_CONTINUE: &str = "/authorize/continue";
/// Where the consent page posts its decision (internal).
pub const AUTHORIZE_CONSENT: &str = "/authorize/consent";
/// RFC 6749 §3.2: the token endpoint.
pub const TOKEN: &str = "/token";
/// OIDC Core §5.3: the userinfo endpoint (GET and POST).
pub const USERINFO: &str = "/userinfo";
/// RFC 7009: token revocation.
pub const REVOKE: &str = "/revoke";
/// RFC 7662: token introspection.
pub const INTROSPECT: &str = "/introspect";
/// OIDC RP-Initiated Logout 1.0: the end-session endpoint (GET and POST).
pub const END_SESSION: &str = "/end-session";
/// Where the logout confirmation page posts (internal).
pub const END_SESSION_CONFIRM: &str = "/end-session/confirm";

/// Liveness: the process answers.
pub const HEALTHZ: &str = "/healthz";
/// Readiness: the database answers.
pub const READYZ: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";
