//! One keep-alive ICAP client connection: sends a built request, honours
//! `100 Continue` by sending the remainder (RFC 3507 section 4.5), and reads
//! the final response with `icap_codec::Decoder`.
//!
//! The bytes sent and the events received also go through an
//! `icap_codec::Correlator`, so every answer carries the same [`Exchange`]
//! the observer builds from the wire, and the client reads its verdict with
//! the observer's classifier instead of a second one of its own.
//!
//! Over TLS (`icaptap client --tls`) the connection is the proxy's own TLS
//! client leg (`forward::tls`), so a failed handshake falls in the same
//! classes, with the same codes, as the proxy's sensor leg.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use icap_codec::{
    Anomaly, Correlator, Decoder, Direction, Event, Exchange, HttpHead, ResponseHead, Stamp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::request::BuiltRequest;
use crate::forward::tls::{LegStream, TlsUpstream};
use crate::observe::verdict::{classify, Verdict};
use crate::tap::now_micros;
use crate::tap::{TlsFailure, TlsLeg};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Response body bytes kept for printing and comparing; the rest is
/// counted only.
pub const MAX_KEPT_BODY: usize = 64 * 1024 * 1024;

/// Why an exchange got no final answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The sensor could not be reached.
    #[error("cannot connect to the sensor at {addr}: {source}; is it listening there?")]
    Connect {
        /// The address tried.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// Connecting took too long.
    #[error("connecting to the sensor at {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// The address tried.
        addr: String,
        /// The time allowed.
        after: Duration,
    },
    /// Writing the request failed.
    #[error("writing the request to the sensor failed at request byte {offset}: {source}")]
    Write {
        /// Request bytes written before the failure.
        offset: u64,
        /// The socket error.
        source: std::io::Error,
    },
    /// The sensor reset the connection.
    #[error("the sensor reset the connection after sending {offset} response bytes ({stage}); no verdict")]
    Reset {
        /// Response bytes received on this connection.
        offset: u64,
        /// What the client was waiting for.
        stage: &'static str,
    },
    /// Reading failed for another reason.
    #[error("reading the sensor's answer failed after {offset} bytes: {source}")]
    Read {
        /// Response bytes received on this connection.
        offset: u64,
        /// The socket error.
        source: std::io::Error,
    },
    /// The sensor closed the connection without a final answer.
    #[error("the sensor closed the connection after sending {offset} response bytes ({stage}); no verdict")]
    Closed {
        /// Response bytes received on this connection.
        offset: u64,
        /// What the client was waiting for.
        stage: &'static str,
    },
    /// The TLS handshake with the sensor failed.
    #[error("TLS with the sensor at {addr} failed ({}): {error}{}", tls_code(*.failure), tls_hint(*.failure, .addr))]
    Tls {
        /// The address tried.
        addr: String,
        /// The class of the failure.
        failure: TlsFailure,
        /// What happened, and what to do.
        error: String,
    },
    /// No final answer in time.
    #[error("no answer from the sensor within {after:?} ({stage}); it went silent")]
    Timeout {
        /// The time allowed.
        after: Duration,
        /// What the client was waiting for.
        stage: &'static str,
    },
}

impl ClientError {
    /// A short kind for counting errors in load mode.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "connect",
            ClientError::ConnectTimeout { .. } => "connect-timeout",
            ClientError::Write { .. } => "write",
            ClientError::Reset { .. } => "reset",
            ClientError::Read { .. } => "read",
            ClientError::Closed { .. } => "closed",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Tls { failure, .. } => tls_code(*failure),
        }
    }
}

/// The code of a failed TLS handshake with the sensor: the proxy's
/// anomaly code for the same failure on its sensor leg.
pub fn tls_code(failure: TlsFailure) -> &'static str {
    match failure {
        TlsFailure::CertificateExpired => "tls-certificate-expired",
        TlsFailure::CertificateUntrusted => "tls-certificate-untrusted",
        TlsFailure::CertificateNameMismatch => "tls-certificate-name-mismatch",
        TlsFailure::PlainOnTlsPort => "tls-plain-on-tls-port",
        TlsFailure::Handshake => "tls-sensor-handshake-failed",
    }
}

/// What to try after a handshake failure whose error has no advice.
fn tls_hint(failure: TlsFailure, addr: &str) -> String {
    match failure {
        TlsFailure::Handshake => format!(
            "; is {addr} an ICAP over TLS port? (plain ICAP: leave out --tls; a lab sensor \
             with a certificate nobody signed: --tls-insecure)"
        ),
        _ => String::new(),
    }
}

