//! The HTTP endpoint of `icaptap proxy --metrics ADDR` (hyper 1, HTTP/1.1),
//! loopback by default: `/metrics` (Prometheus text), `/healthz` (`200 ok`
//! while forwarding, `503 stopping` once shutdown began) and `/status`
//! (JSON). The bodies come from [`super::metrics`]; a scrape reads shared
//! counters and never touches the forwarding path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics::{render_metrics, render_status, LiveSources};

/// Pause after a failed accept (out of descriptors, say): retrying at once
/// would spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Binding the address failed.
    #[error("cannot serve metrics on {addr}: {source}; choose another --metrics address (default 127.0.0.1:9344) or stop the program using it")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Answers one request.
pub fn route(src: &LiveSources, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD\n",
        );
    }
    match path {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            render_metrics(src),
        ),
        "/healthz" if src.stopping.is_cancelled() => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "stopping\n",
        ),
        "/healthz" => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        "/status" => {
            let body = serde_json::to_vec_pretty(&render_status(src)).unwrap_or_default();
            respond(StatusCode::OK, "application/json", body)
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "icaptap serves /metrics, /healthz and /status\n",
        ),
    }
}

/// Binds the metrics address; done at start-up so a taken port is
/// reported before anything forwards.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves the endpoint until `until` is cancelled. Each connection is its
/// own task; a slow scraper holds nobody else up.
pub async fn serve(listener: TcpListener, src: Arc<LiveSources>, until: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = until.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("metrics endpoint: accepting a scraper failed: {e}");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let src = src.clone();
        let until = until.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = route(&src, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = until.cancelled() => {}
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!("metrics endpoint: a scrape failed: {e}");
                    }
                }
            }
        });
    }
}
