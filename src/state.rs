//! The state every handler can draw on; handlers extract only the parts they need.

use std::sync::Arc;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::crypto::keys::KeyRing;
use crate::crypto::password::Passwords;
use crate::mail::Mailer;
use crate::oidc::discovery::Discovery;
use crate::store::Store;
use crate::throttle::Throttle;
use crate::upstream::providers::Providers;

#[derive(Clone, FromRef)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub keys: Arc<KeyRing>,
    pub discovery: Arc<Discovery>,
    pub metrics: PrometheusHandle,
    pub passwords: Passwords,
    pub mailer: Mailer,
    pub throttle: Throttle,
    pub upstream: Arc<Providers>,
}

impl AppState {
    /// (id, display name) of every enabled upstream provider, for the sign-in buttons.
    pub fn provider_buttons(&self) -> Vec<(String, String)> {
        self.upstream
            .enabled()
            .iter()
            .map(|p| (p.id.clone(), p.display_name.clone()))
            .collect()
    }
}
