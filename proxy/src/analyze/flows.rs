//! The flow table: which captured TCP connections are ICAP, which end is the
//! client, and how each connection's packets become taps (Open, Data,
//! Closed, Finished) through two [`HalfStream`]s.
//!
//! A flow is ICAP when either port is in the ICAP port set (RFC 3507
//! section 4.2: 1344 by default), or when its first payload is ICAP
//! (`discovery.rs`: the server's port then joins the set). The server is
//! the end whose port is in the set; when both are, the destination of the
//! SYN (or of the first packet seen) is. Memory is bounded: out-of-order bytes per direction and
//! in total, the number of flows, and idle flows expire (on capture time).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::tap::{ConnId, ConnMeta, Direction, Micros, Tap, TapEvent};

use super::discovery::{Discovery, Look};
use super::frames::Frame;
use super::reassembly::{HalfStream, Incoming, Origin, ReassemblyStats, StreamOutput};
use super::segment::{self, NotTcp, TcpSegment};
use crate::capture::packet::link;

/// Bounds on what the flow table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Out-of-order bytes one direction may hold before the hole in front
    /// of them is skipped.
    pub max_pending_per_direction: usize,
    /// Out-of-order bytes all flows together may hold; past it, the flow
    /// that grew skips its holes.
    pub max_pending_total: usize,
    /// Flows tracked at once; past it, finished flows and then the least
    /// recently active ones are dropped (ended with `Finished`).
    pub max_flows: usize,
    /// A flow with no packet for this long (capture time) is ended with
    /// `Finished`; a later packet starts a new flow mid-connection.
    pub idle_timeout: Micros,
    /// How long a finished flow is remembered, so stray packets after its
    /// end (last ACKs, retransmitted FINs) do not start a new flow.
    pub finished_linger: Micros,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            max_pending_per_direction: 4 * 1024 * 1024,
            max_pending_total: 256 * 1024 * 1024,
            max_flows: 100_000,
            idle_timeout: 15 * 60 * 1_000_000,
            finished_linger: 2 * 60 * 1_000_000,
        }
    }
}

/// How often (capture time) idle flows are looked for.
const SWEEP_INTERVAL: Micros = 10 * 1_000_000;

/// What the flow table saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Frames handed in.
    pub frames: u64,
    /// Frames that carry no IP packet (ARP, LLDP, too short...).
    pub not_ip: u64,
    /// IP fragments (not reassembled).
    pub ip_fragments: u64,
    /// IP packets that are not TCP on an ICAP port.
    pub other_traffic: u64,
    /// TCP packets on an ICAP port.
    pub icap_packets: u64,
    /// Flows found (connection ids handed out).
    pub flows: u64,
    /// Flows ended because they were idle too long.
    pub flows_expired: u64,
    /// Flows ended because the flow table was full.
    pub flows_evicted: u64,
    /// Packets of a flow that had already finished (ignored).
    pub packets_after_finish: u64,
    /// Packets on the sensor leg of one of icaptap's own captures: the
    /// client leg's bytes again, not decoded a second time.
    pub icaptap_sensor_leg_packets: u64,
    /// Reassembly counts over all flows.
    pub reassembly: ReassemblyStats,
}

/// A connection's two ends: (client, server).
type FlowKey = (SocketAddr, SocketAddr);

/// A multiply-rotate hasher (the rustc "Fx" scheme) for flow keys: the
/// table is looked up once or twice per packet, and SipHash showed in
/// profiles. Keys come from a capture file, not from a live attacker, so
/// flooding resistance buys nothing here.
#[derive(Debug, Default, Clone, Copy)]
struct FlowHasher(u64);

