//! Every endpoint path, in one place: the router and the discovery document both read these,
//! so what is served and what is advertised cannot drift apart. Paths are relative to the
//! issuer's path.

/// OpenID Connect Discovery 1.0 §4.
pub const DISCOVERY: &str = "/.well-known/openid-configuration";
/// The JWK Set (RFC 7517 §5), advertised as `jwks_uri`.
pub const JWKS: &str = "/.well-known/jwks.json";

/// Liveness: the process answers.
pub const HEALTHZ: &str = "/healthz";
/// Readiness: the database answers.
pub const READYZ: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";
