//! The state every handler can draw on; handlers extract only the parts they need.

use std::sync::Arc;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::crypto::keys::KeyRing;
use crate::oidc::discovery::Discovery;
use crate::store::Store;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub keys: Arc<KeyRing>,
    pub discovery: Arc<Discovery>,
    pub metrics: PrometheusHandle,
}
