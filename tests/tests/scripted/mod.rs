//! A scripted ICAP server and client for the observer's integration tests:
//! the server misbehaves exactly as a test says (no real sensor can be made
//! to), the in-process icaptap proxy sits between them, and the test reads
//! back the records the proxy wrote.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use std::collections::VecDeque;

use icap_codec::event::MessageEnd;
use icap_codec::{Decoder, Direction, Event};
use icaptap::forward::ForwardConfig;
use icaptap::jobs::proxy::{start, ProxyPlan};
use icaptap::observe::ObserverConfig;
use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One step of a scripted peer.
#[derive(Clone, Debug)]
pub enum Step {
    /// Read until the peer's next message is over: a whole request (or its
    /// preview) for the server, a whole final response for the client.
    AwaitMessage,
    /// Read until the server's 100 Continue (client scripts only).
    AwaitContinue,
    /// Read until the peer's stream ends.
    AwaitEof,
    /// Send these bytes.
    Send(Vec<u8>),
    /// Wait.
    Sleep(Duration),
    /// Half-close (FIN) our sending direction.
    Shutdown,
    /// Close with a reset (RST).
    Reset,
}

/// Shorthand for `Step::Send` of text.
pub fn send(text: &str) -> Step {
    Step::Send(text.as_bytes().to_vec())
}

/// Shorthand for `Step::Send` of bytes.
pub fn send_bytes(bytes: &[u8]) -> Step {
    Step::Send(bytes.to_vec())
}

/// Reads a peer's stream through a decoder and remembers which messages
/// ended, so bytes read past one message are not lost for the next step.
struct Reader {
    decoder: Decoder,
    /// Ends seen and not yet awaited: `true` for an interim end (a 100
    /// Continue, or a preview that waits for one), `false` for a final one.
    ended: VecDeque<bool>,
    interim: bool,
    eof: bool,
}

impl Reader {
    fn new(reading: Direction) -> Reader {
        Reader {
            decoder: Decoder::new(reading),
            ended: VecDeque::new(),
            interim: false,
            eof: false,
        }
    }

    /// Waits for the next end of the wanted kind (`None`: either kind).
    async fn await_end(&mut self, stream: &mut TcpStream, want: Option<bool>) -> bool {
        loop {
            if let Some(i) = self.ended.iter().position(|e| want.is_none_or(|w| w == *e)) {
                self.ended.drain(..=i);
                return true;
            }
            if self.eof || !self.pump(stream).await {
                return false;
            }
        }
    }

    /// Reads once and notes the message ends found.
    async fn pump(&mut self, stream: &mut TcpStream) -> bool {
        let mut buf = vec![0u8; 64 * 1024];
        let n = match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => 0,
        };
        if n == 0 {
            self.eof = true;
            return false;
        }
        let mut events = Vec::new();
        self.decoder
            .decode(Bytes::copy_from_slice(&buf[..n]), &mut events);
        for e in events {
            match e {
                Event::ResponseHead(h) => self.interim = h.status == 100,
                Event::PreviewEnd { ieof: false, .. } => self.ended.push_back(true),
                Event::MessageEnd {
                    end: MessageEnd::Complete,
                    ..
                } => self.ended.push_back(self.interim),
                _ => {}
            }
        }
        true
    }
}

async fn play(stream: &mut TcpStream, steps: &[Step], reading: Direction) {
    let mut reader = Reader::new(reading);
    for step in steps {
        let ok = match step {
            // A server acts on a request or on its preview; a client waits
            // for the final response.
            Step::AwaitMessage => {
                let want = if reading == Direction::Request {
                    None
                } else {
                    Some(false)
                };
                reader.await_end(stream, want).await
            }
            Step::AwaitContinue => reader.await_end(stream, Some(true)).await,
            Step::AwaitEof => {
                while reader.pump(stream).await {}
                true
            }
            Step::Send(bytes) => stream.write_all(bytes).await.is_ok(),
            Step::Sleep(d) => {
                tokio::time::sleep(*d).await;
                true
            }
            Step::Shutdown => stream.shutdown().await.is_ok(),
            Step::Reset => {
                let _ = stream.set_zero_linger();
                false
            }
        };
        if !ok {
            return;
        }
    }
}

/// A scripted ICAP server: the n-th connection it accepts plays the n-th
/// script (the last one repeats), then closes.
pub async fn scripted_server(scripts: Vec<Vec<Step>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scripts = Arc::new(Mutex::new(scripts));
    tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok((mut stream, _)) = listener.accept().await {
            let script = {
                let s = scripts.lock().unwrap();
                s.get(n).or_else(|| s.last()).cloned().unwrap_or_default()
            };
            n += 1;
            tokio::spawn(async move {
                play(&mut stream, &script, Direction::Request).await;
            });
        }
    });
    addr
}

/// What a case left behind.
#[derive(Debug)]
pub struct Outcome {
    pub exchanges: Vec<ExchangeRecord>,
    pub connections: Vec<ConnectionRecord>,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Outcome {
    /// Every anomaly code of every exchange and connection.
    pub fn codes(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .exchanges
            .iter()
            .flat_map(|x| x.anomalies.iter().map(|a| a.code.clone()))
            .collect();
        out.extend(
            self.connections
                .iter()
                .flat_map(|c| c.anomalies.iter().map(|a| a.code.clone())),
        );
        out
    }

    /// Whether anomaly `code` was reported.
    pub fn has(&self, code: &str) -> bool {
        self.codes().iter().any(|c| c == code)
    }

    /// The single exchange of the case.
    pub fn only(&self) -> &ExchangeRecord {
        assert_eq!(self.exchanges.len(), 1, "exchanges: {:#?}", self.exchanges);
        &self.exchanges[0]
    }
}

/// Reads a JSON Lines file of records.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l}: {e}")))
        .collect()
}

