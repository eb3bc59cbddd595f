//! The classic pcap format (what `tcpdump -w` writes): a 24-byte file
//! header, then records of a 16-byte header and the captured bytes. Either
//! byte order, microsecond or nanosecond timestamps.

use super::frames::{need, FrameSink, Stop, StoredKind, MAX_RECORD};
use super::shared_buffer::SharedReader;
use crate::capture::packet::blocks::ByteOrder;
use crate::capture::packet::link;

const FILE_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;

/// Reads every record of a classic pcap into `sink`.
pub(crate) fn read(r: &mut SharedReader, sink: &mut FrameSink<'_, '_>) -> Result<(), Stop> {
    if !need(r, FILE_HEADER)? {
        return Err(Stop::Truncated {
            offset: r.ahead().len() as u64,
        });
    }
    let head = r.ahead();
    let magic = [head[0], head[1], head[2], head[3]];
    let (little, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        _ => (false, true),
    };
    let u32_at = |b: &[u8], at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if little {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    // The low 16 bits are the link type; the upper ones carry FCS flags.
    let linktype = u32_at(head, 20) & 0xffff;
    let decoded = link::is_supported(linktype);
    if !decoded && !sink.keeps_undecoded() {
        return Err(Stop::UnsupportedLinkType(linktype));
    }
    let order = if little {
        ByteOrder::Little
    } else {
        ByteOrder::Big
    };
    let header = r.take(FILE_HEADER);
    sink.other(r.offset(), &header, order, StoredKind::PcapHeader);
    loop {
        let start = r.offset();
        if !need(r, RECORD_HEADER)? {
            if r.ahead().is_empty() {
                return Ok(());
            }
            return Err(Stop::Truncated { offset: start });
        }
        let h = r.ahead();
        let secs = u64::from(u32_at(h, 0));
        let frac = u64::from(u32_at(h, 4));
        let captured = u32_at(h, 8) as usize;
        if captured > MAX_RECORD {
            return Err(Stop::Corrupt {
                offset: start,
                what: format!("a record claims {captured} captured bytes"),
            });
        }
        if !need(r, RECORD_HEADER + captured)? {
            return Err(Stop::Truncated { offset: start });
        }
        let record = r.take(RECORD_HEADER + captured);
        let at = secs * 1_000_000 + if nanos { frac / 1000 } else { frac };
        let frame = decoded.then(|| (at, linktype, record.slice(RECORD_HEADER..), false));
        sink.record(r.offset(), &record, order, StoredKind::PcapRecord, frame);
    }
}
