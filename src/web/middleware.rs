//! All the middleware, in one stack.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::http::header::{ACCEPT, X_CONTENT_TYPE_OPTIONS};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::{self, REQUEST_ID};

/// Wraps `router` in the stack every request passes through, outermost first: request id,
/// trace span, request id echoed on the response, panic → 500, metrics, page headers on any
/// HTML that lacks them, `nosniff`, timeout → 503, body size limit.
pub fn apply<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    timeout: Duration,
    body_limit: usize,
) -> Router<S> {
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(make_span)
                    .on_request(())
                    .on_response(DefaultOnResponse::new().level(Level::INFO))
                    .on_failure(()),
            )
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(CatchPanicLayer::custom(|_panic| {
                tracing::error!("handler panicked");
                error::internal_error()
            }))
            .layer(axum::middleware::from_fn(observe))
            .layer(axum::middleware::from_fn(crate::web::pages::guard_html))
            // Outside the deadline and the body limit, so their own answers carry it too.
            .layer(SetResponseHeaderLayer::if_not_present(
                X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(axum::middleware::from_fn_with_state(timeout, deadline))
            .layer(RequestBodyLimitLayer::new(body_limit)),
    )
}

/// `http.request_timeout`: a request not answered in time (a body that stops arriving, a
/// database that stops answering) is dropped and gets a 503 with `Retry-After`: an error
/// page for a browser (its `Accept` names HTML), the OAuth `temporarily_unavailable` JSON
/// for anything else. Outside it, the page headers and the request id are still added.
async fn deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let browser = request
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?timeout, "request not answered in time");
            if browser {
                crate::web::pages::PageError::TimedOut.into_response()
            } else {
                error::unavailable()
            }
        }
    }
}

/// One span per request, keyed on the route template (never the query string, which may hold
/// codes or tokens).
fn make_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), route, request_id = id)
}

/// Records request count and latency per method, route and status, and makes the request id
/// available to error responses.
async fn observe(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let response = REQUEST_ID.scope(id, next.run(request)).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    response
}
