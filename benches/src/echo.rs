//! A minimal ICAP echo server for the side-by-side benches (RFC 3507
//! sections 4.8 and 4.10): it answers OPTIONS, and answers REQMOD/RESPMOD
//! with `200 OK` carrying the encapsulated message unchanged, so that every
//! body byte travels both ways through the proxy under test.
//!
//! It exists so that the server is not the bottleneck: it never re-chunks
//! or buffers a body. The decoder only finds where each request's
//! encapsulated section starts and where the message ends; the bytes in
//! between are copied from the read straight into the answer, read by read.
//! A request with a preview gets `204` at the end of its preview (section
//! 4.5); the benches send none.
//!
//! [`run_echo_server_tls`] serves the same echo over TLS (rustls), for the
//! harness's TLS section.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use icap_codec::{Decoder, Direction, EntityKind, Event, Method, RequestHead};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Bytes read per `read` call: large enough that a 1 MiB body costs few
/// system calls, small enough that 1,000 idle connections stay cheap
/// (the buffer is allocated on the first read).
pub const ECHO_READ_SIZE: usize = 64 * 1024;

/// The `ISTag` the echo server sends (RFC 3507 section 4.7).
const ISTAG: &str = "\"icaptap-bench-echo\"";

/// What the server owes the client for the request being received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    /// No request in progress.
    Idle,
    /// An OPTIONS request: the OPTIONS answer goes out at its end.
    Options,
    /// Echoing: stream bytes from this stream offset up to the message end.
    Echo {
        /// Stream offset of the first echoed byte.
        from: u64,
    },
    /// A preview in progress: `204` goes out at its end.
    PreviewPending,
    /// A preview, answered `204`; the rest is ignored.
    PreviewAnswered,
    /// A request that cannot be echoed: answered `400`, ignored to its end.
    Refused,
}

/// Accepts connections on `listener` and echoes on each until the process
/// ends; a failing connection ends only itself.
pub async fn serve_echo(listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            stream.set_nodelay(true)?;
            // A peer that resets is normal in a load test: nothing to report.
            echo_connection(stream).await
        });
    }
}

/// [`serve_echo`] over TLS: each connection's handshake, then the echo.
pub async fn serve_echo_tls(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            stream.set_nodelay(true)?;
            let stream = acceptor.accept(stream).await?;
            echo_connection(stream).await
        });
    }
}

/// Binds `addr` and serves on a single-threaded runtime: one core is more
/// than an echo needs, and it leaves the other to the proxy under test.
pub fn run_echo_server(addr: SocketAddr) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        serve_echo(listener).await
    })
}

/// [`run_echo_server`] over TLS, presenting `cert` (PEM chain) with `key`.
pub fn run_echo_server_tls(addr: SocketAddr, cert: &Path, key: &Path) -> io::Result<()> {
    let config = crate::tls::server_config(cert, key).map_err(io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        serve_echo_tls(listener, TlsAcceptor::from(config)).await
    })
}

/// Serves one connection: requests in, answers out, until EOF.
async fn echo_connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> io::Result<()> {
    let mut decoder = Decoder::new(Direction::Request);
    let mut events = Vec::new();
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut reply = Reply::Idle;
    let mut offset = 0u64;
    loop {
        if buf.capacity() < ECHO_READ_SIZE / 4 {
            buf.reserve(ECHO_READ_SIZE);
        }
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let chunk = buf.split().freeze();
        let base = offset;
        offset += n as u64;
        decoder.decode(chunk.clone(), &mut events);
        // Stream offset up to which this chunk has been echoed or skipped.
        let mut cursor = base;
        for event in events.drain(..) {
            match event {
                Event::RequestHead(head) => {
                    reply = answer_head(&head, &mut out);
                }
                Event::PreviewEnd { .. } if reply == Reply::PreviewPending => {
                    out.extend_from_slice(
                        format!("ICAP/1.0 204 No Content\r\nISTag: {ISTAG}\r\n\r\n").as_bytes(),
                    );
                    reply = Reply::PreviewAnswered;
                }
                Event::MessageEnd { offset: end, .. } => {
                    match reply {
                        Reply::Echo { from } => {
                            copy_range(&chunk, base, from.max(cursor), end, &mut out);
                            cursor = end;
                        }
                        Reply::Options => out.extend_from_slice(options_answer().as_bytes()),
                        Reply::Idle
                        | Reply::PreviewPending
                        | Reply::PreviewAnswered
                        | Reply::Refused => {}
                    }
                    reply = Reply::Idle;
                }
                _ => {}
            }
        }
        if let Reply::Echo { from } = reply {
            copy_range(&chunk, base, from.max(cursor), offset, &mut out);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            // TLS may hold back the last record until flushed; a plain
            // socket's flush does nothing.
            stream.flush().await?;
            out.clear();
        }
    }
}

/// Appends the bytes of stream range `[from, to)` that lie in `chunk`
/// (which starts at stream offset `base`).
fn copy_range(chunk: &Bytes, base: u64, from: u64, to: u64, out: &mut BytesMut) {
    let end = base + chunk.len() as u64;
    let (from, to) = (from.max(base), to.min(end));
    if from < to {
        out.extend_from_slice(&chunk[(from - base) as usize..(to - base) as usize]);
    }
}

