//! What the capture format readers ([`super::pcap`], [`super::pcapng`])
//! hand to the file reader ([`super::reader`]): frames, the records they
//! were stored in (for tools that copy a capture, like redaction), the
//! reasons reading stops early, and the sink they all go to. A leaf: the
//! format readers and the file reader both depend on it, and it on neither.

use std::io;
use std::ops::Range;

use bytes::Bytes;

use super::shared_buffer::SharedReader;
use crate::capture::packet::blocks::ByteOrder;
use crate::tap::Micros;

/// One packet record of a capture.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Frame number in its file, from 1.
    pub number: u64,
    /// Packet timestamp, microseconds since the UNIX epoch.
    pub at: Micros,
    /// LINKTYPE_ of the interface it was captured on.
    pub linktype: u32,
    /// The captured bytes (may be shorter than on the wire: snaplen), a
    /// slice of the shared read block: payloads are cut from it without a
    /// copy.
    pub data: &'a Bytes,
    /// Bytes of the file read so far (compressed bytes for gzip'd files),
    /// for progress.
    pub file_bytes_read: u64,
    /// Whether it was captured on the interface icaptap's own captures
    /// call `sensor-leg`: the bytes of the client leg again, as icaptap
    /// forwarded them to the sensor.
    pub icaptap_sensor_leg: bool,
}

/// What a format reader found of one packet it decodes: time, link type,
/// captured bytes, and whether it is on icaptap's sensor leg.
pub(crate) type Captured = (Micros, u32, Bytes, bool);

/// What kind of record of a capture file a [`StoredRecord`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredKind {
    /// The classic pcap file header.
    PcapHeader,
    /// A classic pcap packet record (16-byte header and captured bytes).
    PcapRecord,
    /// A pcapng block of this type.
    PcapngBlock(u32),
}

/// Where the frame of a packet record is in its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPacket {
    /// Packet timestamp, microseconds since the UNIX epoch.
    pub at: Micros,
    /// LINKTYPE_ of the interface it was captured on.
    pub linktype: u32,
    /// The captured bytes, as a range of [`StoredRecord::bytes`].
    pub data: Range<usize>,
}

/// One record of a capture file exactly as it is stored.
#[derive(Debug)]
pub struct StoredRecord<'a> {
    /// Its bytes in the file (after decompression), header included.
    pub bytes: &'a Bytes,
    /// The byte order of its fixed-width fields.
    pub order: ByteOrder,
    /// What it is.
    pub kind: StoredKind,
    /// The frame it holds, when it is a packet whose link type is decoded.
    pub packet: Option<StoredPacket>,
}

/// Who the frames (or stored records) go to.
pub(crate) enum Deliver<'e> {
    /// Frames only, for analysis.
    Frames(&'e mut dyn FnMut(Frame<'_>)),
    /// Every record as stored, with its frame, for copying a capture.
    Stored(&'e mut dyn FnMut(StoredRecord<'_>)),
}

/// How reading a file's records stopped before its clean end.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The input ended inside the record starting at `offset`.
    Truncated {
        /// Where the incomplete record starts.
        offset: u64,
    },
    /// A record that cannot be valid.
    Corrupt {
        /// Where it starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The source failed.
    Io {
        /// Where reading was.
        offset: u64,
        /// What the OS (or the gzip decoder) said.
        source: io::Error,
    },
    /// A classic pcap of a link type with no decoder.
    UnsupportedLinkType(u32),
}

/// Largest record accepted: larger ones are damage, not packets.
pub(crate) const MAX_RECORD: usize = 256 * 1024 * 1024;

/// Makes `n` bytes available, or says why not.
pub(crate) fn need(reader: &mut SharedReader, n: usize) -> Result<bool, Stop> {
    reader.fill(n).map_err(|source| Stop::Io {
        offset: reader.offset(),
        source,
    })
}

/// Where the format readers hand their frames, counting them as they come.
pub(crate) struct FrameSink<'s, 'e> {
    /// Packet records read so far (the last frame number).
    pub(crate) frames: u64,
    /// Stream bytes read so far, up to the end of the last whole record.
    pub(crate) bytes: u64,
    /// Frames skipped because their interface's link type is not decoded.
    pub(crate) skipped_link_frames: u64,
    file_bytes: &'s dyn Fn() -> u64,
    deliver: Deliver<'e>,
}

impl<'s, 'e> FrameSink<'s, 'e> {
    /// A sink handing frames (or records) to `deliver`; `file_bytes` says
    /// how much of the file has been read, for progress.
    pub(crate) fn new(file_bytes: &'s dyn Fn() -> u64, deliver: Deliver<'e>) -> FrameSink<'s, 'e> {
        FrameSink {
            frames: 0,
            bytes: 0,
            skipped_link_frames: 0,
            file_bytes,
            deliver,
        }
    }

    /// Whether every record is wanted, even of a file whose link type is
    /// not decoded (its packets then come without frames).
    pub(crate) fn keeps_undecoded(&self) -> bool {
        matches!(self.deliver, Deliver::Stored(_))
    }

    /// One more packet record, stored as `stored` (in byte order `order`,
    /// of `kind`) and ending at stream offset `end`; `None` data means it
    /// was skipped (an interface with no decoder). The frame's data is a
    /// slice of `stored`.
    pub(crate) fn record(
        &mut self,
        end: u64,
        stored: &Bytes,
        order: ByteOrder,
        kind: StoredKind,
        frame: Option<Captured>,
    ) {
        self.frames += 1;
        self.bytes = end;
        if frame.is_none() {
            self.skipped_link_frames += 1;
        }
        match &mut self.deliver {
            Deliver::Frames(each) => {
                if let Some((at, linktype, data, icaptap_sensor_leg)) = frame {
                    each(Frame {
                        number: self.frames,
                        at,
                        linktype,
                        data: &data,
                        file_bytes_read: (self.file_bytes)(),
                        icaptap_sensor_leg,
                    })
                }
            }
            Deliver::Stored(each) => {
                let packet = frame.map(|(at, linktype, data, _)| {
                    let start = data.as_ptr() as usize - stored.as_ptr() as usize;
                    StoredPacket {
                        at,
                        linktype,
                        data: start..start + data.len(),
                    }
                });
                each(StoredRecord {
                    bytes: stored,
                    order,
                    kind,
                    packet,
                })
            }
        }
    }

    /// A record that is not a packet, stored as `stored`, ending at stream
    /// offset `end`.
    pub(crate) fn other(&mut self, end: u64, stored: &Bytes, order: ByteOrder, kind: StoredKind) {
        self.bytes = end;
        if let Deliver::Stored(each) = &mut self.deliver {
            each(StoredRecord {
                bytes: stored,
                order,
                kind,
                packet: None,
            })
        }
    }
}
