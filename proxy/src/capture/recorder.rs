//! The recorder's state machine: turns taps into synthesized TCP segments
//! on each recorded leg, holds them back briefly so late annotations can
//! still land on the packet that carries their byte, and hands them to the
//! capture writer.
//!
//! How taps map onto the capture (the TCP side of RFC 3507 section 4.3):
//! - `Open`: a three-way handshake on each leg (the sensor leg from icaptap's
//!   upstream socket). `ConnectFailed`: the client leg's handshake and
//!   icaptap's FIN to the client; on the sensor leg a SYN answered by RST.
//! - `Data`: segments of at most one MSS with `seq` derived from the stream
//!   offset, each acknowledging everything the other side sent, and a pure
//!   ACK from the receiver after each read (and every [`ACK_EVERY`] segments)
//!   so Wireshark never sees unacknowledged or "ACKed unseen" data. A tap that
//!   starts past what was recorded (the queue dropped taps) advances the
//!   sequence numbers by the gap, which Wireshark shows as lost segments.
//! - `Pending{dir, sent}` (a write icaptap could not finish at once):
//!   the receiving leg of `dir` (the sensor leg for requests, the client
//!   leg for responses) is drawn with the next `Data` tap's bytes only up to
//!   `sent`; the rest waits for `Sent{dir, upto}` (drawn then, when the
//!   receiver took them) or `Undelivered` (never drawn: those bytes were
//!   read on the sending leg, which shows them, but never crossed the
//!   receiving leg). The receiving leg acknowledges, closes and resets at
//!   its own position. A write that succeeds whole at once, the usual case,
//!   comes as its `Data` tap alone and is drawn on both legs at once.
//! - `Closed{dir, how}`: a FIN from the sender of `dir` (acknowledged by
//!   the other side) on both legs; `Reset` is an RST instead and ends the
//!   legs. `IcaptapReset` (the other side went away and icaptap cut this
//!   stream on its behalf) is an RST against the direction on both legs:
//!   the other side's own on its leg, icaptap's on the sender's leg.
//!   `Timeout` and `Shutdown` (icaptap closed it) are shown as a FIN of
//!   that stream: who closed is in connections.jsonl.
//! - `Finished`: a FIN for any stream still open, then the state is dropped.
//!
//! Annotations are placed on the frames held back when they can be; where
//! the others go is [`super::placement`]'s.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::annotate::Annotation;
use super::body::BodyCutter;
use super::hold::{Held, HoldBack, IdHash};
use super::packet::{checksum, TcpFlags};
use super::placement::{ConnNotes, EarlyNotes};
use super::synth::{stand_in_local, Flow, Leg, SynthError, SynthFrame};
use super::writer::CaptureWriter;
use super::{PcapFormat, RecordCounters, RecordOptions};
use crate::tap::{CloseKind, ConnId, ConnMeta, Direction, Tap, TapEvent};

/// A receiver acknowledges at least once per this many data segments.
pub const ACK_EVERY: usize = 32;
/// Room for the headers of any synthesized frame: Ethernet, IPv6 and TCP
/// with the SYN's options.
const MAX_HEADERS: usize = 14 + 40 + 28;

const DIRS: [Direction; 2] = [Direction::Request, Direction::Response];

/// What the recorder knows of one connection.
#[derive(Debug)]
struct ConnState {
    /// Per leg; `None` when the leg is not recorded or was reset.
    flows: [Option<Flow>; 2],
    /// Next stream offset per direction.
    next: [u64; 2],
    /// Whether a FIN was written per direction (it takes one sequence number).
    fin: [bool; 2],
    cutters: [Option<BodyCutter>; 2],
    /// Per direction, while its receiving leg has not taken all that was
    /// read (a slow or failed write); `None` when it has.
    delivery: [Option<Delivery>; 2],
    /// Notes waiting for their packet.
    notes: ConnNotes,
}

/// How far the receiving leg of one direction got, when it lags behind
/// what icaptap read.
#[derive(Debug)]
struct Delivery {
    /// Stream offset up to which the receiving leg took the bytes.
    sent: u64,
    /// Bytes past `sent` that were read but not yet written.
    waiting: Option<Waiting>,
}