/// The final answer to one request.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The `100 Continue` head, when one came.
    pub interim: Option<ResponseHead>,
    /// The final response head.
    pub head: ResponseHead,
    /// Encapsulated HTTP heads of the final response.
    pub http: Vec<HttpHead>,
    /// De-chunked body of the final response (at most `MAX_KEPT_BODY`).
    pub body: Bytes,
    /// Body bytes received (also those not kept).
    pub body_len: u64,
    /// Whether the final response ended properly (else the connection
    /// closed in the middle of it).
    pub complete: bool,
    /// Anomalies the decoder found in the response stream.
    pub anomalies: Vec<Anomaly>,
    /// From the first request byte written to the final response head.
    pub latency: Duration,
    /// Request bytes written.
    pub bytes_sent: u64,
    /// Response bytes read for this exchange.
    pub bytes_received: u64,
    /// The request and its answers as the observer would see them on the
    /// wire (correlated from the bytes sent and the events received).
    pub exchange: Exchange,
}

impl Answer {
    /// The verdict and threat names, read by the observer's classifier.
    pub fn verdict(&self) -> (Verdict, Option<String>) {
        classify(&self.exchange)
    }
}

/// Feeds both directions of one exchange to a correlator: the request is
/// decoded from the bytes the client writes, the response from the events
/// the connection's decoder already produced.
#[derive(Debug)]
struct Pairing {
    requests: Decoder,
    correlator: Correlator,
    scratch: Vec<Event>,
}

impl Pairing {
    fn new() -> Pairing {
        Pairing {
            requests: Decoder::new(Direction::Request),
            correlator: Correlator::new(),
            scratch: Vec::new(),
        }
    }

    fn sent(&mut self, bytes: &Bytes) {
        self.requests.decode(bytes.clone(), &mut self.scratch);
        let stamp = stamp_now();
        for event in self.scratch.drain(..) {
            self.correlator.on_request(event, stamp);
        }
    }

    fn received(&mut self, event: &Event) {
        self.correlator.on_response(event.clone(), stamp_now());
    }

    /// The exchange as far as it went: a preview answered without
    /// `100 Continue` ends here, and so does a response cut short.
    fn finish(mut self) -> Exchange {
        self.requests.finish(&mut self.scratch);
        let stamp = stamp_now();
        for event in self.scratch.drain(..) {
            self.correlator.on_request(event, stamp);
        }
        if let Some(x) = self.correlator.pop() {
            return x;
        }
        self.correlator.close();
        self.correlator.pop().unwrap_or_default()
    }
}

fn stamp_now() -> Stamp {
    Stamp {
        at: now_micros(),
        frame: None,
    }
}

/// What arrived of an answer besides its final head.
#[derive(Debug, Default)]
struct Received {
    interim: Option<ResponseHead>,
    http: Vec<HttpHead>,
    body: BytesMut,
    body_len: u64,
    anomalies: Vec<Anomaly>,
}

impl Received {
    fn into_answer(
        self,
        head: ResponseHead,
        latency: Duration,
        complete: bool,
        sent: u64,
        received: u64,
        exchange: Exchange,
    ) -> Answer {
        Answer {
            interim: self.interim,
            head,
            http: self.http,
            body: self.body.freeze(),
            body_len: self.body_len,
            complete,
            anomalies: self.anomalies,
            latency,
            bytes_sent: sent,
            bytes_received: received,
            exchange,
        }
    }
}

/// Where the client is while waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// For an answer to the head and preview (or the whole request).
    FirstAnswer,
    /// For the final answer after `100 Continue` and the remainder.
    AfterContinue,
    /// Inside the final response, for its end.
    ResponseEnd,
}

impl Waiting {
    fn stage(self) -> &'static str {
        match self {
            Waiting::FirstAnswer => "waiting for the first answer",
            Waiting::AfterContinue => "waiting for the verdict after 100 Continue",
            Waiting::ResponseEnd => "in the middle of the final response",
        }
    }
}

/// A keep-alive connection to a sensor.
#[derive(Debug)]
pub struct IcapConnection {
    stream: LegStream,
    tls: Option<TlsLeg>,
    decoder: Decoder,
    buf: BytesMut,
    received: u64,
    reusable: bool,
}

