//! The products on each side as their ICAP heads name them (RFC 3507
//! section 4.3: `User-Agent` on requests, `Server` on responses, `Service`
//! in OPTIONS answers section 4.10.2). The records do not keep these
//! headers, so they are read from the run's capture with the offline
//! reader and the codec's decoder, on the sensor leg only so that a proxy
//! capture (both legs) does not count every message twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use icap_codec::{Decoder, Direction, Event, Headers};

use crate::analyze::{read_captures, AnalyzeOptions};
use crate::tap::{ConnId, TapEvent};

use super::facts::host_of;
use super::load::{self, RunFiles};

/// Distinct values kept per header.
pub const MAX_VALUES: usize = 20;
/// Longest value kept, in characters.
pub const MAX_VALUE_CHARS: usize = 200;
/// Capture bytes scanned for products; later files are skipped (the
/// products rarely change within a run).
pub const MAX_SCAN_BYTES: u64 = 256 * 1024 * 1024;

/// Header values seen in the capture, with how many messages carried each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireProducts {
    /// `User-Agent` of ICAP requests (the ICAP client product).
    pub user_agents: BTreeMap<String, u64>,
    /// `Server` of ICAP responses (the sensor product).
    pub servers: BTreeMap<String, u64>,
    /// `Service` of OPTIONS answers (the sensor's service description).
    pub services: BTreeMap<String, u64>,
    /// Whether a capture was scanned.
    pub scanned: bool,
    /// Capture files skipped because of [`MAX_SCAN_BYTES`].
    pub skipped_files: Vec<PathBuf>,
    /// Why the capture could not be read, when it could not.
    pub error: Option<String>,
}

fn note(map: &mut BTreeMap<String, u64>, headers: &Headers, name: &str) {
    for value in headers.get_all(name) {
        let text: String = String::from_utf8_lossy(value)
            .chars()
            .take(MAX_VALUE_CHARS)
            .collect();
        if map.contains_key(&text) || map.len() < MAX_VALUES {
            *map.entry(text).or_default() += 1;
        }
    }
}

impl WireProducts {
    /// Scans the run's capture files for the products' headers.
    pub fn scan(files: &RunFiles) -> WireProducts {
        let mut out = WireProducts::default();
        if files.captures.is_empty() {
            return out;
        }
        let mut sensors: BTreeSet<String> = BTreeSet::new();
        let _ = load::for_each_connection(files, &mut |c| {
            sensors.insert(c.server);
        });
        let ports: Vec<u16> = sensors
            .iter()
            .filter_map(|s| s.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
            .collect();
        if ports.is_empty() {
            return out;
        }
        let mut scanned = Vec::new();
        let mut budget = 0u64;
        for path in &files.captures {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if !scanned.is_empty() && budget + len > MAX_SCAN_BYTES {
                out.skipped_files.push(path.clone());
                continue;
            }
            budget += len;
            scanned.push(path.clone());
        }
        let sensor_hosts: BTreeSet<(String, u16)> = sensors
            .iter()
            .filter_map(|s| {
                let port = s.rsplit_once(':')?.1.parse().ok()?;
                Some((host_of(s).to_string(), port))
            })
            .collect();
        let mut decoders: HashMap<(ConnId, bool), Decoder> = HashMap::new();
        let mut events = Vec::new();
        let mut sink = |tap: crate::tap::Tap| {
            let server = (tap.conn.server.ip().to_string(), tap.conn.server.port());
            if !sensor_hosts.contains(&server) {
                return;
            }
            match tap.event {
                TapEvent::Data { dir, bytes, .. } => {
                    let key = (tap.conn.id, dir == Direction::Request);
                    let decoder = decoders.entry(key).or_insert_with(|| Decoder::new(dir));
                    events.clear();
                    decoder.decode(bytes, &mut events);
                    for e in &events {
                        match e {
                            Event::RequestHead(h) => {
                                note(&mut out.user_agents, &h.headers, "User-Agent")
                            }
                            Event::ResponseHead(h) => {
                                note(&mut out.servers, &h.headers, "Server");
                                note(&mut out.services, &h.headers, "Service");
                            }
                            _ => {}
                        }
                    }
                }
                TapEvent::Finished => {
                    decoders.remove(&(tap.conn.id, true));
                    decoders.remove(&(tap.conn.id, false));
                }
                _ => {}
            }
        };
        match read_captures(&scanned, &AnalyzeOptions::with_ports(&ports), &mut sink) {
            Ok(_) => out.scanned = true,
            Err(e) => out.error = Some(e.to_string()),
        }
        out
    }
}