impl std::hash::Hasher for FlowHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, word: u32) {
        self.write_u64(u64::from(word));
    }

    fn write_u16(&mut self, word: u16) {
        self.write_u64(u64::from(word));
    }

    fn write_u8(&mut self, word: u8) {
        self.write_u64(u64::from(word));
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FlowMap = HashMap<FlowKey, Flow, std::hash::BuildHasherDefault<FlowHasher>>;

#[derive(Debug, PartialEq, Eq)]
enum FlowState {
    Active,
    /// Both directions ended and `Finished` was sent.
    Finished,
}

#[derive(Debug)]
struct Flow {
    meta: Arc<ConnMeta>,
    request: HalfStream,
    response: HalfStream,
    state: FlowState,
    client_isn: Option<u32>,
    last: Origin,
}

impl Flow {
    fn pending_bytes(&self) -> usize {
        self.request.pending_bytes() + self.response.pending_bytes()
    }
}

/// Captured TCP flows on ICAP ports, turned into taps.
#[derive(Debug)]
pub struct FlowTable {
    ports: BTreeSet<u16>,
    limits: FlowLimits,
    flows: FlowMap,
    next_id: ConnId,
    stats: FlowStats,
    pending_total: usize,
    last_sweep: Micros,
    discovery: Discovery,
    discover: bool,
    skip_sensor_leg: bool,
}

fn tap(meta: &Arc<ConnMeta>, origin: Origin, event: TapEvent) -> Tap {
    Tap {
        conn: meta.clone(),
        at: origin.at,
        frame: Some(origin.frame),
        event,
    }
}

fn stream_tap(meta: &Arc<ConnMeta>, dir: Direction, output: StreamOutput) -> Tap {
    match output {
        StreamOutput::Data {
            offset,
            bytes,
            origin,
        } => tap(meta, origin, TapEvent::Data { dir, offset, bytes }),
        StreamOutput::Closed { how, origin } => tap(meta, origin, TapEvent::Closed { dir, how }),
    }
}

impl FlowTable {
    /// An empty table watching `ports`.
    pub fn new(ports: BTreeSet<u16>, limits: FlowLimits) -> Self {
        FlowTable {
            ports,
            limits,
            flows: FlowMap::default(),
            next_id: 1,
            stats: FlowStats::default(),
            pending_total: 0,
            last_sweep: 0,
            discovery: Discovery::default(),
            discover: true,
            skip_sensor_leg: true,
        }
    }

    /// What the table saw so far.
    pub fn stats(&self) -> &FlowStats {
        &self.stats
    }

    /// Whether flows on no ICAP port are looked at for ICAP (on by
    /// default).
    pub fn discover(&mut self, on: bool) {
        self.discover = on;
    }

    /// Whether the sensor leg of icaptap's own captures is skipped (on by
    /// default: its bytes are the client leg's again).
    pub fn skip_icaptap_sensor_leg(&mut self, on: bool) {
        self.skip_sensor_leg = on;
    }

    /// What the flows on no ICAP port showed (ports found to carry ICAP,
    /// the busiest other ports).
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// One captured frame.
    pub fn packet(&mut self, frame: &Frame<'_>, sink: &mut dyn FnMut(Tap)) {
        self.stats.frames += 1;
        if frame.icaptap_sensor_leg && self.skip_sensor_leg {
            self.stats.icaptap_sensor_leg_packets += 1;
            return;
        }
        self.tcp_packet(frame, sink);
    }

    /// One captured frame, already counted.
    fn tcp_packet(&mut self, frame: &Frame<'_>, sink: &mut dyn FnMut(Tap)) {
        let Some(ip) = link::ip_packet(frame.linktype, frame.data) else {
            self.stats.not_ip += 1;
            return;
        };
        let seg = match segment::tcp_segment(ip) {
            Ok(s) => s,
            Err(NotTcp::Fragment) => {
                self.stats.ip_fragments += 1;
                return;
            }
            Err(NotTcp::Other) => {
                self.stats.other_traffic += 1;
                return;
            }
        };
        let Some((key, dir)) = self.orient(&seg) else {
            if !self.discover {
                self.stats.other_traffic += 1;
                return;
            }
            match self.discovery.look(frame, &seg) {
                Look::Held => {}
                Look::NotIcap { dropped } => self.stats.other_traffic += 1 + dropped as u64,
                Look::Icap { server_port, held } => {
                    self.ports.insert(server_port);
                    for earlier in &held {
                        self.tcp_packet(&earlier.frame(), sink);
                    }
                    self.tcp_packet(frame, sink);
                }
            }
            return;
        };
        self.stats.icap_packets += 1;
        let origin = Origin {
            frame: frame.number,
            at: frame.at,
        };
        if frame.at >= self.last_sweep.saturating_add(SWEEP_INTERVAL) {
            self.last_sweep = frame.at;
            self.sweep(frame.at, sink);
        }
        let client_syn = seg.flags.syn && !seg.flags.ack && dir == Direction::Request;
        let known = self
            .flows
            .get(&key)
            .map(|f| (f.state == FlowState::Finished, f.client_isn));
        let fresh = match known {
            Some((true, _)) if !client_syn => {
                self.stats.packets_after_finish += 1;
                return;
            }
            Some((true, _)) => {
                self.flows.remove(&key);
                true
            }
            Some((false, Some(isn))) if client_syn && isn != seg.seq => {
                // Port reuse without a close the capture saw: a new
                // connection on the same addresses.
                self.end_flow(key, sink);
                self.flows.remove(&key);
                true
            }
            Some(_) => false,
            None => true,
        };
        if fresh {
            if self.flows.len() >= self.limits.max_flows {
                self.evict(sink);
            }
            self.open_flow(key, origin, sink);
        }
        self.feed(key, dir, &seg, frame.data, origin, sink);
    }

    /// End of input: every flow still open delivers what it holds and
    /// finishes, in connection-id order.
    pub fn finish(&mut self, sink: &mut dyn FnMut(Tap)) {
        self.stats.other_traffic += self.discovery.held_at_end() as u64;
        let mut keys: Vec<(ConnId, FlowKey)> = self
            .flows
            .iter()
            .filter(|(_, f)| f.state == FlowState::Active)
            .map(|(k, f)| (f.meta.id, *k))
            .collect();
        keys.sort_unstable();
        for (_, key) in keys {
            self.end_flow(key, sink);
        }
        self.flows.clear();
    }

    /// Which flow `seg` belongs to and which way it goes; `None` when no
    /// port is an ICAP port.
    fn orient(&self, seg: &TcpSegment<'_>) -> Option<(FlowKey, Direction)> {
        let src_icap = self.ports.contains(&seg.src.port());
        let dst_icap = self.ports.contains(&seg.dst.port());
        let to_server = ((seg.src, seg.dst), Direction::Request);
        let to_client = ((seg.dst, seg.src), Direction::Response);
        match (src_icap, dst_icap) {
            (false, false) => None,
            (false, true) => Some(to_server),
            (true, false) => Some(to_client),
            (true, true) => {
                if self.flows.contains_key(&to_server.0) {
                    Some(to_server)
                } else if self.flows.contains_key(&to_client.0) || (seg.flags.syn && seg.flags.ack)
                {
                    Some(to_client)
                } else {
                    Some(to_server)
                }
            }
        }
    }

    fn open_flow(&mut self, key: FlowKey, origin: Origin, sink: &mut dyn FnMut(Tap)) {
        let meta = Arc::new(ConnMeta {
            id: self.next_id,
            client: key.0,
            listen: key.1,
            upstream_local: None,
            server: key.1,
            opened: origin.at,
        });
        self.next_id += 1;
        self.stats.flows += 1;
        sink(tap(&meta, origin, TapEvent::Open));
        let per_dir = self.limits.max_pending_per_direction;
        self.flows.insert(
            key,
            Flow {
                meta,
                request: HalfStream::new(per_dir),
                response: HalfStream::new(per_dir),
                state: FlowState::Active,
                client_isn: None,
                last: origin,
            },
        );
    }

    fn feed(
        &mut self,
        key: FlowKey,
        dir: Direction,
        seg: &TcpSegment<'_>,
        frame_data: &Bytes,
        origin: Origin,
        sink: &mut dyn FnMut(Tap),
    ) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let before = flow.pending_bytes();
        flow.last = origin;
        if seg.flags.syn && dir == Direction::Request && !seg.flags.ack {
            flow.client_isn = Some(seg.seq);
        }
        let Flow {
            meta,
            request,
            response,
            ..
        } = flow;
        let (sender, receiver, back) = match dir {
            Direction::Request => (request, response, Direction::Response),
            Direction::Response => (response, request, Direction::Request),
        };
        let stats = &mut self.stats.reassembly;
        let mut fwd_out = |o: StreamOutput| sink(stream_tap(meta, dir, o));
        if seg.flags.rst {
            sender.reset(origin, stats, &mut fwd_out);
            let mut back_out = |o: StreamOutput| sink(stream_tap(meta, back, o));
            receiver.aborted(origin, stats, &mut back_out);
        } else {
            let mut seq = seg.seq;
            if seg.flags.syn {
                sender.syn(seg.seq);
                seq = seq.wrapping_add(1);
            }
            sender.segment(
                Incoming {
                    seq,
                    payload: frame_data.slice_ref(seg.payload),
                    fin: seg.flags.fin,
                    origin,
                },
                stats,
                &mut fwd_out,
            );
            if seg.flags.ack {
                let mut back_out = |o: StreamOutput| sink(stream_tap(meta, back, o));
                receiver.acked(seg.ack, origin, stats, &mut back_out);
            }
        }
        let after = flow.pending_bytes();
        if flow.request.is_closed() && flow.response.is_closed() {
            flow.state = FlowState::Finished;
            sink(tap(&flow.meta, origin, TapEvent::Finished));
        }
        self.pending_total = (self.pending_total + after).saturating_sub(before);
        if after > 0 && self.pending_total > self.limits.max_pending_total {
            self.stats.reassembly.forced_skips += 1;
            self.flush_flow(key, Some(origin), sink);
        }
    }

    /// Delivers what a flow holds, skipping its holes, without ending it.
    fn flush_flow(&mut self, key: FlowKey, at: Option<Origin>, sink: &mut dyn FnMut(Tap)) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let before = flow.pending_bytes();
        let Flow {
            meta,
            request,
            response,
            ..
        } = flow;
        let stats = &mut self.stats.reassembly;
        let now = at.map(|o| o.at);
        request.skip_all_holes(now, stats, &mut |o| {
            sink(stream_tap(meta, Direction::Request, o))
        });
        response.skip_all_holes(now, stats, &mut |o| {
            sink(stream_tap(meta, Direction::Response, o))
        });
        self.pending_total = self.pending_total.saturating_sub(before);
    }

    /// Ends an active flow whose packets stopped (end of input, expiry,
    /// eviction, port reuse): held bytes are delivered, then `Finished`.
    fn end_flow(&mut self, key: FlowKey, sink: &mut dyn FnMut(Tap)) {
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        if flow.state == FlowState::Finished {
            return;
        }
        let before = flow.pending_bytes();
        let Flow {
            meta,
            request,
            response,
            last,
            ..
        } = flow;
        let stats = &mut self.stats.reassembly;
        request.finish(stats, &mut |o| {
            sink(stream_tap(meta, Direction::Request, o))
        });
        response.finish(stats, &mut |o| {
            sink(stream_tap(meta, Direction::Response, o))
        });
        sink(tap(meta, *last, TapEvent::Finished));
        flow.state = FlowState::Finished;
        self.pending_total = self.pending_total.saturating_sub(before);
    }

    /// Ends flows idle longer than the idle timeout and forgets finished
    /// ones after their linger time.
    fn sweep(&mut self, now: Micros, sink: &mut dyn FnMut(Tap)) {
        let idle = self.limits.idle_timeout;
        let linger = self.limits.finished_linger;
        let mut stale: Vec<(ConnId, FlowKey, bool)> = self
            .flows
            .iter()
            .filter_map(|(k, f)| {
                let quiet = now.saturating_sub(f.last.at);
                match f.state {
                    FlowState::Active if quiet > idle => Some((f.meta.id, *k, true)),
                    FlowState::Finished if quiet > linger => Some((f.meta.id, *k, false)),
                    _ => None,
                }
            })
            .collect();
        stale.sort_unstable();
        for (_, key, active) in stale {
            if active {
                self.stats.flows_expired += 1;
                self.end_flow(key, sink);
            }
            self.flows.remove(&key);
        }
    }

    /// Makes room in a full table: finished flows go first, then the
    /// least recently active eighth of the active ones.
    fn evict(&mut self, sink: &mut dyn FnMut(Tap)) {
        self.flows.retain(|_, f| f.state == FlowState::Active);
        if self.flows.len() < self.limits.max_flows {
            return;
        }
        let mut by_age: Vec<(Micros, ConnId, FlowKey)> = self
            .flows
            .iter()
            .map(|(k, f)| (f.last.at, f.meta.id, *k))
            .collect();
        by_age.sort_unstable();
        let count = (self.flows.len() / 8).max(1);
        for (_, _, key) in by_age.into_iter().take(count) {
            self.stats.flows_evicted += 1;
            self.end_flow(key, sink);
            self.flows.remove(&key);
        }
    }
}