/// Bytes of a `Data` tap not yet drawn on the receiving leg.
#[derive(Debug)]
struct Waiting {
    /// Stream offset of `bytes[0]`.
    offset: u64,
    bytes: Bytes,
    /// The body cuts of the tap (the cutter saw these bytes once already).
    cuts: Vec<Range<u64>>,
}

/// The leg `dir`'s bytes are written to: the sensor leg for requests, the
/// client leg for responses.
fn receiving_leg(dir: Direction) -> usize {
    match dir {
        Direction::Request => Leg::Sensor.index(),
        Direction::Response => Leg::Client.index(),
    }
}

impl ConnState {
    /// How much of `dir`'s stream leg `slot` carries.
    fn pos(&self, slot: usize, dir: Direction) -> u64 {
        let i = dir.index();
        match &self.delivery[i] {
            Some(d) if slot == receiving_leg(dir) => d.sent.min(self.next[i]),
            _ => self.next[i],
        }
    }

    /// The acknowledgement number the receiver of `dir` sends on `flow`
    /// (leg `slot`).
    fn ack_of(&self, slot: usize, flow: &Flow, dir: Direction) -> u32 {
        let i = dir.index();
        flow.seq(dir, self.pos(slot, dir))
            .wrapping_add(self.fin[i] as u32)
    }
}

/// Turns taps into frames and writes them.
#[derive(Debug)]
pub(crate) struct Recorder {
    opts: RecordOptions,
    conns: HashMap<ConnId, ConnState, IdHash>,
    highest_conn: ConnId,
    early: EarlyNotes,
    /// Frames of the tap being handled, before they are held.
    out: Vec<Held>,
    held: HoldBack,
    cuts: Vec<Range<u64>>,
    /// Payload sums of the segments of the tap being handled, by stream
    /// range: both legs usually cut a tap the same way and share them.
    sums: Vec<(u64, u64, u16)>,
    /// When the tap being handled arrived (the hold-back clock).
    now: Instant,
    writer: CaptureWriter,
    counters: Arc<RecordCounters>,
    last_flush: Instant,
    last_synth_warning: Option<Instant>,
}

impl Recorder {
    pub fn new(opts: RecordOptions, writer: CaptureWriter, counters: Arc<RecordCounters>) -> Self {
        Recorder {
            opts,
            conns: HashMap::default(),
            highest_conn: 0,
            early: EarlyNotes::default(),
            out: Vec::new(),
            held: HoldBack::default(),
            cuts: Vec::new(),
            sums: Vec::new(),
            now: Instant::now(),
            writer,
            counters,
            last_flush: Instant::now(),
            last_synth_warning: None,
        }
    }

    fn holds_back(&self) -> bool {
        self.opts.format == PcapFormat::Pcapng && !self.opts.hold.is_zero()
    }

    /// Handles one tap.
    pub fn on_tap(&mut self, tap: Tap) {
        let id = tap.conn.id;
        self.now = Instant::now();
        self.highest_conn = self.highest_conn.max(id);
        match tap.event {
            TapEvent::Open => self.open(&tap.conn, tap.at, true),
            TapEvent::ConnectFailed { .. } => self.connect_failed(&tap.conn, tap.at),
            TapEvent::Data { dir, offset, bytes } => {
                self.ensure(&tap.conn, tap.at);
                self.data(id, dir, offset, bytes, tap.at);
            }
            TapEvent::Pending { dir, sent } => {
                self.ensure(&tap.conn, tap.at);
                self.pending(id, dir, sent, tap.at);
            }
            TapEvent::Sent { dir, upto } => self.sent(id, dir, upto, tap.at),
            TapEvent::Undelivered { dir, offset, .. } => self.undelivered(id, dir, offset),
            // The recorder sees its own losses by their offsets; the TLS
            // of a run is said once, in the capture's comment.
            TapEvent::Lost { .. } | TapEvent::Tls(_) => {}
            TapEvent::Closed { dir, how } => {
                self.ensure(&tap.conn, tap.at);
                self.closed(id, dir, how, tap.at);
            }
            TapEvent::Finished => {
                if let Some(st) = self.conns.get_mut(&id) {
                    // A write whose end was never reported: not drawn.
                    for d in st.delivery.iter_mut().flatten() {
                        d.waiting = None;
                    }
                }
                if self.conns.contains_key(&id) {
                    for dir in DIRS {
                        self.closed(id, dir, CloseKind::Fin, tap.at);
                    }
                    if let Some(st) = self.conns.remove(&id) {
                        // Notes for bytes that never came go on the last packet.
                        let (placed, lost) = st.notes.close(self.held.newest_of(id));
                        self.counters
                            .annotations
                            .fetch_add(placed, Ordering::Relaxed);
                        self.counters
                            .annotations_dropped
                            .fetch_add(lost, Ordering::Relaxed);
                    }
                }
            }
        }
        self.release(false);
    }

