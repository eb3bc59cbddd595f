//! Redacting a capture for `icaptap bundle --redact`, in two streaming
//! passes over the file:
//!
//! 1. the offline reader reassembles every ICAP flow and the codec's
//!    decoder finds, per direction, the stream ranges to change: the
//!    values of sensitive headers in ICAP and encapsulated HTTP heads
//!    (masked with `*`, same length), IPv4 text in heads (same-length
//!    stand-ins with `--pseudonymise-ips`), and body bytes past the preview
//!    (RFC 3507 section 4.5: what the client sent before `0\r\n\r\n` or
//!    `0; ieof`; response bodies entirely);
//! 2. the file is read again, record by record as stored (the capture
//!    reader's [`CaptureFile::for_each_stored`]), and every packet is
//!    rewritten and re-encoded with the packet toolkit: its payload's stream offset is
//!    its sequence number relative to the SYN (or to the first payload seen,
//!    as reassembly does), masks are applied, packets whose tail is body are
//!    cut to a shorter captured length (the original length and sequence
//!    numbers stay, so TCP still reassembles and tools see the true sizes),
//!    and IP addresses and checksums are rewritten.
//!
//! Only the plan (ranges, not data) is held between the passes.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use icap_codec::body_plan::{BodyKeep, BodyPlanner};
use icap_codec::{Decoder, Direction, Event};

use crate::analyze::frames::{StoredKind, StoredRecord};
use crate::analyze::reader::CaptureFile;
use crate::analyze::{read_captures, AnalyzeOptions};
use crate::capture::packet::blocks::{self, PacketOptions};
use crate::capture::packet::{checksum, link};
use crate::output::directory::create_private_file;
use crate::tap::TapEvent;

use super::pseudonym::Pseudonyms;
use super::redact::{is_sensitive, Secrets, MASK};
use super::EvidenceError;

/// Recent stream bytes kept per direction to read heads back (a head is at
/// most 64 KiB by the codec's limits).
const WINDOW: usize = 256 * 1024;

/// A change to a stream: bytes to write at an offset.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Patch {
    at: u64,
    bytes: Vec<u8>,
}

/// What to change in one direction of one connection.
#[derive(Clone, Debug, Default)]
struct StreamPlan {
    patches: Vec<Patch>,
    cuts: Vec<Range<u64>>,
}

/// Pass 1's state for one direction.
struct StreamScan {
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

