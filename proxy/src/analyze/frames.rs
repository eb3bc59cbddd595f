//! What the capture format readers ([`super::pcap`], [`super::pcapng`])
//! hand to the file reader ([`super::reader`]): frames, the reasons reading
//! stops early, and the sink frames go to. A leaf: the format readers and
//! the file reader both depend on it, and it on neither.

use std::io;

use bytes::Bytes;

use super::shared_buffer::SharedReader;
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
    each: &'e mut dyn FnMut(Frame<'_>),
}

impl<'s, 'e> FrameSink<'s, 'e> {
    /// A sink handing frames to `each`; `file_bytes` says how much of the
    /// file has been read, for progress.
    pub(crate) fn new(
        file_bytes: &'s dyn Fn() -> u64,
        each: &'e mut dyn FnMut(Frame<'_>),
    ) -> FrameSink<'s, 'e> {
        FrameSink {
            frames: 0,
            bytes: 0,
            skipped_link_frames: 0,
            file_bytes,
            each,
        }
    }

    /// One more packet record, ending at stream offset `end`; `None` data
    /// means it was skipped (an interface with no decoder).
    pub(crate) fn record(&mut self, end: u64, frame: Option<(Micros, u32, Bytes)>) {
        self.frames += 1;
        self.bytes = end;
        match frame {
            Some((at, linktype, data)) => (self.each)(Frame {
                number: self.frames,
                at,
                linktype,
                data: &data,
                file_bytes_read: (self.file_bytes)(),
            }),
            None => self.skipped_link_frames += 1,
        }
    }

    /// A block that is not a packet, ending at stream offset `end`.
    pub(crate) fn other(&mut self, end: u64) {
        self.bytes = end;
    }
}
