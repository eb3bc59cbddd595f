//! The user's side of `icaptap check`: one HTTP/1.1 GET through the
//! vendor's HTTP proxy (hyper client, absolute-form request target, one
//! connection per download), and what came back. A proxy that cannot be
//! reached (refused, no answer to the connection) is told apart from one
//! that answered badly: the first means the check could not run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What the user got from one download.
#[derive(Clone, Debug)]
pub struct Download {
    /// The URL asked for.
    pub url: String,
    /// When it started.
    pub started: Instant,
    /// How long until the whole answer (or the failure).
    pub elapsed: Duration,
    /// The HTTP status and body, or why there was none.
    pub result: Result<(u16, Bytes), String>,
    /// The proxy's own error name, when it sent one (Squid's
    /// `X-Squid-Error`, e.g. `ERR_ICAP_FAILURE 0`).
    pub proxy_error: Option<String>,
    /// Why no connection to the vendor's proxy could be made (refused,
    /// timed out, unreachable network), when that is why there was no
    /// answer: the download never reached the vendor, so it says nothing
    /// about the vendor's behaviour.
    pub unreachable: Option<String>,
}

/// Longest wait for the vendor's proxy to accept a connection (a proxy on
/// the same network answers in milliseconds; the download's own timeout
/// covers the rest).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Download {
    /// Whether the user got `want` byte for byte with status 200.
    pub fn got(&self, want: &[u8]) -> bool {
        matches!(&self.result, Ok((200, body)) if body[..] == *want)
    }

    /// What the user saw, in a few words.
    pub fn seen(&self) -> String {
        match &self.result {
            Ok((status, body)) => match &self.proxy_error {
                Some(e) => format!("HTTP {status} {e}, {} bytes", body.len()),
                None => format!("HTTP {status}, {} bytes", body.len()),
            },
            Err(e) => format!("no HTTP answer ({e})"),
        }
    }
}

/// GETs `url` through the HTTP proxy at `proxy` within `timeout`.
pub async fn fetch(proxy: SocketAddr, url: &str, timeout: Duration) -> Download {
    let started = Instant::now();
    let download = |result, proxy_error, unreachable| Download {
        url: url.to_owned(),
        started,
        elapsed: started.elapsed(),
        result,
        proxy_error,
        unreachable,
    };
    let stream = match connect(proxy, timeout.min(CONNECT_TIMEOUT)).await {
        Ok(stream) => stream,
        Err(why) => return download(Err(why.clone()), None, Some(why)),
    };
    let left = timeout.saturating_sub(started.elapsed());
    let result = match tokio::time::timeout(left, get(stream, url)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no complete answer within {timeout:?}")),
    };
    match result {
        Ok((status, error, body)) => download(Ok((status, body)), error, None),
        Err(e) => download(Err(e), None, None),
    }
}

/// A connection to the vendor's proxy, or why there is none.
async fn connect(proxy: SocketAddr, limit: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(limit, TcpStream::connect(proxy)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!(
            "cannot connect to the vendor proxy at {proxy}: {e}"
        )),
        Err(_) => Err(format!(
            "the vendor proxy at {proxy} did not accept a connection within {limit:?}"
        )),
    }
}

async fn get(stream: TcpStream, url: &str) -> Result<(u16, Option<String>, Bytes), String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with the vendor proxy failed: {e}"))?;
    tokio::spawn(conn);
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.split('/').next().unwrap_or(rest));
    // An absolute URI makes hyper write the absolute form a proxy expects.
    let request = Request::get(url)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CACHE_CONTROL, "no-cache")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build a request for {url}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the vendor proxy sent no response: {e}"))?;
    let status = response.status().as_u16();
    let error = response
        .headers()
        .get("x-squid-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("HTTP {status}, body cut short: {e}"))?
        .to_bytes();
    Ok((status, error, body))
}
