//! Operational endpoints: liveness, readiness and Prometheus metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::oidc::paths;
use crate::state::AppState;
use crate::store::Store;

/// How long readiness waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::HEALTHZ, get(healthz_get))
        .route(paths::READYZ, get(readyz_get))
        .route(paths::METRICS, get(metrics_get))
}

/// The process is alive and serving HTTP.
async fn healthz_get() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database answers; 503 otherwise, so a load balancer sends traffic elsewhere
/// until it comes back (the pool reconnects by itself).
async fn readyz_get(State(store): State<Store>) -> Response {
    if store.ping(READY_TIMEOUT).await {
        Json(json!({ "status": "ok", "database": "ok" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(json!({ "status": "unavailable", "database": "unreachable" })),
        )
            .into_response()
    }
}

async fn metrics_get(State(handle): State<PrometheusHandle>) -> Response {
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
