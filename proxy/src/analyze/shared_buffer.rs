//! Reads a capture into large shared blocks so that frames, and the TCP
//! payloads cut from them, are refcounted slices of the file data rather
//! than copies: the only copy of a payload byte is the read into its block.
//!
//! A reader thread fills blocks ahead of the parser (the read, a copy from
//! the page cache or a decompression, then overlaps with parsing and
//! reassembly), and blocks come back to it for reuse once every slice of
//! them has been dropped, so steady-state reading allocates nothing. Each
//! block keeps room in front of its data, where the parser puts the
//! unfinished record of the previous block: records stay contiguous without
//! copying the new block.

use std::io::{self, Read};
use std::sync::mpsc;

use bytes::{Bytes, BytesMut};

/// Data bytes in one read block.
const BLOCK: usize = 4 * 1024 * 1024;
/// Room in front of each block for the unfinished record of the previous
/// one: a whole packet of the largest common snapshot length fits.
const HEADROOM: usize = 256 * 1024 + 64;
/// Blocks read ahead of the parser.
const READ_AHEAD: usize = 2;
/// Blocks kept for reuse; more are freed. Room for those the read-ahead,
/// the parser and the taps on their way to the observer hold.
const RECYCLED: usize = READ_AHEAD + 6;

/// A byte source that can be read on the reader thread.
pub type Source = Box<dyn Read + Send>;

/// A cursor over a byte source, with the bytes ahead of it in one block.
#[derive(Debug)]
pub struct SharedReader {
    blocks: mpsc::Receiver<io::Result<BytesMut>>,
    recycle: mpsc::SyncSender<BytesMut>,
    block: Bytes,
    pos: usize,
    /// Stream offset of `block[pos]`.
    offset: u64,
    eof: bool,
}

/// The reader thread: fills blocks (recycled ones when the parser gave
/// them back) until the source ends, fails, or the parser is gone.
fn read_ahead(
    mut source: Source,
    blocks: mpsc::SyncSender<io::Result<BytesMut>>,
    recycled: mpsc::Receiver<BytesMut>,
) {
    loop {
        let mut block = recycled
            .try_recv()
            .ok()
            .filter(|b| b.len() == HEADROOM + BLOCK)
            .unwrap_or_else(|| BytesMut::zeroed(HEADROOM + BLOCK));
        let mut filled = HEADROOM;
        while filled < block.len() {
            match source.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // What was read before the failure is still good data
                    // (a gzip stream cut short fails only at its end).
                    block.truncate(filled);
                    if filled > HEADROOM {
                        let _ = blocks.send(Ok(block));
                    }
                    let _ = blocks.send(Err(e));
                    return;
                }
            }
        }
        let last = filled < block.len();
        block.truncate(filled);
        if blocks.send(Ok(block)).is_err() || last {
            return;
        }
    }
}

/// A filled block, shared by the frames and payloads sliced from it; it goes
/// back to the reader thread when the last slice is dropped (by the
/// observer, often on another thread), so blocks are reused rather than
/// allocated and zeroed anew.
struct Block {
    data: BytesMut,
    recycle: mpsc::SyncSender<BytesMut>,
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.data.len() == HEADROOM + BLOCK {
            let _ = self.recycle.try_send(std::mem::take(&mut self.data));
        }
    }
}

impl SharedReader {
    /// A reader over `source`, at stream offset 0; reading starts at once
    /// on its own thread.
    pub fn new(source: Source) -> Self {
        let (block_tx, blocks) = mpsc::sync_channel(READ_AHEAD);
        let (recycle, recycled) = mpsc::sync_channel(RECYCLED);
        std::thread::Builder::new()
            .name("icaptap-capture-read".into())
            .spawn(move || read_ahead(source, block_tx, recycled))
            .map_or_else(
                // No thread to be had: the receiver sees a closed channel
                // and the file reads as empty; report it as an I/O error.
                SharedReader::failed,
                |_detached| SharedReader {
                    blocks,
                    recycle,
                    block: Bytes::new(),
                    pos: 0,
                    offset: 0,
                    eof: false,
                },
            )
    }

    fn failed(error: io::Error) -> Self {
        let (tx, blocks) = mpsc::sync_channel(1);
        let (recycle, _) = mpsc::sync_channel(1);
        let _ = tx.send(Err(error));
        SharedReader {
            blocks,
            recycle,
            block: Bytes::new(),
            pos: 0,
            offset: 0,
            eof: false,
        }
    }

    /// Stream offset of the next unread byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The unread bytes already buffered.
    pub fn ahead(&self) -> &[u8] {
        &self.block[self.pos..]
    }

    /// Makes at least `n` bytes available in [`ahead`](Self::ahead);
    /// returns false when the input ends first (what is left stays
    /// available).
    pub fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.block.len() - self.pos < n {
            if self.eof {
                return Ok(false);
            }
            let mut next = match self.blocks.recv() {
                Ok(Ok(next)) => next,
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => {
                    self.eof = true;
                    continue;
                }
            };
            let tail = &self.block[self.pos..];
            let start = if tail.len() <= HEADROOM {
                let start = HEADROOM - tail.len();
                next[start..HEADROOM].copy_from_slice(tail);
                start
            } else {
                // A record longer than the headroom: join the two.
                let mut joined = BytesMut::with_capacity(tail.len() + next.len() - HEADROOM);
                joined.extend_from_slice(tail);
                joined.extend_from_slice(&next[HEADROOM..]);
                std::mem::swap(&mut next, &mut joined);
                let _ = self.recycle.try_send(joined);
                0
            };
            self.block = Bytes::from_owner(Block {
                data: next,
                recycle: self.recycle.clone(),
            });
            self.pos = start;
        }
        Ok(true)
    }

    /// The next `n` bytes as a shared slice; they must be available.
    pub fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.block.len() - self.pos);
        let out = self.block.slice(self.pos..self.pos + n);
        self.skip(n);
        out
    }

    /// Steps over `n` available bytes.
    pub fn skip(&mut self, n: usize) {
        let n = n.min(self.block.len() - self.pos);
        self.pos += n;
        self.offset += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records_come_back_whole(record: usize) {
        let data: Vec<u8> = (0..(BLOCK * 2 + 123)).map(|i| (i % 251) as u8).collect();
        let mut r = SharedReader::new(Box::new(std::io::Cursor::new(data.clone())));
        let mut at = 0usize;
        let mut held = Vec::new();
        while r.fill(record).unwrap() {
            let piece = r.take(record);
            assert_eq!(&piece[..], &data[at..at + record]);
            at += record;
            assert_eq!(r.offset(), at as u64);
            if (at / record) % 7 == 0 {
                held.push(piece); // keeps some blocks shared
            }
        }
        assert_eq!(r.ahead(), &data[at..]);
        assert!(!r.fill(data.len() - at + 1).unwrap());
    }

    #[test]
    fn records_straddling_blocks_are_whole_and_offsets_count() {
        records_come_back_whole(1000);
        records_come_back_whole(1_000_003); // longer than the headroom
    }

    #[test]
    fn read_errors_reach_the_parser() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut r = SharedReader::new(Box::new(Failing));
        assert_eq!(r.fill(1).unwrap_err().to_string(), "disk on fire");
    }
}
