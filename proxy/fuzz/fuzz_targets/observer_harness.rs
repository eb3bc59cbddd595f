//! The observer fuzz target's harness, shared with the regression test
//! that replays what the fuzzer found (tests/tests/faults_fuzz_regressions.rs
//! includes this file), so that both run exactly the same thing: the input
//! is a script of one connection's taps (see [`script`]) fed to an observer
//! as the live proxy would hand them over.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use icap_codec::{Decoder, Direction, Event};
use icaptap::observe::{Observer, ObserverConfig, ObserverMode};
use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
use icaptap::output::writer::RecordSink;
use icaptap::tap::{CloseKind, ConnMeta, Tap, TapEvent};

/// Counts what the observer wrote, shared with the target after the
/// observer took the sink.
#[derive(Clone, Default)]
struct Counting(Arc<Mutex<(u64, u64)>>);

impl RecordSink for Counting {
    fn exchange(&mut self, _: &ExchangeRecord) {
        if let Ok(mut c) = self.0.lock() {
            c.0 += 1;
        }
    }
    fn connection(&mut self, _: &ConnectionRecord) {
        if let Ok(mut c) = self.0.lock() {
            c.1 += 1;
        }
    }
}

/// One step of the script: a control byte, then (for data) its payload.
/// Control byte: bit 0 the direction; bits 1-2 the kind (0, 1: data of
/// length `(byte >> 3) + 1`, 2: close with FIN, 3: close with RST);
/// each step advances the clock by `byte` tenths of a second, so the
/// clock rules (verdict timeout, stall) fire too. As on the wire, nothing
/// follows a direction's close: such steps are skipped.
fn script(data: &[u8]) -> Vec<(u64, TapEvent)> {
    let mut out = Vec::new();
    let mut offsets = [0u64; 2];
    let mut closed = [false; 2];
    let mut at = 1_000_000u64;
    let mut i = 0;
    while i < data.len() {
        let control = data[i];
        i += 1;
        at += u64::from(control) * 100_000;
        let dir = if control & 1 == 0 {
            Direction::Request
        } else {
            Direction::Response
        };
        let d = usize::from(control & 1);
        match (control >> 1) & 3 {
            kind @ (2 | 3) => {
                if !closed[d] {
                    closed[d] = true;
                    let how = if kind == 2 {
                        CloseKind::Fin
                    } else {
                        CloseKind::Reset
                    };
                    out.push((at, TapEvent::Closed { dir, how }));
                }
            }
            _ => {
                let len = usize::from(control >> 3) + 1;
                let end = (i + len).min(data.len());
                let bytes = Bytes::copy_from_slice(&data[i..end]);
                i = end;
                if closed[d] {
                    continue;
                }
                let offset = offsets[d];
                offsets[d] += bytes.len() as u64;
                out.push((at, TapEvent::Data { dir, offset, bytes }));
            }
        }
    }
    out.push((at + 1, TapEvent::Finished));
    out
}

/// What one run produced.
pub struct Outcome {
    /// Requests the client started, counted by an independent decoder.
    pub started: u64,
    /// Exchange records the observer wrote.
    pub exchanges: u64,
    /// Connection records the observer wrote.
    pub connections: u64,
}

/// Runs the observer over the script `data` describes.
pub fn run(data: &[u8]) -> Outcome {
    let counts = Counting::default();
    let config = ObserverConfig {
        verdict_timeout: Duration::from_secs(3),
        stall_timeout: Duration::from_secs(2),
        eof_wait: Duration::from_secs(1),
        // Small, so that short inputs reach the deep-pipeline give-up.
        max_pipeline: 8,
    };
    let mut observer = Observer::new(ObserverMode::Live, config, Box::new(counts.clone()));
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 40000));
    let meta = Arc::new(ConnMeta {
        id: 1,
        client: any,
        listen: SocketAddr::from(([127, 0, 0, 1], 1344)),
        upstream_local: None,
        server: SocketAddr::from(([127, 0, 0, 2], 1344)),
        opened: 1_000_000,
    });
    // An independent count of the requests the client started.
    let mut requests = Decoder::new(Direction::Request);
    let mut events = Vec::new();
    let mut last = 0;
    observer.handle(Tap {
        conn: meta.clone(),
        at: 1_000_000,
        frame: None,
        event: TapEvent::Open,
    });
    for (at, event) in script(data) {
        if let TapEvent::Data {
            dir: Direction::Request,
            bytes,
            ..
        } = &event
        {
            requests.decode(bytes.clone(), &mut events);
        }
        last = at;
        observer.handle(Tap {
            conn: meta.clone(),
            at,
            frame: None,
            event,
        });
    }
    observer.finish(last + 1);
    requests.finish(&mut events);
    let started = events
        .iter()
        .filter(|e| matches!(e, Event::RequestHead(_)))
        .count() as u64;
    let (exchanges, connections) = *counts.0.lock().unwrap_or_else(|e| e.into_inner());
    Outcome {
        started,
        exchanges,
        connections,
    }
}
