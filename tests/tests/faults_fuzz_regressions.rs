//! Inputs the fuzz targets of proxy/fuzz found, kept as regression tests:
//! each file under tests/fixtures/corpus/fuzz/<target>/ runs through the
//! same harness as the target, without libFuzzer.
//!
//! - `observer/data-after-fin.bin`: the first crash of the observer target.
//!   The script sent data after a direction's FIN, which no tap source
//!   produces (the session and the reassembly stop a direction at its
//!   close); the observer rightly ignores such bytes and the target now
//!   skips them too. Kept so the harness stays honest about the contract.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use icap_codec::{Decoder, Direction, Event};
use icaptap::analyze::{read_captures, AnalyzeOptions};
use icaptap::observe::{Observer, ObserverConfig};
use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
use icaptap::output::writer::RecordSink;
use icaptap::tap::{CloseKind, ConnMeta, Tap, TapEvent};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/corpus/fuzz")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
}

#[derive(Clone, Default)]
struct Counting(Arc<Mutex<(u64, u64)>>);

impl RecordSink for Counting {
    fn exchange(&mut self, _: &ExchangeRecord) {
        self.0.lock().unwrap().0 += 1;
    }
    fn connection(&mut self, _: &ConnectionRecord) {
        self.0.lock().unwrap().1 += 1;
    }
}

/// The observer target's script (see proxy/fuzz/fuzz_targets/observer.rs).
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
        let (dir, d) = if control & 1 == 0 {
            (Direction::Request, 0)
        } else {
            (Direction::Response, 1)
        };
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
                let end = (i + usize::from(control >> 3) + 1).min(data.len());
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

fn run_observer(data: &[u8]) -> (u64, u64, u64) {
    let counts = Counting::default();
    let config = ObserverConfig {
        verdict_timeout: Duration::from_secs(3),
        stall_timeout: Duration::from_secs(2),
        eof_wait: Duration::from_secs(1),
    };
    let mut observer = Observer::new(config, Box::new(counts.clone()));
    let meta = Arc::new(ConnMeta {
        id: 1,
        client: SocketAddr::from(([127, 0, 0, 1], 40000)),
        listen: SocketAddr::from(([127, 0, 0, 1], 1344)),
        upstream_local: None,
        server: SocketAddr::from(([127, 0, 0, 2], 1344)),
        opened: 1_000_000,
    });
    let mut requests = Decoder::new(Direction::Request);
    let mut events = Vec::new();
    let mut last = 0;
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
    let c = *counts.0.lock().unwrap();
    (started, c.0, c.1)
}

#[test]
fn observer_inputs_found_by_fuzzing() {
    for path in inputs("observer") {
        let data = std::fs::read(&path).unwrap();
        let (started, exchanges, connections) = run_observer(&data);
        assert_eq!(connections, 1, "{}", path.display());
        assert!(
            exchanges >= started,
            "{}: {started} requests started, {exchanges} exchange records",
            path.display()
        );
    }
}

#[test]
fn capture_reader_inputs_found_by_fuzzing() {
    for path in inputs("capture_reader") {
        let mut next: HashMap<(u64, bool), u64> = HashMap::new();
        let _ = read_captures(
            std::slice::from_ref(&path),
            &AnalyzeOptions::default(),
            &mut |tap| {
                if let TapEvent::Data { dir, offset, bytes } = &tap.event {
                    let expected = next
                        .entry((tap.conn.id, *dir == Direction::Request))
                        .or_insert(0);
                    assert!(
                        *offset >= *expected,
                        "{}: a stream offset went back",
                        path.display()
                    );
                    *expected = offset + bytes.len() as u64;
                }
            },
        );
    }
}
