//! The HTTP/1.1 server loop: hyper driven directly rather than through `axum::serve`, for the
//! limits `axum::serve` does not expose.
//!
//! - A request head larger than `http.header_limit` gets 431 as soon as the buffer is full:
//!   hyper stops reading, so a client cannot make Tessera buffer megabytes of headers. A URI
//!   longer than 64 KiB gets 414.
//! - A client that does not finish its request head within `http.header_timeout` is
//!   disconnected (slow-headers attacks hold a connection, not a task, for long).
//! - `TCP_NODELAY` is set: small responses are not held back by Nagle's algorithm.
//! - A [`Shortcut`] answers the few requests that need nothing but memory (the discovery and
//!   JWKS documents) before the router and its middleware see them.
//!
//! Graceful shutdown works as `axum::serve`'s: stop accepting, let every connection finish
//! the request it is on, then close it.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request};
use axum::response::Response;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tower::util::Oneshot;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_bytes: usize,
    pub header_timeout: Duration,
}

/// Requests answered from memory before the router: `answer` returns the whole response,
/// or `None` to pass the request on. It sees the request line and headers only, never the
/// body, and must not block.
pub trait Shortcut: Send + Sync + 'static {
    fn answer(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response>;
}

/// Serves `router` on `listener` (with `shortcut` in front of it) until `shutdown` completes,
/// then waits for open connections to finish their current request. (The caller bounds that
/// wait.)
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shortcut: Arc<dyn Shortcut>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // `max_header_size` is the exact limit on a complete head; `max_buf_size` stops the
        // reading of an incomplete one (hyper may read up to one buffer growth past it).
        .max_header_size(limits.header_bytes)
        .max_buf_size(limits.header_bytes)
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = Front {
            router: router.clone(),
            shortcut: shortcut.clone(),
            remote,
        };
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One connection's service: the shortcut, then the router (with the peer's address as
/// `ConnectInfo`, as `axum::serve` would insert it).
struct Front {
    router: Router,
    shortcut: Arc<dyn Shortcut>,
    remote: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<Ready<Result<Response, Infallible>>, Oneshot<Router, Request<axum::body::Body>>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        if let Some(response) =
            self.shortcut
                .answer(request.method(), request.uri().path(), request.headers())
        {
            return Either::Left(ready(Ok(response)));
        }
        request
            .extensions_mut()
            .insert(ConnectInfo::<SocketAddr>(self.remote));
        Either::Right(
            self.router
                .clone()
                .oneshot(request.map(axum::body::Body::new)),
        )
    }
}
