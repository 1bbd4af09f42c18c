//! The HTTP/1.1 server loop: hyper driven directly rather than through `axum::serve`, for the
//! limits `axum::serve` does not expose.
//!
//! - A request head larger than `http.header_limit` gets 431 as soon as the buffer is full:
//!   hyper stops reading, so a client cannot make Tessera buffer megabytes of headers. A URI
//!   longer than 64 KiB gets 414.
//! - A client that does not finish its request head within `http.header_timeout` is
//!   disconnected (slow-headers attacks hold a connection, not a task, for long).
//! - `TCP_NODELAY` is set: small responses are not held back by Nagle's algorithm.
//!
//! Graceful shutdown works as `axum::serve`'s: stop accepting, let every connection finish
//! the request it is on, then close it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_bytes: usize,
    pub header_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for open connections
/// to finish their current request. (The caller bounds that wait.)
pub async fn serve(
    listener: TcpListener,
    router: Router,
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
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(remote));
                request.map(axum::body::Body::new)
            });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
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
