//! Line framing for heads: lines read across `decode` calls with a resume
//! cursor and a length limit, and the lines of one header block collected
//! into a buffer of their own.
//!
//! Lines are handed out as slices of the input when they arrive whole, and
//! copied only when they straddle two `decode` calls.

use bytes::{Bytes, BytesMut};

/// One line of a head, without its terminator.
#[derive(Clone, Debug)]
pub(crate) struct Line {
    /// The line's bytes, CRLF (or a bare LF) removed.
    pub bytes: Bytes,
    /// Stream offset of its first byte.
    pub start: u64,
    /// Length on the wire, terminator included.
    pub wire_len: u64,
}

/// What one attempt to read a line gave.
#[derive(Debug)]
pub(crate) enum LineStatus {
    /// A whole line.
    Complete(Line),
    /// The input ran out before the line's LF; its bytes are kept.
    Partial,
    /// The line is longer than allowed: reported once, then its remaining
    /// bytes are dropped up to its LF without being buffered.
    TooLong {
        /// Stream offset of the line's first byte.
        start: u64,
    },
}

/// Accumulates one line across `decode` calls. Only bytes not seen before
/// are searched for LF, so a long partial line is never re-scanned.
#[derive(Debug, Default)]
pub(crate) struct LineReader {
    buf: BytesMut,
    start: u64,
    discarding: bool,
}

impl LineReader {
    /// Whether no part of a line is held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && !self.discarding
    }

    /// The bytes of the partial line held so far.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets any partial line (after a gap).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.discarding = false;
    }

    /// Reads the next line from `input`, advancing `pos` by what it took.
    pub fn read(&mut self, input: &mut Bytes, pos: &mut u64, max_len: usize) -> LineStatus {
        if self.discarding {
            match memchr::memchr(b'\n', input) {
                Some(i) => {
                    let _ = input.split_to(i + 1);
                    *pos += (i + 1) as u64;
                    self.discarding = false;
                }
                None => {
                    *pos += input.len() as u64;
                    input.clear();
                    return LineStatus::Partial;
                }
            }
        }
        if self.buf.is_empty() {
            self.start = *pos;
        }
        match memchr::memchr(b'\n', input) {
            Some(i) => {
                let total = self.buf.len() + i + 1;
                let raw = input.split_to(i + 1);
                *pos += (i + 1) as u64;
                if total > max_len {
                    self.buf.clear();
                    return LineStatus::TooLong { start: self.start };
                }
                let mut bytes = if self.buf.is_empty() {
                    raw
                } else {
                    self.buf.extend_from_slice(&raw);
                    self.buf.split().freeze()
                };
                let mut cut = bytes.len() - 1;
                if cut > 0 && bytes[cut - 1] == b'\r' {
                    cut -= 1;
                }
                bytes.truncate(cut);
                LineStatus::Complete(Line {
                    bytes,
                    start: self.start,
                    wire_len: total as u64,
                })
            }
            None => {
                *pos += input.len() as u64;
                if self.buf.len() + input.len() > max_len {
                    self.buf.clear();
                    self.discarding = true;
                    input.clear();
                    return LineStatus::TooLong { start: self.start };
                }
                self.buf.extend_from_slice(input);
                input.clear();
                LineStatus::Partial
            }
        }
    }
}

/// Where one line of a collected block sits in the block's buffer.
#[derive(Clone, Copy, Debug)]
struct LineSpan {
    at: usize,
    len: usize,
    start: u64,
    wire_len: u64,
}

/// The lines of one header block being collected into one buffer of its
/// own, so that a head never pins the (possibly large) input buffers it
/// arrived in; bounded by [`Limits::max_head_len`].
#[derive(Debug, Default)]
pub(crate) struct HeadCollector {
    buf: BytesMut,
    spans: Vec<LineSpan>,
    /// Stream offset of the block's first byte.
    pub start: u64,
    /// Wire length so far, final empty line included once it arrives.
    pub len: u64,
    /// Whether the block outgrew the limit; later lines are dropped.
    pub overflowed: bool,
}

impl HeadCollector {
    /// Starts a new block at `start`.
    pub fn begin(&mut self, start: u64) {
        self.buf.clear();
        self.spans.clear();
        self.start = start;
        self.len = 0;
        self.overflowed = false;
    }

    /// Whether no byte of the block has arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counts the wire bytes of a line that is not kept (too long, or the
    /// final empty line).
    pub fn count(&mut self, wire_len: u64) {
        self.len += wire_len;
    }

    /// Adds a non-empty line. Returns true the first time the block
    /// exceeds `max_head_len`.
    pub fn push(&mut self, line: &Line, max_head_len: usize) -> bool {
        self.len += line.wire_len;
        if self.overflowed {
            return false;
        }
        if self.len > max_head_len as u64 {
            self.overflowed = true;
            return true;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(512);
        }
        self.spans.push(LineSpan {
            at: self.buf.len(),
            len: line.bytes.len(),
            start: line.start,
            wire_len: line.wire_len,
        });
        self.buf.extend_from_slice(&line.bytes);
        self.buf.extend_from_slice(b"\r\n");
        false
    }

    /// The block as one buffer (every line ended by CRLF, then a final
    /// CRLF), and its lines as slices of that buffer.
    pub fn finish(&mut self) -> (Bytes, Vec<Line>) {
        self.buf.extend_from_slice(b"\r\n");
        let block = self.buf.split().freeze();
        let lines = self
            .spans
            .drain(..)
            .map(|s| Line {
                bytes: block.slice(s.at..s.at + s.len),
                start: s.start,
                wire_len: s.wire_len,
            })
            .collect();
        (block, lines)
    }
}