    /// Finds sensitive header values (and IPv4 text) in the head at
    /// `offset` and plans their patches.
    fn scan_head(
        &mut self,
        offset: u64,
        len: u64,
        secrets: &mut Secrets,
        pseudonyms: Option<&mut Pseudonyms>,
    ) {
        let Some(head) = self.head_bytes(offset, len).map(<[u8]>::to_vec) else {
            return;
        };
        let mut masked = head.clone();
        let mut pos = 0usize;
        let mut in_sensitive = false;
        let mut first = true;
        while pos < head.len() {
            let end = memchr::memchr(b'\n', &head[pos..]).map_or(head.len(), |i| pos + i);
            let line_end = if end > pos && head[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            let line = &head[pos..line_end];
            if first {
                first = false;
            } else if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                if in_sensitive {
                    let lead = line.iter().take_while(|b| b.is_ascii_whitespace()).count();
                    secrets.add(&line[lead..]);
                    masked[pos + lead..line_end].fill(MASK);
                }
            } else if let Some(colon) = memchr::memchr(b':', line) {
                in_sensitive = is_sensitive(line[..colon].trim_ascii());
                if in_sensitive {
                    let lead = line[colon + 1..]
                        .iter()
                        .take_while(|b| **b == b' ' || **b == b'\t')
                        .count();
                    let start = pos + colon + 1 + lead;
                    secrets.add_header_value(&head[start..line_end]);
                    masked[start..line_end].fill(MASK);
                }
            } else {
                in_sensitive = false;
            }
            pos = end + 1;
        }
        if let Some(p) = pseudonyms {
            p.rewrite_text(&mut masked, true);
        }
        if masked.len() != head.len() {
            return;
        }
        let mut i = 0;
        while i < head.len() {
            if head[i] == masked[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < head.len() && head[i] != masked[i] {
                i += 1;
            }
            self.plan.patches.push(Patch {
                at: offset + start as u64,
                bytes: masked[start..i].to_vec(),
            });
        }
    }

    fn finish(mut self) -> StreamPlan {
        if let Some(start) = self.bodies.open_cut() {
            self.plan.cuts.push(start..u64::MAX);
        }
        self.plan
    }
}

/// The plan for a whole capture: per (sender, receiver), the plans of the
/// connections on that address pair in order.
#[derive(Debug, Default)]
pub struct CapturePlan {
    streams: HashMap<(SocketAddr, SocketAddr), Vec<StreamPlan>>,
}

/// What redacting the captures did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureRedaction {
    /// Packets read.
    pub packets: u64,
    /// Packets whose payload was masked.
    pub masked_packets: u64,
    /// Packets cut to a shorter captured length.
    pub cut_packets: u64,
    /// Payload bytes removed from the files by cuts.
    pub cut_bytes: u64,
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
    read_captures(captures, &AnalyzeOptions::with_ports(ports), &mut sink).map_err(|e| {
        EvidenceError::Capture {
            path: captures.first().cloned().unwrap_or_default(),
            offset: 0,
            detail: e.to_string(),
        }
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

/// Pass 2's position in one direction of one address pair.
#[derive(Debug)]
struct Cursor {
    /// Which connection on this address pair (index into the plans).
    index: usize,
    /// Sequence number of stream offset 0.
    anchor: Option<u32>,
    /// Highest offset placed, to unwrap sequence numbers.
    last: u64,
}

/// Pass 2 for one file: rewrites `src` into `dst` (0600), record by record
/// as the capture reader hands them out: packets are rewritten, every other
/// record (file header, section and interface blocks, statistics...) is
/// copied as it is.
pub fn rewrite(
    src: &Path,
    dst: &Path,
    plan: &CapturePlan,
    pseudonyms: Option<&mut Pseudonyms>,
    stats: &mut CaptureRedaction,
) -> Result<(), EvidenceError> {
    let fail = |offset: u64, detail: String| EvidenceError::Capture {
        path: src.to_path_buf(),
        offset,
        detail,
    };
    let mut file = CaptureFile::open(src).map_err(|e| fail(0, e.to_string()))?;
    let out = create_private_file(dst).map_err(|source| EvidenceError::Write {
        path: dst.to_path_buf(),
        source,
    })?;
    let mut out = BufWriter::new(out);
    let mut cursors: HashMap<(SocketAddr, SocketAddr), Cursor> = HashMap::new();
    let mut rewriter = PacketRewriter {
        plan,
        cursors: &mut cursors,
        pseudonyms,
        stats,
    };
    let mut block = Vec::new();
    let mut records = 0u64;
    let mut written = 0u64;
    let mut failed: Option<(u64, std::io::Error)> = None;
    file.for_each_stored(&mut |record| {
        if failed.is_some() {
            return;
        }
        records += 1;
        block.clear();
        let bytes: &[u8] = match record.kind {
            StoredKind::PcapngBlock(blocks::ENHANCED_PACKET) | StoredKind::PcapRecord => {
                rewriter.packet(&record, &mut block);
                if block.is_empty() {
                    record.bytes
                } else {
                    &block
                }
            }
            _ => record.bytes,
        };
        match out.write_all(bytes) {
            Ok(()) => written += bytes.len() as u64,
            Err(e) => failed = Some((records, e)),
        }
    })
    .map_err(|e| fail(0, e.to_string()))?;
    if let Some((n, e)) = failed {
        return Err(fail(written, format!("writing record {n}: {e}")));
    }
    out.flush()
        .map_err(|e| fail(written, format!("writing: {e}")))?;
    Ok(())
}

struct PacketRewriter<'a> {
    plan: &'a CapturePlan,
    cursors: &'a mut HashMap<(SocketAddr, SocketAddr), Cursor>,
    pseudonyms: Option<&'a mut Pseudonyms>,
    stats: &'a mut CaptureRedaction,
}

impl PacketRewriter<'_> {
    /// Appends `record` (a pcapng Enhanced Packet Block or a classic pcap
    /// record) rewritten to `out`, or leaves `out` empty to keep it as it
    /// is (a frame of a link type that is not decoded).
    fn packet(&mut self, record: &StoredRecord<'_>, out: &mut Vec<u8>) {
        let Some(packet) = &record.packet else {
            self.stats.packets += 1;
            return;
        };
        let raw: &[u8] = record.bytes;
        let order = record.order;
        let field = |at: usize| order.read_u32(raw, at).unwrap_or(0);
        let mut data = raw[packet.data.clone()].to_vec();
        let keep = self.frame(&mut data, packet.linktype);
        data.truncate(keep);
        if record.kind == StoredKind::PcapRecord {
            blocks::pcap_record(out, order, field(0), field(4), &data, field(12));
        } else {
            // Block header, interface, timestamp (2), captured and original
            // lengths, the padded data, then the options up to the trailer.
            let options_at = packet.data.start + packet.data.len().div_ceil(4) * 4;
            let options = raw.get(options_at..raw.len() - 4).unwrap_or(&[]);
            let timestamp = (u64::from(field(12)) << 32) | u64::from(field(16));
            blocks::pcapng_enhanced_packet(
                out,
                order,
                field(8),
                timestamp,
                &data,
                field(24),
                PacketOptions::Encoded(options),
            );
        }
    }

    /// Rewrites one frame in place; returns how many bytes to keep.
    fn frame(&mut self, frame: &mut [u8], linktype: u32) -> usize {
        self.stats.packets += 1;
        let full = frame.len();
        let Some(ip) = link::ip_packet(linktype, frame) else {
            return full;
        };
        let ip_at = ip.as_ptr() as usize - frame.as_ptr() as usize;
        let Ok(seg) = crate::analyze::segment::tcp_segment(ip) else {
            return full;
        };
        let payload_at = seg.payload.as_ptr() as usize - frame.as_ptr() as usize;
        let payload_len = seg.payload.len();
        let key = (seg.src, seg.dst);
        let mut keep = full;
        if let Some(plans) = self.plan.streams.get(&key) {
            let cursor = self.cursors.entry(key).or_insert(Cursor {
                index: 0,
                anchor: None,
                last: 0,
            });
            if seg.flags.syn {
                let anchor = seg.seq.wrapping_add(1);
                if cursor.anchor.is_some_and(|a| a != anchor) {
                    cursor.index += 1;
                    cursor.last = 0;
                }
                cursor.anchor = Some(anchor);
            } else if cursor.anchor.is_none() && payload_len > 0 {
                cursor.anchor = Some(seg.seq);
            }
            if let (Some(anchor), Some(stream), true) =
                (cursor.anchor, plans.get(cursor.index), payload_len > 0)
            {
                // Placed relative to the furthest offset seen (within 2 GiB
                // either way), so wrap-around and retransmissions both work;
                // the SYN itself sits just before offset 0.
                let rel = seg.seq.wrapping_sub(anchor);
                let delta = i64::from(rel.wrapping_sub(cursor.last as u32) as i32);
                let placed = cursor.last as i64 + delta;
                let offset = u64::try_from(placed).unwrap_or(0);
                if placed >= 0 && payload_len > 0 {
                    cursor.last = cursor.last.max(offset);
                }
                let payload = &mut frame[payload_at..payload_at + payload_len];
                let (masked, cut_from) = apply(stream, offset, payload);
                if masked {
                    self.stats.masked_packets += 1;
                }
                if let Some(cut) = cut_from {
                    // One zeroed byte stays: a segment with no captured
                    // payload is not handed to the ICAP dissector at all,
                    // and would vanish from `tshark -Y icap`.
                    let kept = (cut + 1).min(payload_len);
                    keep = payload_at + kept;
                    self.stats.cut_packets += 1;
                    self.stats.cut_bytes += (payload_len - kept) as u64;
                }
            }
        }
        fix_ip_and_checksums(&mut frame[ip_at..], self.pseudonyms.as_deref_mut());
        keep.min(full)
    }
}

/// Applies a stream plan to the payload at stream `offset`: patches and
/// mid-payload cuts are written (cut bytes become zero); returns whether
/// anything changed and where a cut that runs to the end of the payload
/// starts.
fn apply(plan: &StreamPlan, offset: u64, payload: &mut [u8]) -> (bool, Option<usize>) {
    let end = offset + payload.len() as u64;
    let mut changed = false;
    for p in &plan.patches {
        let p_end = p.at + p.bytes.len() as u64;
        if p_end <= offset || p.at >= end {
            continue;
        }
        let from = p.at.max(offset);
        let to = p_end.min(end);
        let src = &p.bytes[(from - p.at) as usize..(to - p.at) as usize];
        payload[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
        changed = true;
    }
    let mut tail_cut = None;
    for c in &plan.cuts {
        if c.end <= offset || c.start >= end {
            continue;
        }
        let from = (c.start.max(offset) - offset) as usize;
        let to = (c.end.min(end) - offset) as usize;
        payload[from..to].fill(0);
        changed = true;
        if to == payload.len() {
            tail_cut = Some(tail_cut.map_or(from, |t: usize| t.min(from)));
        }
    }
    (changed, tail_cut)
}

/// Rewrites addresses (with pseudonyms) and recomputes the IPv4 header and
/// TCP checksums over what the frame holds, when it holds the whole segment.
fn fix_ip_and_checksums(ip: &mut [u8], pseudonyms: Option<&mut Pseudonyms>) {
    if let Some(p) = pseudonyms {
        pseudonymise_addresses(ip, p);
    }
    checksum::refresh_tcp_ip(ip);
}

/// Replaces the source and destination addresses of the TCP/IP packet `ip`
/// with their pseudonyms.
fn pseudonymise_addresses(ip: &mut [u8], p: &mut Pseudonyms) {
    match ip.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip.len() < ihl.max(20) || ip[9] != 6 {
                return;
            }
            for at in [12usize, 16] {
                let mut a = [0u8; 4];
                a.copy_from_slice(&ip[at..at + 4]);
                if let IpAddr::V4(n) = p.map(IpAddr::from(a)) {
                    ip[at..at + 4].copy_from_slice(&n.octets());
                }
            }
        }
        Some(6) => {
            if ip.len() < 40 || ip[6] != 6 {
                return;
            }
            for at in [8usize, 24] {
                let mut a = [0u8; 16];
                a.copy_from_slice(&ip[at..at + 16]);
                if let IpAddr::V6(n) = p.map(IpAddr::from(a)) {
                    ip[at..at + 16].copy_from_slice(&n.octets());
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_masks_and_cuts_tails() {
        let plan = StreamPlan {
            patches: vec![Patch {
                at: 5,
                bytes: b"***".to_vec(),
            }],
            cuts: vec![Range {
                start: 12,
                end: 100,
            }],
        };
        let mut payload = b"0123456789abcdefgh".to_vec();
        let (changed, cut) = apply(&plan, 2, &mut payload);
        assert!(changed);
        assert_eq!(&payload[3..6], b"***");
        assert_eq!(cut, Some(10));
    }
}
