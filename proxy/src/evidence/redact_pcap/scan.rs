//! Pass 1 of redaction: the capture reader reassembles every ICAP flow,
//! and per direction the codec's decoder finds the heads (their changes
//! come from [`super::heads`]) and its body planner the body bytes past
//! the preview (RFC 3507 section 4.5: what the client sent before
//! `0\r\n\r\n` or `0; ieof`; response bodies entirely).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use icap_codec::body_plan::{BodyKeep, BodyPlanner};
use icap_codec::{Decoder, Direction, Event};

use super::heads;
use super::stream_plan::{CapturePlan, StreamPlan};
use crate::analyze::{read_captures, AnalyzeOptions};
use crate::evidence::pseudonym::Pseudonyms;
use crate::evidence::redact::Secrets;
use crate::evidence::EvidenceError;
use crate::tap::TapEvent;

/// Recent stream bytes kept per direction to read heads back (a head is at
/// most 64 KiB by the codec's limits).
const WINDOW: usize = 256 * 1024;

/// Pass 1's state for one direction.
pub(super) struct StreamScan {
    decoder: Decoder,
    window: Vec<u8>,
    window_start: u64,
    next: u64,
    bodies: BodyPlanner,
    plan: StreamPlan,
}

impl StreamScan {
    fn new(dir: Direction) -> Self {
        StreamScan {
            decoder: Decoder::new(dir),
            window: Vec::new(),
            window_start: 0,
            next: 0,
            bodies: BodyPlanner::new(BodyKeep::Preview),
            plan: StreamPlan::default(),
        }
    }

    fn head_bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset.checked_sub(self.window_start)?).ok()?;
        self.window.get(start..start + usize::try_from(len).ok()?)
    }

    fn data(
        &mut self,
        offset: u64,
        bytes: Bytes,
        secrets: &mut Secrets,
        pseudonyms: Option<&mut Pseudonyms>,
    ) {
        if offset != self.next {
            self.window.clear();
            self.window_start = offset;
            let mut ignored = Vec::new();
            if offset > self.next {
                self.decoder.gap(offset - self.next, &mut ignored);
            }
            self.bodies.gap();
        }
        self.window.extend_from_slice(&bytes);
        self.next = offset + bytes.len() as u64;
        let mut events = Vec::new();
        self.decoder.decode(bytes, &mut events);
        let mut pseudonyms = pseudonyms;
        for e in &events {
            match e {
                Event::RequestHead(h) => {
                    self.scan_head(h.offset, h.head_len, secrets, pseudonyms.as_deref_mut())
                }
                Event::ResponseHead(h) => {
                    self.scan_head(h.offset, h.head_len, secrets, pseudonyms.as_deref_mut())
                }
                Event::HttpHead(h) => {
                    self.scan_head(h.offset, h.len, secrets, pseudonyms.as_deref_mut())
                }
                _ => {}
            }
            if let Some(cut) = self.bodies.event(e) {
                self.plan.cuts.push(cut);
            }
        }
        if self.window.len() > 2 * WINDOW {
            let drop = self.window.len() - WINDOW;
            self.window.drain(..drop);
            self.window_start += drop as u64;
        }
    }

    /// Plans the patches of the head at `offset`, `len` bytes long.
    fn scan_head(
        &mut self,
        offset: u64,
        len: u64,
        secrets: &mut Secrets,
        pseudonyms: Option<&mut Pseudonyms>,
    ) {
        let Some(head) = self.head_bytes(offset, len) else {
            return;
        };
        let patches = heads::head_patches(offset, head, secrets, pseudonyms);
        self.plan.patches.extend(patches);
    }

    fn finish(mut self) -> StreamPlan {
        if let Some(start) = self.bodies.open_cut() {
            self.plan.cuts.push(start..u64::MAX);
        }
        self.plan
    }
}

/// Pass 1 over `captures` (read as one, in order): the secrets found in
/// heads and the plan of changes. `ports` are the ICAP ports to follow.
pub fn plan(
    captures: &[PathBuf],
    ports: &[u16],
    secrets: &mut Secrets,
    mut pseudonyms: Option<&mut Pseudonyms>,
) -> Result<CapturePlan, EvidenceError> {
    let mut scans: HashMap<(u64, bool), (SocketAddr, SocketAddr, StreamScan)> = HashMap::new();
    let mut order: Vec<(u64, bool)> = Vec::new();
    let mut done: Vec<(SocketAddr, SocketAddr, StreamPlan)> = Vec::new();
    let mut sink = |tap: crate::tap::Tap| match tap.event {
        TapEvent::Data { dir, offset, bytes } => {
            let key = (tap.conn.id, dir == Direction::Request);
            let (from, to) = match dir {
                Direction::Request => (tap.conn.client, tap.conn.server),
                Direction::Response => (tap.conn.server, tap.conn.client),
            };
            let entry = scans.entry(key).or_insert_with(|| {
                order.push(key);
                (from, to, StreamScan::new(dir))
            });
            entry
                .2
                .data(offset, bytes, secrets, pseudonyms.as_deref_mut());
        }
        TapEvent::Finished => {
            for req in [true, false] {
                if let Some((from, to, scan)) = scans.remove(&(tap.conn.id, req)) {
                    done.push((from, to, scan.finish()));
                }
            }
        }
        _ => {}
    };
    // Every leg: the sensor leg of icaptap's capture holds the same
    // secrets as the client leg.
    let opts = AnalyzeOptions::with_ports(ports).both_icaptap_legs();
    read_captures(captures, &opts, &mut sink).map_err(|e| EvidenceError::Capture {
        path: captures.first().cloned().unwrap_or_default(),
        offset: 0,
        detail: e.to_string(),
    })?;
    for key in order {
        if let Some((from, to, scan)) = scans.remove(&key) {
            done.push((from, to, scan.finish()));
        }
    }
    let mut out = CapturePlan::default();
    for (from, to, plan) in done {
        out.streams.entry((from, to)).or_default().push(plan);
    }
    Ok(out)
}
