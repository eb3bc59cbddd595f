//! One direction of one captured TCP connection, put back in order: the
//! bytes the receiving application read, with their stream offsets.
//!
//! No byte is delivered twice: once bytes are delivered, later copies
//! (retransmissions, overlaps) are dropped, and among bytes waiting behind
//! a hole the copy that arrived first is kept. Out-of-order segments wait in
//! a bounded buffer. A hole
//! the capture never fills (capture loss) is skipped when it can no longer
//! be filled: the receiver acknowledged bytes beyond it, the buffer bound is
//! hit, the stream ended (FIN, RST) or the input did. Skipping shows as a
//! jump in the offset of the next delivered bytes, which the observer turns
//! into a `stream-gap` anomaly before it resynchronises.
//!
//! Sequence numbers are 32-bit and wrap; offsets are 64-bit and do not. A
//! sequence number is placed relative to the next expected one (within
//! 2 GiB either way), so wrap-around and streams over 4 GiB both work.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::tap::{CloseKind, Micros};

/// Which packet a delivery or a close comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Frame number of the packet in its capture file.
    pub frame: u64,
    /// Packet timestamp.
    pub at: Micros,
}

/// What one direction hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutput {
    /// Bytes in order, starting at `offset` (a jump past the previous end
    /// is a gap). `origin.frame` is the packet that carried them;
    /// `origin.at` is when they became readable (later than the packet for
    /// bytes that waited for a hole to fill).
    Data {
        /// Stream offset of the first byte.
        offset: u64,
        /// The bytes (empty only to mark a gap just before a FIN).
        bytes: Bytes,
        /// Where they came from.
        origin: Origin,
    },
    /// The sender's stream ended.
    Closed {
        /// FIN or RST.
        how: CloseKind,
        /// The packet that ended it (or the last one, at end of input).
        origin: Origin,
    },
}

/// Counts of what reassembly did, summed over all directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Payload bytes delivered.
    pub delivered_bytes: u64,
    /// Bytes received again (retransmissions, overlaps) and not delivered
    /// twice.
    pub duplicate_bytes: u64,
    /// Segments that arrived ahead of a hole and waited.
    pub out_of_order_segments: u64,
    /// Holes skipped.
    pub gaps: u64,
    /// Bytes in the skipped holes.
    pub gap_bytes: u64,
    /// Times the out-of-order bound forced a skip.
    pub forced_skips: u64,
    /// Payload bytes after the sender's FIN or RST, ignored.
    pub bytes_after_close: u64,
}

/// One segment's part in one direction's stream.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Sequence number of the first payload byte (after any SYN).
    pub seq: u32,
    /// The captured payload: a slice of the capture's read block, delivered
    /// without a copy when it is in order (and copied only when it has to
    /// wait behind a hole).
    pub payload: Bytes,
    /// Whether the segment carries FIN.
    pub fin: bool,
    /// The packet.
    pub origin: Origin,
}

/// Bytes waiting behind a hole.
#[derive(Debug)]
struct Pending {
    bytes: Bytes,
    origin: Origin,
}

/// Where a direction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HalfState {
    /// No segment yet that fixes the sequence space (no SYN, no payload).
    Unanchored,
    /// Bytes before `next_off` (sequence `next_seq`) are delivered.
    Streaming {
        next_seq: u32,
        next_off: u64,
        /// Stream offset of the FIN, once seen.
        fin_at: Option<u64>,
    },
    /// The stream is over; everything later is ignored.
    Closed(CloseKind),
}

/// One direction of one TCP connection.
#[derive(Debug)]
pub struct HalfStream {
    state: HalfState,
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    max_pending: usize,
    last: Origin,
}

impl HalfStream {
    /// A direction that holds at most `max_pending` out-of-order bytes.
    pub fn new(max_pending: usize) -> Self {
        HalfStream {
            state: HalfState::Unanchored,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            max_pending,
            last: Origin { frame: 0, at: 0 },
        }
    }