    /// Periodic work when taps are quiet: release aged frames, flush the file.
    pub fn tick(&mut self) {
        self.release(false);
        if self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.writer.flush();
            self.last_flush = Instant::now();
        }
    }

    /// Writes everything held and closes the file.
    pub fn finish(&mut self) {
        let unplaced = self.early.len()
            + self
                .conns
                .values()
                .map(|st| st.notes.pending())
                .sum::<usize>();
        self.counters
            .annotations_dropped
            .fetch_add(unplaced as u64, Ordering::Relaxed);
        self.release(true);
        self.writer.finish();
    }

    /// Attaches `note` to the packet carrying its byte, or keeps it for later.
    pub fn annotate(&mut self, note: Annotation) {
        if self.opts.format != PcapFormat::Pcapng {
            return;
        }
        if self
            .held
            .annotate(note.conn, note.dir, note.offset, &note.comment)
        {
            self.counters.annotations.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(st) = self.conns.get_mut(&note.conn) {
            let next = st.next[note.dir.index()];
            st.notes.keep(note, next);
        } else if note.conn <= self.highest_conn || !self.early.offer(note) {
            // A connection already finished, or too many waiting.
            self.counters
                .annotations_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn new_state(&mut self, meta: &ConnMeta) -> ConnState {
        let legs = self.opts.legs;
        let mtu = self.opts.mtu;
        let client = legs
            .includes(Leg::Client)
            .then(|| Flow::new(Leg::Client, meta.client, meta.listen, meta.id * 2, mtu));
        let local = meta
            .upstream_local
            .unwrap_or_else(|| stand_in_local(meta.listen, meta.server, meta.id));
        let sensor = legs
            .includes(Leg::Sensor)
            .then(|| Flow::new(Leg::Sensor, local, meta.server, meta.id * 2 + 1, mtu));
        let cutter = |dir| BodyCutter::new(dir, self.opts.body, self.opts.body_preview_bytes);
        let notes = ConnNotes::waiting(self.early.take(meta.id));
        ConnState {
            flows: [client, sensor],
            next: [0, 0],
            fin: [false, false],
            cutters: [cutter(Direction::Request), cutter(Direction::Response)],
            delivery: [None, None],
            notes,
        }
    }

    /// State for a connection whose `Open` never arrived: recorded from the
    /// middle, without a handshake, as tcpdump started late would show it.
    fn ensure(&mut self, meta: &ConnMeta, at: u64) {
        if !self.conns.contains_key(&meta.id) {
            self.open(meta, at, false);
        }
    }

    fn open(&mut self, meta: &ConnMeta, at: u64, handshake: bool) {
        let st = self.new_state(meta);
        if handshake {
            for flow in st.flows.iter().flatten() {
                let (req, resp) = (
                    flow.after_syn(Direction::Request),
                    flow.after_syn(Direction::Response),
                );
                self.push(meta.id, |o| flow.syn(Direction::Request, None, at, o));
                self.push(meta.id, |o| flow.syn(Direction::Response, Some(req), at, o));
                self.push(meta.id, |o| {
                    flow.segment(Direction::Request, req, resp, ACK, &[], at, o)
                });
            }
        }
        self.conns.insert(meta.id, st);
        self.commit(meta.id);
    }

    fn connect_failed(&mut self, meta: &ConnMeta, at: u64) {
        let mut st = self.new_state(meta);
        if let Some(flow) = &st.flows[Leg::Client.index()] {
            let (req, resp) = (
                flow.after_syn(Direction::Request),
                flow.after_syn(Direction::Response),
            );
            let fin = TcpFlags { fin: true, ..ACK };
            let id = meta.id;
            self.push(id, |o| flow.syn(Direction::Request, None, at, o));
            self.push(id, |o| flow.syn(Direction::Response, Some(req), at, o));
            self.push(id, |o| {
                flow.segment(Direction::Request, req, resp, ACK, &[], at, o)
            });
            self.push(id, |o| {
                flow.segment(Direction::Response, resp, req, fin, &[], at, o)
            });
            self.push(id, |o| {
                let ack = resp.wrapping_add(1);
                flow.segment(Direction::Request, req, ack, ACK, &[], at, o)
            });
            st.fin[Direction::Response.index()] = true;
        }
        if let Some(flow) = st.flows[Leg::Sensor.index()].take() {
            let rst = TcpFlags { rst: true, ..ACK };
            let req = flow.after_syn(Direction::Request);
            self.push(meta.id, |o| flow.syn(Direction::Request, None, at, o));
            self.push(meta.id, |o| {
                flow.segment(Direction::Response, 0, req, rst, &[], at, o)
            });
        }
        self.conns.insert(meta.id, st);
        self.commit(meta.id);
    }

    fn data(&mut self, id: ConnId, dir: Direction, offset: u64, mut bytes: Bytes, at: u64) {
        let Some(mut st) = self.conns.remove(&id) else {
            return;
        };
        let i = dir.index();
        let mut offset = offset;
        if offset > st.next[i] {
            let gap = offset - st.next[i];
            self.counters
                .dropped_bytes
                .fetch_add(gap, Ordering::Relaxed);
            if let Some(c) = st.cutters[i].as_mut() {
                c.gap(gap);
            }
            st.next[i] = offset;
        } else if offset < st.next[i] {
            // Bytes already recorded (a repeated tap): keep only the new part.
            let seen = (st.next[i] - offset).min(bytes.len() as u64);
            bytes = bytes.slice(seen as usize..);
            offset += seen;
        }
        if bytes.is_empty() || st.fin[i] {
            self.conns.insert(id, st);
            return;
        }
        let end = offset + bytes.len() as u64;
        self.cuts.clear();
        if let Some(c) = st.cutters[i].as_mut() {
            c.cuts(offset, &bytes, &mut self.cuts);
        }
        let cuts = std::mem::take(&mut self.cuts);
        let mut sums = std::mem::take(&mut self.sums);
        sums.clear();
        let out = receiving_leg(dir);
        for slot in 0..2 {
            let mut hi = end;
            if slot == out && st.flows[slot].is_some() {
                if let Some(d) = st.delivery[i].as_mut() {
                    // Only what the receiving leg took so far; the rest waits.
                    hi = d.sent.clamp(offset, end);
                    if hi < end {
                        d.waiting = Some(Waiting {
                            offset: hi,
                            bytes: bytes.slice((hi - offset) as usize..),
                            cuts: cuts.iter().filter(|c| c.end > hi).cloned().collect(),
                        });
                    }
                }
            }
            let first_leg = sums.is_empty();
            let span = Span {
                dir,
                offset,
                bytes: &bytes,
                range: offset..hi,
                cuts: &cuts,
                at,
            };
            self.draw(id, &st, slot, span, &mut sums, first_leg);
        }
        self.cuts = cuts;
        self.sums = sums;
        st.next[i] = end;
        self.conns.insert(id, st);
        self.commit(id);
    }

    /// Draws stream bytes `span.range` of `span.dir` on leg `slot` (when it
    /// is recorded): segments of at most one MSS, cut where the body
    /// cutter said, each acknowledged. `sums` caches payload sums by
    /// stream range between the legs (`record`: this leg fills it).
    fn draw(
        &mut self,
        id: ConnId,
        st: &ConnState,
        slot: usize,
        span: Span<'_>,
        sums: &mut Vec<(u64, u64, u16)>,
        record: bool,
    ) {
        let Some(flow) = &st.flows[slot] else {
            return;
        };
        let Span {
            dir,
            offset,
            bytes,
            range,
            cuts,
            at,
        } = span;
        let end = range.end;
        let ack = st.ack_of(slot, flow, dir.opposite());
        let mut pos = range.start;
        let mut since_ack = 0;
        // The next of the sums of an earlier leg that may fit.
        let mut known = 0;
        while pos < end {
            let cut = cuts.iter().find(|c| c.end > pos);
            let (seg_end, is_cut) = match cut {
                Some(c) if c.start <= pos => (c.end, true),
                Some(c) => (c.start, false),
                None => (end, false),
            };
            let seg_end = seg_end.min(end).min(pos + flow.mss() as u64);
            let (from, to) = ((pos - offset) as usize, (seg_end - offset) as usize);
            let Some(payload) = bytes.get(from..to) else {
                return;
            };
            let flags = TcpFlags {
                psh: seg_end == end,
                ..ACK
            };
            while known < sums.len() && sums[known].0 < pos {
                known += 1;
            }
            let sum = match sums.get(known) {
                Some(&(s, e, sum)) if s == pos && e == seg_end => sum,
                _ => {
                    let sum = checksum::payload_sum(payload);
                    if record {
                        sums.push((pos, seg_end, sum));
                    }
                    sum
                }
            };
            let seq = flow.seq(dir, pos);
            self.push_data(id, Some(dir), pos..seg_end, payload.len(), |o| {
                flow.build(dir, seq, ack, flags, payload, sum, !is_cut, at, o)
            });
            pos = seg_end;
            since_ack += 1;
            if since_ack == ACK_EVERY || pos == end {
                since_ack = 0;
                // The receiver's own position is what the sender acknowledges.
                let acked = flow.seq(dir, pos);
                self.push(id, |o| {
                    flow.segment(dir.opposite(), ack, acked, ACK, &[], at, o)
                });
            }
        }
    }

    /// A write of `dir` did not finish at once: its receiving leg has the
    /// stream up to `sent` so far.
    fn pending(&mut self, id: ConnId, dir: Direction, sent: u64, at: u64) {
        // An earlier write's end that never came: what it had is drawn.
        self.sent(id, dir, sent, at);
        if let Some(st) = self.conns.get_mut(&id) {
            st.delivery[dir.index()] = Some(Delivery {
                sent,
                waiting: None,
            });
        }
    }

    /// The write of `dir` got its bytes up to `upto` to the receiving leg:
    /// draws what waited for it, at `at`.
    fn sent(&mut self, id: ConnId, dir: Direction, upto: u64, at: u64) {
        let Some(mut st) = self.conns.remove(&id) else {
            return;
        };
        let i = dir.index();
        if let Some(mut d) = st.delivery[i].take() {
            if let Some(w) = d.waiting.take() {
                let w_end = w.offset + w.bytes.len() as u64;
                let hi = upto.clamp(w.offset, w_end);
                let mut sums = Vec::new();
                let span = Span {
                    dir,
                    offset: w.offset,
                    bytes: &w.bytes,
                    range: w.offset..hi,
                    cuts: &w.cuts,
                    at,
                };
                self.draw(id, &st, receiving_leg(dir), span, &mut sums, false);
                if hi < w_end {
                    d.waiting = Some(Waiting {
                        offset: hi,
                        bytes: w.bytes.slice((hi - w.offset) as usize..),
                        cuts: w.cuts,
                    });
                }
            }
            d.sent = d.sent.max(upto);
            // Caught up: the receiving leg follows the stream again.
            if d.waiting.is_some() || d.sent < st.next[i] {
                st.delivery[i] = Some(d);
            }
        }
        self.conns.insert(id, st);
        self.commit(id);
    }

    /// Stream bytes of `dir` from `offset` on never reached the receiving
    /// leg: they are not drawn on it, ever.
    fn undelivered(&mut self, id: ConnId, dir: Direction, offset: u64) {
        let Some(st) = self.conns.get_mut(&id) else {
            return;
        };
        let d = st.delivery[dir.index()].get_or_insert(Delivery {
            sent: offset,
            waiting: None,
        });
        d.sent = d.sent.min(offset);
        d.waiting = None;
    }

    fn closed(&mut self, id: ConnId, dir: Direction, how: CloseKind, at: u64) {
        let Some(mut st) = self.conns.remove(&id) else {
            return;
        };
        let i = dir.index();
        if !st.fin[i] {
            for slot in 0..2 {
                let Some(flow) = &st.flows[slot] else {
                    continue;
                };
                let seq = flow.seq(dir, st.pos(slot, dir));
                let ack = st.ack_of(slot, flow, dir.opposite());
                if how == CloseKind::IcaptapReset {
                    // The sender did not end its stream: the other side
                    // went away. On the other side's leg its reset (when
                    // not drawn yet), on the sender's leg icaptap's: both
                    // go against `dir`.
                    let back = dir.opposite();
                    let seq = st.ack_of(slot, flow, back);
                    let ack = flow.seq(dir, st.pos(slot, dir));
                    let rst = TcpFlags { rst: true, ..ACK };
                    self.push(id, |o| flow.segment(back, seq, ack, rst, &[], at, o));
                    st.flows[slot] = None;
                } else if how == CloseKind::Reset {
                    let rst = TcpFlags { rst: true, ..ACK };
                    self.push(id, |o| flow.segment(dir, seq, ack, rst, &[], at, o));
                    st.flows[slot] = None;
                } else {
                    let fin = TcpFlags { fin: true, ..ACK };
                    self.push(id, |o| flow.segment(dir, seq, ack, fin, &[], at, o));
                    let after = seq.wrapping_add(1);
                    self.push(id, |o| {
                        flow.segment(dir.opposite(), ack, after, ACK, &[], at, o)
                    });
                }
            }
            st.fin[i] = true;
        }
        self.conns.insert(id, st);
        self.commit(id);
    }

    /// Builds a frame without stream bytes (handshake, ACK, FIN, RST).
    fn push(
        &mut self,
        conn: ConnId,
        build: impl FnOnce(&mut Vec<u8>) -> Result<SynthFrame, SynthError>,
    ) {
        self.push_data(conn, None, 0..0, 0, build);
    }

    /// Builds a frame carrying stream bytes `range` of `dir` (`payload`
    /// bytes long) straight into the hold-back buffer, and keeps it with
    /// the other frames of the tap.
    fn push_data(
        &mut self,
        conn: ConnId,
        dir: Option<Direction>,
        range: Range<u64>,
        payload: usize,
        build: impl FnOnce(&mut Vec<u8>) -> Result<SynthFrame, SynthError>,
    ) {
        let arena = self.held.arena();
        let chunk = arena.room(MAX_HEADERS + payload);
        let start = chunk.len();
        let frame = build(chunk);
        let bytes = arena.span(start);
        match frame {
            Ok(frame) => self.out.push(Held {
                conn,
                dir,
                range,
                since: self.now,
                frame,
                bytes,
            }),
            Err(e) => {
                self.counters
                    .unwritten_bytes
                    .fetch_add(range.end - range.start, Ordering::Relaxed);
                if self
                    .last_synth_warning
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    self.last_synth_warning = Some(Instant::now());
                    tracing::warn!("{e}");
                }
            }
        }
    }

    /// Attaches pending notes of connection `id` to the frames just made
    /// and moves them into the hold-back buffer.
    fn commit(&mut self, id: ConnId) {
        let mut out = std::mem::take(&mut self.out);
        if let Some(st) = self.conns.get_mut(&id) {
            let next = st.next;
            let attached = st.notes.attach(&mut out, |dir| next[dir.index()]);
            self.counters
                .annotations
                .fetch_add(attached, Ordering::Relaxed);
        }
        // Every frame of this tap ends at or before the tap's end; notes
        // searching the hold-back buffer stop at the previous tap.
        let mut tap_end = [0u64; 2];
        for h in &out {
            if let Some(dir) = h.dir {
                let end = &mut tap_end[dir.index()];
                *end = (*end).max(h.range.end);
            }
        }
        for h in out.drain(..) {
            let end = h.dir.map_or(0, |d| tap_end[d.index()]);
            self.held.push(h, end);
        }
        self.out = out;
    }

    /// Writes held frames that are old enough, or all of them.
    fn release(&mut self, all: bool) {
        let hold = if self.holds_back() {
            self.opts.hold
        } else {
            Duration::ZERO
        };
        // One look at the clock per call, not per frame.
        let mut now = None;
        while let Some(front) = self.held.front() {
            let due = all
                || hold.is_zero()
                || self.held.bytes() > self.opts.hold_bytes
                || now
                    .get_or_insert_with(Instant::now)
                    .saturating_duration_since(front.since)
                    >= hold;
            if !due {
                break;
            }
            if let Some((h, bytes)) = self.held.pop_front() {
                self.writer.write(&h.frame, bytes);
            }
        }
        self.held.settle();
    }
}

const ACK: TcpFlags = TcpFlags::ACK;

/// Stream bytes of one tap to draw on one leg.
struct Span<'a> {
    dir: Direction,
    /// Stream offset of `bytes[0]`.
    offset: u64,
    bytes: &'a Bytes,
    /// The part of the stream drawn.
    range: Range<u64>,
    cuts: &'a [Range<u64>],
    at: u64,
}
