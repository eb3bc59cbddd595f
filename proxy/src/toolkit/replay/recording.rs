//! What `icaptap replay` re-sends: the client requests of a recording and
//! the verdicts recorded for them.
//!
//! A recording is an output directory (its `capture*.pcapng` files and
//! `exchanges.jsonl`) or a capture file. The request stream of each ICAP
//! connection is reassembled from the capture and split into messages with
//! the codec's request decoder (RFC 3507 sections 4.3 to 4.5): a message
//! that sent a preview without `ieof` is cut at the preview's zero chunk,
//! so the remainder goes only after `100 Continue`, as it did originally.

use crate::output::logset::Log;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use icap_codec::event::MessageEnd;
use icap_codec::{Decoder, Direction, EntityKind, Event};

use crate::analyze::{read_captures, AnalyzeError, AnalyzeOptions};
use crate::observe::{Observer, ObserverConfig, ObserverMode};
use crate::output::records::{ConnectionRecord, ExchangeRecord};
use crate::output::writer::RecordSink;
use crate::tap::{ConnMeta, TapEvent};

/// Request bytes a replay holds in memory at most, over all connections:
/// a replay is for a troubleshooting capture, not for a day of traffic.
pub const MAX_REPLAY_BYTES: u64 = 1024 * 1024 * 1024;

/// Why a recording could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The directory or file could not be read.
    #[error("cannot read the recording {path}: {source}; give an icaptap output directory or a capture file")]
    Read {
        /// What was read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An output directory without captures.
    #[error("{dir} holds no capture*.pcapng; it was recorded with --no-capture or is not an icaptap output directory")]
    NoCapture {
        /// The directory.
        dir: PathBuf,
    },
    /// A log line could not be parsed.
    #[error("{path} line {line} is not a record icaptap wrote: {source}")]
    Record {
        /// The log file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
    /// The capture could not be read.
    #[error(transparent)]
    Capture(#[from] AnalyzeError),
    /// More request bytes than [`MAX_REPLAY_BYTES`].
    #[error("the recording holds more than {MAX_REPLAY_BYTES} request bytes; replay a shorter capture (editcap -A/-B cuts one by time)")]
    TooLarge,
}

/// The verdict a recording holds for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedVerdict {
    /// `clean`, `infected`, ... as in exchanges.jsonl.
    pub verdict: String,
    /// Threat names, when the sensor named any.
    pub threat: Option<String>,
    /// The final ICAP status, when there was one.
    pub icap_status: Option<u16>,
}

/// One client request of the recording, ready to re-send.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Connection id in the recording.
    pub conn: u64,
    /// Index of the request on its connection, from 0.
    pub seq: u64,
    /// ICAP method as sent.
    pub method: String,
    /// The encapsulated HTTP URL, when there was one.
    pub http_url: Option<String>,
    /// The head and the body or preview, sent at once.
    pub first: Bytes,
    /// The remainder after a preview, sent only after `100 Continue`;
    /// `None` when the original was answered on its preview.
    pub rest: Option<Bytes>,
    /// Whether the preview carried `ieof`.
    pub ieof: bool,
    /// What was recorded for it; `None` when the logs have no record.
    pub recorded: Option<RecordedVerdict>,
}

/// The requests of one ICAP connection, in order.
#[derive(Clone, Debug)]
pub struct RecordedConnection {
    /// Connection id in the recording.
    pub conn: u64,
    /// Its requests.
    pub requests: Vec<RecordedRequest>,
}

/// Reads `input` (an output directory or a capture file); `ports` adds TCP
/// ports to the ICAP ports looked at in a capture file.
pub fn load(input: &Path, ports: &[u16]) -> Result<Vec<RecordedConnection>, RecordingError> {
    load_shown(input, ports, false)
}