impl IcapConnection {
    /// Connects to `addr` within `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<IcapConnection, ClientError> {
        IcapConnection::connect_over(addr, None, timeout).await
    }

    /// Connects to `addr` within `timeout`, then speaks TLS with `tls`
    /// (its handshake within `timeout` too).
    pub async fn connect_over(
        addr: SocketAddr,
        tls: Option<&TlsUpstream>,
        timeout: Duration,
    ) -> Result<IcapConnection, ClientError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(ClientError::ConnectTimeout {
                    addr: addr.to_string(),
                    after: timeout,
                })
            }
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    addr: addr.to_string(),
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        // Requests are written whole; the preview must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (stream, tls) = match tls {
            None => (LegStream::Plain(stream), None),
            Some(tls) => match tls.connect(stream, timeout).await {
                Ok((stream, leg)) => (stream, Some(leg)),
                Err(failed) => {
                    return Err(ClientError::Tls {
                        addr: addr.to_string(),
                        failure: failed.failure,
                        error: failed.error,
                    })
                }
            },
        };
        Ok(IcapConnection {
            stream,
            tls,
            decoder: Decoder::new(Direction::Response),
            buf: BytesMut::with_capacity(READ_CHUNK),
            received: 0,
            reusable: true,
        })
    }

    /// What the TLS handshake settled, when the connection speaks TLS.
    pub fn tls(&self) -> Option<&TlsLeg> {
        self.tls.as_ref()
    }

    /// Whether another request may be sent on this connection.
    pub fn is_reusable(&self) -> bool {
        self.reusable
    }

    async fn write(&mut self, bytes: &[u8], sent: &mut u64) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|source| ClientError::Write {
                offset: *sent,
                source,
            })?;
        // TLS holds what is written until flushed; plain TCP has nothing to flush.
        self.stream
            .flush()
            .await
            .map_err(|source| ClientError::Write {
                offset: *sent,
                source,
            })?;
        *sent += bytes.len() as u64;
        Ok(())
    }

    /// Sends `req` and waits at most `timeout` for its final answer.
    pub async fn send(
        &mut self,
        req: &BuiltRequest,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        let result = self.exchange(req, timeout).await;
        if result.is_err() {
            self.reusable = false;
        }
        result
    }

    async fn exchange(
        &mut self,
        req: &BuiltRequest,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let received_before = self.received;
        let mut sent = 0u64;
        let mut pairing = Pairing::new();
        pairing.sent(&req.first);
        self.write(&req.first, &mut sent).await?;

        let mut waiting = Waiting::FirstAnswer;
        let mut rest_sent = false;
        let mut fin: Option<(ResponseHead, Duration)> = None;
        let mut got = Received::default();
        let mut events = Vec::new();
        let mut eof = false;
        loop {
            for event in events.drain(..) {
                pairing.received(&event);
                match event {
                    Event::ResponseHead(head) if fin.is_none() && head.status == 100 => {
                        got.interim = Some(*head);
                        waiting = Waiting::AfterContinue;
                        if let (Some(rest), false) = (&req.rest, rest_sent) {
                            rest_sent = true;
                            let rest = rest.clone();
                            pairing.sent(&rest);
                            self.write(&rest, &mut sent).await?;
                        }
                    }
                    Event::ResponseHead(head) if fin.is_none() => {
                        fin = Some((*head, start.elapsed()));
                        waiting = Waiting::ResponseEnd;
                    }
                    Event::HttpHead(h) if fin.is_some() => got.http.push(*h),
                    Event::Body(data) if fin.is_some() => {
                        got.body_len += data.len() as u64;
                        if got.body.len() + data.len() <= MAX_KEPT_BODY {
                            got.body.extend_from_slice(&data);
                        }
                    }
                    Event::MessageEnd { .. } if fin.is_some() => {
                        if let Some((head, latency)) = fin.take() {
                            if head
                                .headers
                                .get_str("Connection")
                                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                            {
                                self.reusable = false;
                            }
                            let received = self.received - received_before;
                            let exchange = pairing.finish();
                            return Ok(
                                got.into_answer(head, latency, true, sent, received, exchange)
                            );
                        }
                    }
                    Event::Anomaly(a) => got.anomalies.push(a),
                    _ => {}
                }
            }
            if eof {
                self.reusable = false;
                let received = self.received - received_before;
                return match fin.take() {
                    Some((head, latency)) => {
                        let exchange = pairing.finish();
                        Ok(got.into_answer(head, latency, false, sent, received, exchange))
                    }
                    None => Err(ClientError::Closed {
                        offset: self.received,
                        stage: waiting.stage(),
                    }),
                };
            }
            self.buf.reserve(READ_CHUNK);
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await;
            let n = match read {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        after: timeout,
                        stage: waiting.stage(),
                    })
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(ClientError::Reset {
                        offset: self.received,
                        stage: waiting.stage(),
                    })
                }
                Ok(Err(source)) => {
                    return Err(ClientError::Read {
                        offset: self.received,
                        source,
                    })
                }
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                eof = true;
                self.decoder.finish(&mut events);
            } else {
                self.received += n as u64;
                self.decoder.decode(self.buf.split().freeze(), &mut events);
            }
        }
    }
}
