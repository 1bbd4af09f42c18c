//! HTTP plumbing shared by every module: cached JSON documents, middleware.

pub mod middleware;
pub mod pages;
pub mod server;
pub mod session;

use std::time::Duration;

use axum::body::Bytes;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::crypto::{b64url, sha256};

/// A JSON document built once and served many times (discovery, JWKS): the bytes, a strong
/// `ETag` derived from them, and a `Cache-Control` header.
#[derive(Debug, Clone)]
pub struct CachedJson {
    body: Bytes,
    etag: HeaderValue,
    cache_control: HeaderValue,
}

impl CachedJson {
    pub fn new(body: Vec<u8>, max_age: Duration) -> Self {
        let etag = format!("\"{}\"", &b64url(sha256(&body))[..27]);
        let cache_control = format!("public, max-age={}", max_age.as_secs());
        Self {
            body: Bytes::from(body),
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
            cache_control: HeaderValue::from_str(&cache_control)
                .unwrap_or(HeaderValue::from_static("no-cache")),
        }
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn etag(&self) -> &HeaderValue {
        &self.etag
    }

    /// 304 when the request's `If-None-Match` names this version (RFC 9110 §13.1.2), else the
    /// document. Both carry the `ETag` and `Cache-Control`.
    pub fn respond(&self, request: &HeaderMap) -> Response {
        let headers = [
            (ETAG, self.etag.clone()),
            (CACHE_CONTROL, self.cache_control.clone()),
        ];
        if self.matches(request) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        (
            headers,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            self.body.clone(),
        )
            .into_response()
    }

    fn matches(&self, request: &HeaderMap) -> bool {
        let ours = self.etag.as_bytes();
        request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|value| {
                value.split(',').map(str::trim).any(|tag| {
                    // Weak comparison, as If-None-Match requires.
                    tag == "*" || tag.trim_start_matches("W/").as_bytes() == ours
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_uses_weak_comparison_and_lists() {
        let doc = CachedJson::new(b"{}".to_vec(), Duration::from_secs(60));
        let tag = doc.etag().to_str().unwrap().to_owned();
        for value in [
            tag.clone(),
            format!("W/{tag}"),
            format!("\"x\", {tag}"),
            "*".into(),
        ] {
            let mut h = HeaderMap::new();
            h.insert(IF_NONE_MATCH, HeaderValue::from_str(&value).unwrap());
            assert_eq!(
                doc.respond(&h).status(),
                StatusCode::NOT_MODIFIED,
                "{value}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(doc.respond(&h).status(), StatusCode::OK);
    }
}
