//! Tessera, an OAuth 2.0 / OpenID Connect identity provider.
//!
//! [`Application::build`] turns a [`Config`] into a bound, ready-to-run server; the binary
//! and the integration tests both start Tessera through it.

pub mod accounts;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod housekeeping;
pub mod mail;
pub mod oidc;
pub mod ops;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod upstream;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use crypto::keys::{KeyError, KeyPolicy, KeyRing};
use oidc::discovery::Discovery;
use state::AppState;
use store::{OpenError, Store};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("cannot load signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("cannot set up password hashing: {0}")]
    Passwords(#[from] crypto::password::PasswordError),
    #[error("cannot set up email: {0}")]
    Mail(#[from] mail::MailError),
    #[error("cannot register the configured clients: {0}")]
    Clients(#[from] oidc::clients::RegisterError),
    #[error("cannot set up upstream providers: {0}")]
    Upstream(String),
    #[error("invalid redis_url: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A built server: database open and migrated, keys loaded, listener bound.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Opens the store, applies migrations, loads (or creates) the signing keys and binds
    /// `config.bind`.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let addr = config.bind_addr();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        Self::with_listener(config, listener).await
    }

    /// As [`Application::build`], on a listener the caller bound (tests bind port 0 first so
    /// they know the issuer URL).
    pub async fn with_listener(config: Config, listener: TcpListener) -> Result<Self, StartError> {
        // The recorder first: the store registers its counters when it opens.
        let metrics = telemetry::prometheus();
        let store = Store::open(&config).await?;
        let applied = store.migrate().await?;
        if applied > 0 {
            tracing::info!(applied, "database migrations applied");
        }
        let keys = Arc::new(KeyRing::load(store.clone(), KeyPolicy::from_config(&config)?).await?);
        if let Some(why) = config.prepublish_warning() {
            tracing::warn!("{why}");
        }
        let declared = oidc::clients::sync_declared(&store, &config).await?;
        if declared > 0 {
            tracing::info!(
                clients = declared,
                "clients from the configuration file are registered"
            );
        }
        let state = AppState::new(state::Shared {
            discovery: Arc::new(Discovery::build(&config)),
            passwords: crypto::password::Passwords::new(&config.passwords)?,
            mailer: mail::Mailer::new(&config.mail)?,
            throttle: throttle::Throttle::new(&config.throttle, &config.redis_url)?,
            upstream: Arc::new(
                upstream::providers::Providers::from_config(&config)
                    .map_err(|e| StartError::Upstream(e.to_string()))?,
            ),
            config: Arc::new(config),
            store,
            keys,
            metrics,
        });
        let router = router(state.clone());
        Ok(Self {
            listener,
            router,
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting connections and lets in-flight
    /// requests finish (for at most `http.shutdown_timeout`).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            router,
            state,
        } = self;
        let stop = CancellationToken::new();
        let refresher = state
            .keys
            .clone()
            .spawn_refresh(state.config.keys.refresh, stop.clone());
        let mirror = state.store.spawn_mirror(stop.clone());
        let sweeper = housekeeping::spawn(
            state.store.clone(),
            state.config.database.sweep_interval,
            housekeeping::Retention::of(&state.config),
            stop.clone(),
        );

        let signal = stop.clone();
        let limits = web::server::Limits {
            header_bytes: state.config.http.header_limit,
            header_timeout: state.config.http.header_timeout,
        };
        let documents = Arc::new(oidc::metadata::Documents::new(&state));
        let server = web::server::serve(listener, router, documents, limits, async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            signal.cancel();
        });
        let grace = state.config.http.shutdown_timeout;
        let deadline = async {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        let result = tokio::select! {
            () = server => Ok(()),
            () = deadline => {
                tracing::warn!("shutdown timeout reached; closing remaining connections");
                Ok(())
            }
        };
        stop.cancel();
        let _ = refresher.await;
        let _ = sweeper.await;
        if let Some(mirror) = mirror {
            let _ = mirror.await;
        }
        state.store.close().await;
        result
    }
}

/// The whole HTTP surface: every module's router, the fallback, the middleware stack, and the
/// state, nested under the issuer's path when it has one.
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let routes = Router::new()
        .merge(oidc::router())
        .merge(ops::router())
        .merge(accounts::router(&state))
        .fallback(error::not_found);
    // Discovery and the JWKS are answered in front of all this (`oidc::metadata`).
    let routes =
        web::middleware::apply(routes, config.http.request_timeout, config.http.body_limit);
    let base = config.base_path();
    let routes = if base.is_empty() {
        routes
    } else {
        Router::new().nest(&base, routes)
    };
    routes.with_state(state)
}

/// Completes on Ctrl-C or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled: the
/// accept loop polls its shutdown future only between connections, so a lazily installed
/// handler left a window in which the server already answered and a SIGTERM still killed the
/// process outright (exit by signal, no graceful drain), which the SIGTERM test hit under load.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => drop(s.recv().await),
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(terminate) => {},
                () = wait(interrupt) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
