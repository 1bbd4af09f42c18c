//! The two metadata documents, discovery (OpenID Connect Discovery 1.0 §4) and the JWK Set
//! (RFC 7517 §5), answered before the router ([`crate::web::server::Shortcut`]).
//!
//! Every relying party and resource server fetches them, and they are the hottest GETs
//! Tessera serves, yet each is a prebuilt buffer in memory. The router and the middleware
//! stack would cost more than serving them (a request id from the OS's random source, a span,
//! a timeout timer, a latency histogram with allocated labels), so they get only what they
//! need, here in one place: `ETag` / `If-None-Match` (304), `Cache-Control`, `nosniff`,
//! `Access-Control-Allow-Origin: *` (public documents that browser-based relying parties fetch
//! cross-origin), and the request counter every route has (`http_requests_total`, with
//! counters registered once rather than looked up per request). Other methods go on to the
//! router, which answers 405.

use std::sync::Arc;

use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use metrics::Counter;

use super::discovery::Discovery;
use super::paths;
use crate::crypto::keys::KeyRing;
use crate::state::AppState;
use crate::web::server::Shortcut;

pub struct Documents {
    discovery_path: String,
    jwks_path: String,
    discovery: Arc<Discovery>,
    keys: Arc<KeyRing>,
    /// `http_requests_total` by document (discovery, JWKS), method (GET, HEAD) and status
    /// (200, 304): index `document * 4 + head * 2 + not_modified`.
    counters: [Counter; 8],
}

impl Documents {
    /// The documents of `state`, at their paths under the issuer's base path.
    pub fn new(state: &AppState) -> Self {
        let base = state.config.base_path();
        let (discovery_path, jwks_path) = (
            format!("{base}{}", paths::DISCOVERY),
            format!("{base}{}", paths::JWKS),
        );
        let counters = std::array::from_fn(|i| {
            let route = if i < 4 { &discovery_path } else { &jwks_path };
            let method = if i & 2 == 0 { "GET" } else { "HEAD" };
            let status = if i & 1 == 0 { "200" } else { "304" };
            metrics::counter!(
                "http_requests_total",
                "method" => method,
                "route" => route.clone(),
                "status" => status
            )
        });
        Self {
            discovery: state.discovery.clone(),
            keys: state.keys.clone(),
            discovery_path,
            jwks_path,
            counters,
        }
    }
}

impl Shortcut for Documents {
    fn answer(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
        let head = match *method {
            Method::GET => false,
            // hyper sends no body in answer to HEAD, and keeps the Content-Length.
            Method::HEAD => true,
            _ => return None,
        };
        let (document, mut response): (usize, Response) = if path == self.jwks_path {
            (1, self.keys.jwks().respond(headers))
        } else if path == self.discovery_path {
            (0, self.discovery.0.respond(headers))
        } else {
            return None;
        };
        public(&mut response);
        let not_modified = response.status() == StatusCode::NOT_MODIFIED;
        self.counters[document * 4 + usize::from(head) * 2 + usize::from(not_modified)]
            .increment(1);
        Some(response)
    }
}

/// The headers of a public document: `nosniff` and `Access-Control-Allow-Origin: *`.
pub(super) fn public(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
}
