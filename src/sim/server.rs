//! The HTTP edge: the accept loop and the request body, each bounded so that
//! a hostile or broken client costs a bounded amount of memory and time.
//!
//! - Connections are served by hyper's HTTP/1 server with a timer, so
//!   `header_read_timeout` applies: a connection that does not finish a
//!   request's headers in time (a half-sent request line, or idle keep-alive
//!   for that long) is closed. axum's own `serve` sets no timer, hence this
//!   loop. Each connection is its own task, so connections that hold nothing
//!   but a socket do not stop others from being served; header size is
//!   hyper's bound (its read buffer, about 400 KiB, then 431).
//! - Accept errors (out of file descriptors, say) pause the loop briefly
//!   instead of ending it.
//! - Bodies above the cap are answered 413 after reading (and discarding) at
//!   most [`DRAIN_FACTOR`] times the cap, so the client sees the status
//!   rather than a reset; larger declared bodies are refused at once.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use bytes::BytesMut;
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::parse::ApiError;

/// A body over the cap is read and dropped up to this many times the cap
/// before the 413 (beyond, or when declared beyond, the connection is closed
/// after the 413 without reading on).
pub const DRAIN_FACTOR: usize = 4;

/// Pause after a failed accept (e.g. EMFILE), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until `stop` is cancelled; each is served in a task of
/// `tracker` and shut down gracefully (the response in progress finishes) on `stop`.
pub async fn accept_loop(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    loop {
        let tcp = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Nagle would hold back small token writes until the previous one is acknowledged.
        let _ = tcp.set_nodelay(true);
        let http = http.clone();
        let service = TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        tracker.spawn(async move {
            let conn = http.serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::trace!("connection ended: {e}");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// Reads a request body of at most `max` bytes.
pub async fn read_body(mut body: Body, max: usize) -> Result<Bytes, ApiError> {
    let drain = max.saturating_mul(DRAIN_FACTOR) as u64;
    let lower = body.size_hint().lower();
    if lower > drain {
        return Err(too_large(max));
    }
    let mut buf = BytesMut::with_capacity(lower.min(max as u64) as usize);
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad(None, format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len() as u64);
        if seen <= max as u64 {
            buf.extend_from_slice(&data);
        } else {
            // over the cap: keep nothing, read on only to answer cleanly
            buf = BytesMut::new();
            if seen > drain {
                break;
            }
        }
    }
    if seen > max as u64 {
        return Err(too_large(max));
    }
    Ok(buf.freeze())
}

fn too_large(max: usize) -> ApiError {
    ApiError {
        status: 413,
        message: format!("Request body too large: the limit is {max} bytes."),
        ..ApiError::bad(None, String::new())
    }
}