    /// Whether the stream has ended (FIN delivered or RST).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, HalfState::Closed(_))
    }

    /// Out-of-order bytes held.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// The initial sequence number of a SYN from this side: the stream
    /// starts right after it. A repeated SYN changes nothing.
    pub fn syn(&mut self, isn: u32) {
        if self.state == HalfState::Unanchored {
            self.state = HalfState::Streaming {
                next_seq: isn.wrapping_add(1),
                next_off: 0,
                fin_at: None,
            };
        }
    }

    /// A segment from this side.
    pub fn segment(
        &mut self,
        seg: Incoming,
        stats: &mut ReassemblyStats,
        out: &mut dyn FnMut(StreamOutput),
    ) {
        let Incoming {
            seq,
            payload,
            fin,
            origin,
        } = seg;
        self.last = origin;
        if self.state == HalfState::Unanchored {
            if payload.is_empty() && !fin {
                return;
            }
            // A capture that starts mid-connection: the first byte seen is
            // offset 0.
            self.state = HalfState::Streaming {
                next_seq: seq,
                next_off: 0,
                fin_at: None,
            };
        }
        let HalfState::Streaming {
            next_seq,
            next_off,
            fin_at,
        } = self.state
        else {
            stats.bytes_after_close += payload.len() as u64;
            return;
        };
        let start = offset_of(next_seq, next_off, seq);
        let end = start + payload.len() as i64;
        if fin && fin_at.is_none() && end >= 0 {
            self.state = HalfState::Streaming {
                next_seq,
                next_off,
                fin_at: Some(end as u64),
            };
        }
        if let Some(at) = fin_at {
            if start >= at as i64 && !payload.is_empty() {
                stats.bytes_after_close += payload.len() as u64;
                return;
            }
        }
        if !payload.is_empty() {
            let next = next_off as i64;
            if end <= next {
                stats.duplicate_bytes += payload.len() as u64;
            } else if start <= next {
                let skip = (next - start) as usize;
                stats.duplicate_bytes += skip as u64;
                let bytes = payload.slice(skip..);
                self.deliver(next_off, bytes, origin, stats, out);
                self.drain(Some(origin.at), stats, out);
            } else {
                self.hold(start as u64, &payload, origin, stats);
                if self.pending_bytes > self.max_pending {
                    stats.forced_skips += 1;
                    self.skip_holes_before(u64::MAX, Some(origin.at), stats, out);
                }
            }
        }
        self.close_if_fin_reached(origin, out);
    }

    /// The other side acknowledged everything before sequence `ack`: bytes
    /// of this direction up to there were received, so a hole before them
    /// will never be filled by a retransmission the capture could see.
    pub fn acked(
        &mut self,
        ack: u32,
        origin: Origin,
        stats: &mut ReassemblyStats,
        out: &mut dyn FnMut(StreamOutput),
    ) {
        let HalfState::Streaming {
            next_seq,
            next_off,
            fin_at,
        } = self.state
        else {
            return;
        };
        let acked = offset_of(next_seq, next_off, ack);
        if acked <= next_off as i64 {
            return;
        }
        let acked = acked as u64;
        let hole_confirmed = self
            .pending
            .first_key_value()
            .is_some_and(|(&start, _)| start < acked);
        let fin_acked = fin_at.is_some_and(|f| acked > f);
        if hole_confirmed || fin_acked {
            self.skip_holes_before(acked, Some(origin.at), stats, out);
            if fin_acked {
                self.skip_to_fin(origin, stats, out);
            }
            self.close_if_fin_reached(origin, out);
        }
    }

    /// A RST from this side: what is held is delivered (holes skipped) and
    /// the stream ends.
    pub fn reset(
        &mut self,
        origin: Origin,
        stats: &mut ReassemblyStats,
        out: &mut dyn FnMut(StreamOutput),
    ) {
        self.end(CloseKind::Reset, Some(origin), stats, out);
    }

    /// The connection was aborted by the other side's RST: this direction
    /// cannot send any more either.
    pub fn aborted(
        &mut self,
        origin: Origin,
        stats: &mut ReassemblyStats,
        out: &mut dyn FnMut(StreamOutput),
    ) {
        self.end(CloseKind::Reset, Some(origin), stats, out);
    }

    /// End of input (or the flow expired): what is held is delivered, holes
    /// skipped. A FIN already seen closes the stream; otherwise it stays
    /// open (the capture stopped, not necessarily the connection).
    pub fn finish(&mut self, stats: &mut ReassemblyStats, out: &mut dyn FnMut(StreamOutput)) {
        if let HalfState::Streaming { fin_at, .. } = self.state {
            self.skip_holes_before(u64::MAX, None, stats, out);
            if fin_at.is_some() {
                let origin = self.last;
                self.skip_to_fin(origin, stats, out);
                self.close_if_fin_reached(origin, out);
            }
        }
    }

    /// Delivers everything held, skipping every hole, without ending the
    /// stream (memory pressure).
    pub fn skip_all_holes(
        &mut self,
        now: Option<Micros>,
        stats: &mut ReassemblyStats,
        out: &mut dyn FnMut(StreamOutput),
    ) {
        self.skip_holes_before(u64::MAX, now, stats, out);
    }

    fn end(
        &mut self,
        how: CloseKind,
        origin: Option<Origin>,
        stats: &mut ReassemblyStats,
        out: &mut dyn FnMut(StreamOutput),
    ) {
        if self.is_closed() {
            return;
        }
        let at = origin.map(|o| o.at);
        self.skip_holes_before(u64::MAX, at, stats, out);
        self.state = HalfState::Closed(how);
        out(StreamOutput::Closed {
            how,
            origin: origin.unwrap_or(self.last),
        });
    }

    fn deliver(
        &mut self,
        offset: u64,
        bytes: Bytes,
        origin: Origin,
        stats: &mut ReassemblyStats,
        out: &mut dyn FnMut(StreamOutput),
    ) {
        if let HalfState::Streaming {
            next_seq,
            next_off,
            fin_at,
        } = self.state
        {
            let new_end = offset + bytes.len() as u64;
            self.state = HalfState::Streaming {
                next_seq: next_seq.wrapping_add((new_end - next_off) as u32),
                next_off: new_end,
                fin_at,
            };
        }
        stats.delivered_bytes += bytes.len() as u64;
        out(StreamOutput::Data {
            offset,
            bytes,
            origin,
        });
    }

    /// Keeps bytes that arrived ahead of a hole; the copy already held for
    /// an offset wins over a later one.
    fn hold(&mut self, start: u64, payload: &[u8], origin: Origin, stats: &mut ReassemblyStats) {
        let end = start + payload.len() as u64;
        let covered_from = self
            .pending
            .range(..=start)
            .next_back()
            .map(|(&s, p)| s + p.bytes.len() as u64)
            .filter(|&e| e > start);
        let from = match covered_from {
            Some(e) if e >= end => {
                stats.duplicate_bytes += payload.len() as u64;
                return;
            }
            Some(e) => e,
            None => start,
        };
        stats.duplicate_bytes += from - start;
        stats.out_of_order_segments += 1;
        let bytes = Bytes::copy_from_slice(&payload[(from - start) as usize..]);
        self.pending_bytes += bytes.len();
        if let Some(old) = self.pending.insert(from, Pending { bytes, origin }) {
            self.pending_bytes -= old.bytes.len();
        }
    }

    /// Delivers held bytes that are now in order.
    fn drain(
        &mut self,
        now: Option<Micros>,
        stats: &mut ReassemblyStats,
        out: &mut dyn FnMut(StreamOutput),
    ) {
        while let HalfState::Streaming { next_off, .. } = self.state {
            let Some(entry) = self.pending.first_entry() else {
                return;
            };
            let start = *entry.key();
            if start > next_off {
                return;
            }
            let held = entry.remove();
            self.pending_bytes -= held.bytes.len();
            let end = start + held.bytes.len() as u64;
            if end <= next_off {
                stats.duplicate_bytes += held.bytes.len() as u64;
                continue;
            }
            let skip = (next_off - start) as usize;
            stats.duplicate_bytes += skip as u64;
            let origin = Origin {
                frame: held.origin.frame,
                at: now.unwrap_or(held.origin.at).max(held.origin.at),
            };
            self.deliver(next_off, held.bytes.slice(skip..), origin, stats, out);
        }
    }

    /// Skips every hole that starts before `limit`, delivering what is held
    /// behind each.
    fn skip_holes_before(
        &mut self,
        limit: u64,
        now: Option<Micros>,
        stats: &mut ReassemblyStats,
        out: &mut dyn FnMut(StreamOutput),
    ) {
        loop {
            self.drain(now, stats, out);
            let HalfState::Streaming {
                next_seq,
                next_off,
                fin_at,
            } = self.state
            else {
                return;
            };
            let Some(&start) = self.pending.keys().next() else {
                return;
            };
            if start >= limit {
                return;
            }
            stats.gaps += 1;
            stats.gap_bytes += start - next_off;
            self.state = HalfState::Streaming {
                next_seq: next_seq.wrapping_add((start - next_off) as u32),
                next_off: start,
                fin_at,
            };
        }
    }

    /// Skips a hole just before the FIN; an empty delivery at the FIN's
    /// offset makes the jump visible.
    fn skip_to_fin(
        &mut self,
        origin: Origin,
        stats: &mut ReassemblyStats,
        out: &mut dyn FnMut(StreamOutput),
    ) {
        if let HalfState::Streaming {
            next_seq,
            next_off,
            fin_at: Some(fin),
        } = self.state
        {
            if fin > next_off {
                stats.gaps += 1;
                stats.gap_bytes += fin - next_off;
                self.state = HalfState::Streaming {
                    next_seq: next_seq.wrapping_add((fin - next_off) as u32),
                    next_off: fin,
                    fin_at: Some(fin),
                };
                out(StreamOutput::Data {
                    offset: fin,
                    bytes: Bytes::new(),
                    origin,
                });
            }
        }
    }

    fn close_if_fin_reached(&mut self, origin: Origin, out: &mut dyn FnMut(StreamOutput)) {
        if let HalfState::Streaming {
            next_off,
            fin_at: Some(fin),
            ..
        } = self.state
        {
            if next_off >= fin {
                self.pending.clear();
                self.pending_bytes = 0;
                self.state = HalfState::Closed(CloseKind::Fin);
                out(StreamOutput::Closed {
                    how: CloseKind::Fin,
                    origin,
                });
            }
        }
    }
}

/// Stream offset of sequence number `seq`, given that `next_seq` is at
/// `next_off`; negative for bytes before the stream start.
fn offset_of(next_seq: u32, next_off: u64, seq: u32) -> i64 {
    next_off as i64 + i64::from(seq.wrapping_sub(next_seq) as i32)
}