/// [`load`], showing the capture reader's progress line when `show` (and
/// stderr is a terminal).
pub fn load_shown(
    input: &Path,
    ports: &[u16],
    show: bool,
) -> Result<Vec<RecordedConnection>, RecordingError> {
    let meta = std::fs::metadata(input).map_err(|source| RecordingError::Read {
        path: input.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        load_directory(input, ports, show)
    } else {
        load_capture(input, ports, show)
    }
}

/// An output directory: the client legs of its captures, and the verdicts
/// of exchanges.jsonl matched by connection (client and listening address).
fn load_directory(
    dir: &Path,
    ports: &[u16],
    show: bool,
) -> Result<Vec<RecordedConnection>, RecordingError> {
    let captures = capture_files(dir)?;
    let connections: Vec<ConnectionRecord> = read_log(dir, Log::Connections)?;
    let exchanges: Vec<ExchangeRecord> = read_log(dir, Log::Exchanges)?;
    let mut all_ports: Vec<u16> = ports.to_vec();
    let mut legs: HashMap<(String, String), u64> = HashMap::new();
    for c in &connections {
        if let Some(port) = port_of(&c.listen) {
            all_ports.push(port);
        }
        legs.insert((c.client.clone(), c.listen.clone()), c.conn);
    }
    let streams = request_streams(&captures, &all_ports, show)?;
    let verdicts = verdicts_by_conn(exchanges);
    let mut out = Vec::new();
    for (meta, stream) in streams.into_values() {
        let key = (meta.client.to_string(), meta.listen.to_string());
        // The sensor leg carries the same bytes again: only the client leg
        // (client -> icaptap's listening address) is replayed.
        let Some(&conn) = legs.get(&key) else {
            continue;
        };
        out.push(split_connection(conn, &stream, verdicts.get(&conn)));
    }
    out.sort_by_key(|c| c.conn);
    Ok(out)
}

/// A capture file: the offline observer derives the recorded verdicts.
fn load_capture(
    path: &Path,
    ports: &[u16],
    show: bool,
) -> Result<Vec<RecordedConnection>, RecordingError> {
    let files = [path.to_path_buf()];
    let collected = Collected::default();
    let mut observer = Observer::new(
        ObserverMode::Capture,
        ObserverConfig::default(),
        Box::new(collected.clone()),
    );
    let mut streams = StreamSet::default();
    let mut last = 0;
    // Ports given select the flows (one leg of a capture holding both);
    // none given, ICAP is found by its first bytes on any port.
    let opts = AnalyzeOptions::with_ports(ports)
        .progress(show)
        .discover(ports.is_empty());
    read_captures(&files, &opts, &mut |tap| {
        last = last.max(tap.at);
        streams.take(&tap.conn, &tap.event);
        observer.handle(tap);
    })?;
    observer.finish(last);
    streams.check()?;
    let records = std::mem::take(&mut *collected.0.lock().unwrap_or_else(PoisonError::into_inner));
    let verdicts = verdicts_by_conn(records);
    let mut out: Vec<RecordedConnection> = streams
        .flows
        .into_values()
        .map(|(meta, stream)| split_connection(meta.id, &stream.freeze(), verdicts.get(&meta.id)))
        .collect();
    out.sort_by_key(|c| c.conn);
    Ok(out)
}

/// The exchange records of an observer run, kept in memory.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<ExchangeRecord>>>);

impl RecordSink for Collected {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record.clone());
    }

    fn connection(&mut self, _: &ConnectionRecord) {}
}

/// Recorded verdicts of requests (records with a method), per connection,
/// in request order.
fn verdicts_by_conn(records: Vec<ExchangeRecord>) -> HashMap<u64, Vec<RecordedVerdict>> {
    let mut sorted: Vec<ExchangeRecord> =
        records.into_iter().filter(|r| r.method.is_some()).collect();
    sorted.sort_by_key(|r| (r.conn, r.seq));
    let mut out: HashMap<u64, Vec<RecordedVerdict>> = HashMap::new();
    for r in sorted {
        out.entry(r.conn).or_default().push(RecordedVerdict {
            verdict: r.verdict,
            threat: r.threat,
            icap_status: r.icap_status,
        });
    }
    out
}

fn capture_files(dir: &Path) -> Result<Vec<PathBuf>, RecordingError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RecordingError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("capture") && n.contains(".pcap"))
        })
        .collect();
    // capture.pcapng, then capture-0001.pcapng...: names sort in write order.
    files.sort();
    if files.is_empty() {
        return Err(RecordingError::NoCapture {
            dir: dir.to_path_buf(),
        });
    }
    Ok(files)
}

