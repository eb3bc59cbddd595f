//! The web origin of `icaptap check`: a hyper HTTP/1.1 server on loopback
//! serving the test files the vendor's proxy fetches (and sends to the
//! sensor by RESPMOD). The file is named by the URL's last segment:
//! `eicar.com` is the EICAR test file, `file-N.bin` is N bytes of numbered
//! lines (the same bytes every time, so the check knows what intact means).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::toolkit::sample::{large_body, EICAR};

/// The largest test file the origin makes, so a URL cannot make it
/// allocate without bound.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// The test file a URL path names, if any.
pub fn file_for(path: &str) -> Option<Bytes> {
    let name = path.rsplit('/').next()?;
    if name == "eicar.com" {
        return Some(Bytes::from_static(EICAR));
    }
    let size: u64 = name
        .strip_prefix("file-")?
        .strip_suffix(".bin")?
        .parse()
        .ok()?;
    (size <= MAX_FILE_BYTES).then(|| large_body(size as usize))
}

/// The URL path of a clean file of `size` bytes in `dir`.
pub fn clean_path(dir: &str, size: u64) -> String {
    format!("{dir}file-{size}.bin")
}

/// A running origin; stopped by [`Origin::stop`] or when dropped.
#[derive(Debug)]
pub struct Origin {
    /// The address it serves on.
    pub addr: SocketAddr,
    token: CancellationToken,
}

impl Origin {
    /// Starts serving on `listen` (port 0 picks a free port).
    pub async fn start(listen: SocketAddr) -> std::io::Result<Origin> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let token = CancellationToken::new();
        let stop = token.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "check origin: accept failed");
                            continue;
                        }
                    },
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let conn = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(serve));
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        // A vendor proxy closing mid-body is not the
                        // origin's problem: the check judges what the
                        // user received.
                        _ = conn => {}
                    }
                });
            }
        });
        Ok(Origin { addr, token })
    }

    /// The absolute URL of `path` on this origin.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting and closes open connections.
    pub fn stop(&self) {
        self.token.cancel();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn serve(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match file_for(req.uri().path()) {
        Some(body) => (StatusCode::OK, body),
        None => (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"not a test file\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    // A caching proxy must fetch (and scan) every test download anew.
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_the_last_segment() {
        assert_eq!(file_for("/icaptap-check/2-x/eicar.com").unwrap(), EICAR);
        assert_eq!(file_for("/a/file-1000.bin").unwrap().len(), 1000);
        assert_eq!(file_for("/a/file-1000.bin"), file_for("/b/file-1000.bin"));
        assert!(file_for("/a/other").is_none());
        assert!(file_for(&format!("/a/file-{}.bin", MAX_FILE_BYTES + 1)).is_none());
    }
}
