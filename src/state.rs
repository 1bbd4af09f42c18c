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

/// axum clones the state into every request, so it is one `Arc`: a clone is one atomic
/// increment, not one per part. Fields read through `Deref` (`state.store`, `state.config`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts a handler extracts on its own (`State<Store>`, `State<Arc<KeyRing>>`, …).
macro_rules! parts {
    ($($field:ident: $ty:ty),* $(,)?) => {
        $(impl FromRef<AppState> for $ty {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        })*
    };
}

parts!(
    config: Arc<Config>,
    store: Store,
    keys: Arc<KeyRing>,
    discovery: Arc<Discovery>,
    metrics: PrometheusHandle,
);

pub struct Shared {
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

impl Shared {
    /// (id, display name) of every enabled upstream provider, for the sign-in buttons.
    pub fn provider_buttons(&self) -> Vec<(String, String)> {
        self.upstream
            .enabled()
            .iter()
            .map(|p| (p.id.clone(), p.display_name.clone()))
            .collect()
    }
}
