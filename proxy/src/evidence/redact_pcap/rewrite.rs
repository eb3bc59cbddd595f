//! Pass 2 of redaction: every record of a capture file, read as stored by
//! the capture reader, is copied, or, for packets, rewritten and re-encoded
//! with the packet toolkit. A payload's stream offset is its sequence
//! number relative to the SYN (or to the first payload seen, as reassembly
//! does); the plan's masks are applied, packets whose tail is body are cut
//! to a shorter captured length (the original length and sequence numbers
//! stay, so TCP still reassembles and tools see the true sizes), and IP
//! addresses and checksums are rewritten ([`super::addresses`]).

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;

use super::stream_plan::{self, CapturePlan};
use super::{addresses, CaptureRedaction};
use crate::analyze::frames::{StoredKind, StoredRecord};
use crate::analyze::reader::CaptureFile;
use crate::capture::packet::blocks::{self, PacketOptions};
use crate::capture::packet::link;
use crate::evidence::pseudonym::Pseudonyms;
use crate::evidence::EvidenceError;
use crate::output::directory::create_private_file;

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
                let (masked, cut_from) = stream_plan::apply(stream, offset, payload);
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
        addresses::fix_ip_and_checksums(&mut frame[ip_at..], self.pseudonyms.as_deref_mut());
        keep.min(full)
    }
}