/// Fast timers so clock rules fire within a test.
pub fn quick_timers() -> ObserverConfig {
    ObserverConfig {
        verdict_timeout: Duration::from_millis(600),
        stall_timeout: Duration::from_millis(400),
        eof_wait: Duration::from_millis(300),
        max_pipeline: icap_codec::MAX_OPEN_EXCHANGES,
    }
}

/// Runs one case: a scripted server, icaptap in front of it, and one client
/// script per connection (run one after the other).
pub async fn run_case(
    server: Vec<Vec<Step>>,
    clients: Vec<Vec<Step>>,
    timers: ObserverConfig,
) -> Outcome {
    let upstream = scripted_server(server).await;
    run_case_to(upstream, clients, timers).await
}

/// Like [`run_case`], against an ICAP server that is already there.
pub async fn run_case_to(
    upstream: SocketAddr,
    clients: Vec<Vec<Step>>,
    timers: ObserverConfig,
) -> Outcome {
    run_planned(upstream, clients, |plan| ProxyPlan {
        observer: timers,
        ..plan
    })
    .await
}

/// Like [`run_case_to`], with the proxy's plan as `plan` makes it from the
/// defaults (e.g. without recording).
pub async fn run_planned(
    upstream: SocketAddr,
    clients: Vec<Vec<Step>>,
    plan: impl FnOnce(ProxyPlan) -> ProxyPlan,
) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let mut forward = ForwardConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    forward.drain = Duration::from_secs(2);
    forward.connect_timeout = Duration::from_secs(2);
    let proxy = start(plan(ProxyPlan::new(forward, dir.clone())))
        .await
        .unwrap();
    for steps in clients {
        let mut stream = TcpStream::connect(proxy.listen).await.unwrap();
        play(&mut stream, &steps, Direction::Response).await;
    }
    proxy.stop().await.unwrap();
    Outcome {
        exchanges: read_jsonl(&dir.join("exchanges.jsonl")),
        connections: read_jsonl(&dir.join("connections.jsonl")),
        dir,
        _tmp: tmp,
    }
}

/// Builds an ICAP response with an encapsulated HTTP response and body
/// (chunked), computing the Encapsulated offsets.
pub fn icap_response(
    status_line: &str,
    icap_headers: &str,
    http_head: Option<&str>,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut encapsulated = Vec::new();
    let mut offset = 0;
    if let Some(h) = http_head {
        encapsulated.push(format!("res-hdr={offset}"));
        offset += h.len();
    }
    encapsulated.push(if body.is_some() {
        format!("res-body={offset}")
    } else {
        format!("null-body={offset}")
    });
    let mut out = format!(
        "{status_line}\r\n{icap_headers}Encapsulated: {}\r\n\r\n",
        encapsulated.join(", ")
    )
    .into_bytes();
    if let Some(h) = http_head {
        out.extend_from_slice(h.as_bytes());
    }
    if let Some(b) = body {
        out.extend_from_slice(&chunked(b, None));
    }
    out
}

/// A chunked body (one data chunk) with an optional extension on the zero
/// chunk (`ieof`).
pub fn chunked(body: &[u8], last_ext: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    if !body.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    match last_ext {
        Some(ext) => out.extend_from_slice(format!("0; {ext}\r\n\r\n").as_bytes()),
        None => out.extend_from_slice(b"0\r\n\r\n"),
    }
    out
}

/// A RESPMOD request with a `req-hdr`, a `res-hdr` and a body.
pub fn respmod(service: &str, extra_headers: &str, body: &[u8], preview: Option<usize>) -> Vec<u8> {
    let req_hdr = "GET http://origin.example/file.bin HTTP/1.1\r\nHost: origin.example\r\n\r\n";
    let res_hdr = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut out = format!(
        "RESPMOD icap://127.0.0.1:1344{service} ICAP/1.0\r\nHost: 127.0.0.1\r\n{extra_headers}{}Encapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n",
        preview.map_or(String::new(), |p| format!("Preview: {p}\r\n")),
        req_hdr.len(),
        req_hdr.len() + res_hdr.len()
    )
    .into_bytes();
    out.extend_from_slice(req_hdr.as_bytes());
    out.extend_from_slice(res_hdr.as_bytes());
    match preview {
        None => out.extend_from_slice(&chunked(body, None)),
        Some(p) if p >= body.len() => out.extend_from_slice(&chunked(body, Some("ieof"))),
        Some(p) => out.extend_from_slice(&chunked(&body[..p], None)),
    }
    out
}

/// The rest of a body after a preview of `p` bytes.
pub fn remainder(body: &[u8], p: usize) -> Vec<u8> {
    chunked(&body[p..], None)
}

/// A REQMOD request with a `req-hdr` and no body.
pub fn reqmod(service: &str, extra_headers: &str, method: &str, url: &str) -> Vec<u8> {
    let req_hdr = format!("{method} {url} HTTP/1.1\r\nHost: origin.example\r\n\r\n");
    let mut out = format!(
        "REQMOD icap://127.0.0.1:1344{service} ICAP/1.0\r\nHost: 127.0.0.1\r\n{extra_headers}Encapsulated: req-hdr=0, null-body={}\r\n\r\n",
        req_hdr.len()
    )
    .into_bytes();
    out.extend_from_slice(req_hdr.as_bytes());
    out
}

/// An OPTIONS request.
pub fn options(service: &str) -> Vec<u8> {
    format!("OPTIONS icap://127.0.0.1:1344{service} ICAP/1.0\r\nHost: 127.0.0.1\r\nEncapsulated: null-body=0\r\n\r\n").into_bytes()
}

/// The EICAR anti-malware test file.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