/// The records of one log of `dir`, its rotated files read in order as one.
fn read_log<T: serde::de::DeserializeOwned>(
    dir: &Path,
    log: Log,
) -> Result<Vec<T>, RecordingError> {
    let mut out = Vec::new();
    for path in crate::output::logset::list(dir, log) {
        out.extend(read_jsonl(&path)?);
    }
    Ok(out)
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, RecordingError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        // A run stopped before any record was written.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RecordingError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    let lines = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str(line);
        // A last line without its newline was cut by a killed run: the
        // records before it are whole.
        if parsed.is_err() && i + 1 == lines && !text.ends_with('\n') {
            tracing::warn!(
                "{}: the last line was cut at byte {} (icaptap was killed?); read up to it",
                path.display(),
                text.len() - line.len()
            );
            break;
        }
        let record = parsed.map_err(|source| RecordingError::Record {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        out.push(record);
    }
    Ok(out)
}

fn port_of(addr: &str) -> Option<u16> {
    addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
}

/// The request stream of every flow in `captures`.
fn request_streams(
    captures: &[PathBuf],
    ports: &[u16],
    show: bool,
) -> Result<BTreeMap<u64, (Arc<ConnMeta>, Bytes)>, RecordingError> {
    let mut streams = StreamSet::default();
    let opts = AnalyzeOptions::with_ports(ports).progress(show);
    read_captures(captures, &opts, &mut |tap| {
        streams.take(&tap.conn, &tap.event)
    })?;
    streams.check()?;
    Ok(streams
        .flows
        .into_iter()
        .map(|(id, (meta, buf))| (id, (meta, buf.freeze())))
        .collect())
}

/// Client-to-server bytes per flow, in stream order.
#[derive(Default)]
struct StreamSet {
    flows: BTreeMap<u64, (Arc<ConnMeta>, BytesMut)>,
    total: u64,
}

impl StreamSet {
    fn take(&mut self, conn: &Arc<ConnMeta>, event: &TapEvent) {
        let entry = self
            .flows
            .entry(conn.id)
            .or_insert_with(|| (Arc::clone(conn), BytesMut::new()));
        if let TapEvent::Data {
            dir: Direction::Request,
            offset,
            bytes,
        } = event
        {
            // Bytes the capture missed cannot be re-sent: the stream stops
            // at the first gap, and the decoder sees a message cut short.
            if *offset == entry.1.len() as u64 && self.total <= MAX_REPLAY_BYTES {
                entry.1.extend_from_slice(bytes);
                self.total += bytes.len() as u64;
            }
        }
    }

    fn check(&self) -> Result<(), RecordingError> {
        if self.total > MAX_REPLAY_BYTES {
            return Err(RecordingError::TooLarge);
        }
        Ok(())
    }
}

/// Where one message lies in its connection's request stream.
#[derive(Clone, Debug)]
struct MessageSpan {
    start: u64,
    preview_end: Option<u64>,
    end: Option<(u64, MessageEnd)>,
    method: String,
    http_url: Option<String>,
    ieof: bool,
}

/// Splits one request stream into messages and attaches the verdicts
/// recorded for them, in order.
fn split_connection(
    conn: u64,
    stream: &Bytes,
    recorded: Option<&Vec<RecordedVerdict>>,
) -> RecordedConnection {
    let mut decoder = Decoder::new(Direction::Request);
    let mut events = Vec::new();
    decoder.decode(stream.clone(), &mut events);
    decoder.finish(&mut events);
    let mut spans: Vec<MessageSpan> = Vec::new();
    for event in events {
        match event {
            Event::RequestHead(h) => spans.push(MessageSpan {
                start: h.offset,
                preview_end: None,
                end: None,
                method: h.method.as_str().to_owned(),
                http_url: None,
                ieof: false,
            }),
            Event::HttpHead(h) if h.entity == EntityKind::ReqHdr => {
                if let Some(span) = spans.last_mut() {
                    span.http_url = h
                        .target
                        .as_ref()
                        .map(|t| String::from_utf8_lossy(t).into_owned());
                }
            }
            Event::PreviewEnd { offset, ieof } => {
                if let Some(span) = spans.last_mut() {
                    span.ieof = ieof;
                    if !ieof {
                        span.preview_end = Some(offset);
                    }
                }
            }
            Event::MessageEnd { offset, end, .. } => {
                if let Some(span) = spans.last_mut() {
                    span.end = Some((offset, end));
                }
            }
            _ => {}
        }
    }
    let len = stream.len() as u64;
    let requests = spans
        .into_iter()
        .enumerate()
        .map(|(i, span)| {
            let (end, how) = span.end.unwrap_or((len, MessageEnd::Complete));
            let cut = span.preview_end.unwrap_or(end).min(end);
            let rest = match (span.preview_end, how) {
                (Some(p), MessageEnd::Complete) if end > p => Some(slice(stream, p, end)),
                _ => None,
            };
            RecordedRequest {
                conn,
                seq: i as u64,
                method: span.method,
                http_url: span.http_url,
                first: slice(stream, span.start, cut),
                rest,
                ieof: span.ieof,
                recorded: recorded.and_then(|v| v.get(i)).cloned(),
            }
        })
        .collect();
    RecordedConnection { conn, requests }
}

fn slice(stream: &Bytes, from: u64, to: u64) -> Bytes {
    let len = stream.len();
    let from = usize::try_from(from).unwrap_or(len).min(len);
    let to = usize::try_from(to).unwrap_or(len).min(len).max(from);
    stream.slice(from..to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_line_cut_by_a_kill_is_left_out_and_a_bad_whole_line_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let read: Vec<serde_json::Value> = read_jsonl(&path).unwrap();
        assert_eq!(read.len(), 2);
        // A broken line followed by a newline was not cut by a kill.
        std::fs::write(&path, "{\"a\":1}\n{\"a\":\n").unwrap();
        assert!(read_jsonl::<serde_json::Value>(&path).is_err());
    }
}