/// Writes the answer's head (when it is due now) and says what follows.
fn answer_head(head: &RequestHead, out: &mut BytesMut) -> Reply {
    let entities = match (&head.method, &head.encapsulated) {
        (Method::Options, _) => return Reply::Options,
        (Method::Reqmod | Method::Respmod, Some(e)) => &e.entities,
        _ => {
            out.extend_from_slice(
                format!("ICAP/1.0 400 Bad Request\r\nISTag: {ISTAG}\r\nEncapsulated: null-body=0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            return Reply::Refused;
        }
    };
    // A RESPMOD answer carries the response form: the request header the
    // client sent for context is not echoed (section 4.9.2).
    let kept: Vec<(EntityKind, u64)> = entities
        .iter()
        .copied()
        .filter(|(kind, _)| head.method != Method::Respmod || *kind != EntityKind::ReqHdr)
        .collect();
    let first = kept.first().map_or(0, |(_, at)| *at);
    let section = head.offset + head.head_len;
    let list: Vec<String> = kept
        .iter()
        .map(|(kind, at)| format!("{}={}", kind.as_str(), at - first))
        .collect();
    if head.preview.is_some() {
        return Reply::PreviewPending;
    }
    out.extend_from_slice(
        format!(
            "ICAP/1.0 200 OK\r\nISTag: {ISTAG}\r\nEncapsulated: {}\r\n\r\n",
            list.join(", ")
        )
        .as_bytes(),
    );
    Reply::Echo {
        from: section + first,
    }
}

fn options_answer() -> String {
    format!(
        "ICAP/1.0 200 OK\r\nMethods: RESPMOD, REQMOD\r\nService: icaptap bench echo\r\nISTag: {ISTAG}\r\nMax-Connections: 100000\r\nOptions-TTL: 3600\r\nAllow: 204\r\nEncapsulated: null-body=0\r\n\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{options_request, respmod_request, BenchConnection};

    async fn server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_echo(listener));
        addr
    }

    #[tokio::test]
    async fn echoes_respmod_bodies_of_every_size_and_answers_options() {
        let addr = server().await;
        let mut conn = BenchConnection::connect(addr).await.unwrap();
        let options = conn.round_trip(&options_request(addr)).await.unwrap();
        assert_eq!(options.status, 200);
        for size in [0usize, 1, 4096, 100_000, 1 << 20] {
            let req = respmod_request(addr, size);
            let answer = conn.round_trip(&req).await.unwrap();
            assert_eq!(answer.status, 200, "size {size}");
            assert_eq!(answer.body_bytes, size as u64, "size {size}");
        }
    }

    /// The bench must measure icaptap on well-formed traffic: a request or
    /// answer that icaptap flags would make it decode, log and annotate
    /// anomalies that no other configuration pays for.
    #[test]
    fn bench_requests_and_answers_are_well_formed_icap() {
        use icap_codec::{Decoder, Direction, Event};
        let addr: SocketAddr = "127.0.0.1:1344".parse().unwrap();
        let anomalies = |dir: Direction, bytes: &[u8]| -> Vec<String> {
            let mut decoder = Decoder::new(dir);
            let mut events = Vec::new();
            decoder.decode(Bytes::copy_from_slice(bytes), &mut events);
            events
                .iter()
                .filter_map(|e| match e {
                    Event::Anomaly(a) => Some(format!("{a:?}")),
                    _ => None,
                })
                .collect()
        };
        for request in [options_request(addr), respmod_request(addr, 4096)] {
            assert_eq!(
                anomalies(Direction::Request, &request),
                Vec::<String>::new()
            );
        }
        assert_eq!(
            anomalies(Direction::Response, options_answer().as_bytes()),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn echoes_over_tls_to_a_client_that_trusts_only_the_bench_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::tls::BenchPki::make(dir.path()).unwrap();
        let config = crate::tls::server_config(&pki.cert, &pki.key).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_echo_tls(listener, TlsAcceptor::from(config)));
        let to = crate::client::Endpoint {
            addr,
            tls: Some(pki.client().unwrap()),
        };
        let mut conn = crate::client::BenchConnection::open(&to).await.unwrap();
        assert!(
            conn.tls().is_some_and(|t| t.contains("TLS")),
            "{:?}",
            conn.tls()
        );
        let options = conn.round_trip(&options_request(addr)).await.unwrap();
        assert_eq!(options.status, 200);
        for size in [0usize, 4096, 1 << 20] {
            let expected = crate::client::respmod_plain_body(size);
            let parts = [
                crate::client::respmod_head(addr, size, crate::client::DEFAULT_HTTP_URL),
                crate::client::respmod_chunked_body(size),
            ];
            let answer = conn
                .round_trip_parts(&parts, Some(&expected))
                .await
                .unwrap();
            assert_eq!(answer.status, 200, "size {size}");
            assert!(
                answer.intact,
                "size {size}: the echo over TLS changed the body"
            );
        }
        // A plain client on the TLS port gets no ICAP answer.
        let mut plain = BenchConnection::connect(addr).await.unwrap();
        assert!(plain.round_trip(&options_request(addr)).await.is_err());
    }

    #[test]
    fn copy_range_takes_only_the_overlap() {
        let chunk = Bytes::from_static(b"abcdef");
        let mut out = BytesMut::new();
        copy_range(&chunk, 10, 12, 100, &mut out);
        assert_eq!(&out[..], b"cdef");
        out.clear();
        copy_range(&chunk, 10, 0, 11, &mut out);
        assert_eq!(&out[..], b"a");
        out.clear();
        copy_range(&chunk, 10, 16, 20, &mut out);
        assert!(out.is_empty());
    }
}
