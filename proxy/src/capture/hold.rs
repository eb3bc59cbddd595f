//! The hold-back buffer: frames wait here briefly before they are written,
//! so that an observer's note about a byte (a verdict, an anomaly) that
//! arrives just after the byte can still become a comment on its packet.
//!
//! Frames leave in the order they came. Notes find their frames through an
//! index per connection and direction instead of a scan of everything held:
//! with many connections and a second of hold-back, a scan per note cost
//! more than forwarding the bytes (profiled: 14% of the proxy's CPU time
//! on small exchanges).
//!
//! The frames' bytes live in a few large chunks ([`Arena`]) in the same
//! order as the frames, not in one allocation per frame: a chunk is reused
//! once every frame in it has been written.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::time::Instant;

use super::synth::SynthFrame;
use crate::tap::{ConnId, Direction};

/// A frame waiting in the hold-back buffer.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) conn: ConnId,
    /// The stream whose bytes it carries, for data segments.
    pub(crate) dir: Option<Direction>,
    pub(crate) range: Range<u64>,
    pub(crate) since: Instant,
    pub(crate) frame: SynthFrame,
    /// Where its stored bytes are in the hold-back buffer's [`Arena`].
    pub(crate) bytes: Span,
}

/// Bytes of one chunk of an [`Arena`] (frames larger than this get a chunk
/// of their own).
const CHUNK: usize = 1 << 20;
/// Empty chunks kept for reuse: enough for the default 4 MiB of hold-back,
/// so a busy recorder does not give memory back only to fault it in again.
const SPARE_CHUNKS: usize = 6;

/// Where a frame's bytes are in an [`Arena`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    chunk: u64,
    start: usize,
    end: usize,
}

/// Frame bytes in arrival order, in chunks of [`CHUNK`] bytes.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    chunks: VecDeque<Vec<u8>>,
    /// Number of `chunks[0]`.
    first: u64,
    spare: Vec<Vec<u8>>,
}

impl Arena {
    /// The chunk to append the bytes of one frame (at most `need` of them)
    /// to; [`Arena::span`] says where they went.
    pub(crate) fn room(&mut self, need: usize) -> &mut Vec<u8> {
        let fits = self
            .chunks
            .back()
            .is_some_and(|c| c.capacity() - c.len() >= need);
        if !fits {
            let chunk = match self.spare.pop() {
                Some(c) if c.capacity() >= need => c,
                _ => Vec::with_capacity(CHUNK.max(need)),
            };
            self.chunks.push_back(chunk);
        }
        let n = self.chunks.len() - 1;
        &mut self.chunks[n]
    }

    /// The span of the bytes appended to the newest chunk since it held
    /// `start` bytes.
    pub(crate) fn span(&self, start: usize) -> Span {
        let n = self.chunks.len();
        Span {
            chunk: self.first + n.saturating_sub(1) as u64,
            start,
            end: self.chunks.back().map_or(start, Vec::len),
        }
    }

    /// The bytes at `span`.
    pub(crate) fn get(&self, span: Span) -> &[u8] {
        let at = span.chunk.wrapping_sub(self.first) as usize;
        self.chunks
            .get(at)
            .and_then(|c| c.get(span.start..span.end))
            .unwrap_or(&[])
    }

    /// Recycles the chunks before chunk number `chunk`.
    fn drop_before(&mut self, chunk: u64) {
        while self.first < chunk {
            let Some(mut c) = self.chunks.pop_front() else {
                break;
            };
            self.first += 1;
            if self.spare.len() < SPARE_CHUNKS {
                c.clear();
                self.spare.push(c);
            }
        }
    }

    /// Recycles every chunk but the newest, which is emptied.
    fn clear(&mut self) {
        let last = self.first + self.chunks.len() as u64;
        self.drop_before(last.saturating_sub(1));
        if let Some(c) = self.chunks.back_mut() {
            c.clear();
        }
    }
}

/// A cheap hasher for the buffer's maps, keyed by connection ids that
/// icaptap assigns itself (nobody outside can choose them).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`IdHasher`]s.
pub(crate) type IdHash = BuildHasherDefault<IdHasher>;

/// Where a held data frame is, for notes.
#[derive(Debug)]
struct Indexed {
    /// Its position in arrival order (see [`HoldBack::front_seq`]).
    seq: u64,
    range: Range<u64>,
    /// The end of the stream range of the tap it came from: every frame
    /// held before it (same connection and direction) ends at or before
    /// the start of that tap, so a search from the newest stops there.
    tap_end: u64,
}

/// Frames in arrival order, with an index for notes.
#[derive(Debug, Default)]
pub(crate) struct HoldBack {
    frames: VecDeque<Held>,
    /// Arrival number of `frames[0]`.
    front_seq: u64,
    /// Payload bytes of the frames held.
    bytes: usize,
    /// Data frames per connection and direction, oldest first.
    index: HashMap<(ConnId, Direction), VecDeque<Indexed>, IdHash>,
    /// Arrival number of each connection's newest frame.
    newest: HashMap<ConnId, u64, IdHash>,
    /// The frames' bytes.
    arena: Arena,
}

impl HoldBack {
    /// Frame bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The oldest frame.
    pub(crate) fn front(&self) -> Option<&Held> {
        self.frames.front()
    }

    /// Where new frames put their bytes before they are [`push`](Self::push)ed,
    /// in the same order.
    pub(crate) fn arena(&mut self) -> &mut Arena {
        &mut self.arena
    }

    /// Starts the arena over when nothing is held (call it only while no
    /// frame is being built).
    pub(crate) fn settle(&mut self) {
        if self.frames.is_empty() {
            self.arena.clear();
        }
    }

    /// Holds `held`, which came from a tap whose stream range ends at
    /// `tap_end` (for data frames).
    pub(crate) fn push(&mut self, held: Held, tap_end: u64) {
        let seq = self.front_seq + self.frames.len() as u64;
        if let Some(dir) = held.dir {
            self.index
                .entry((held.conn, dir))
                .or_default()
                .push_back(Indexed {
                    seq,
                    range: held.range.clone(),
                    tap_end,
                });
        }
        self.newest.insert(held.conn, seq);
        self.bytes += held.frame.len;
        self.frames.push_back(held);
    }

    /// Takes the oldest frame out, with its bytes.
    pub(crate) fn pop_front(&mut self) -> Option<(Held, &[u8])> {
        let held = self.frames.pop_front()?;
        // The bytes of frames written before it are no longer needed.
        self.arena.drop_before(held.bytes.chunk);
        let seq = self.front_seq;
        self.front_seq += 1;
        self.bytes -= held.frame.len;
        if let Some(dir) = held.dir {
            let key = (held.conn, dir);
            if let Some(list) = self.index.get_mut(&key) {
                // Both are in arrival order: the oldest frame is the front.
                if list.front().is_some_and(|i| i.seq == seq) {
                    list.pop_front();
                }
                if list.is_empty() {
                    self.index.remove(&key);
                }
            }
        }
        if self.newest.get(&held.conn) == Some(&seq) {
            self.newest.remove(&held.conn);
        }
        let bytes = self.arena.get(held.bytes);
        Some((held, bytes))
    }

    /// Adds `comment` to every held frame (on either leg) carrying stream
    /// byte `offset` of `dir` on `conn`; says whether there was one.
    pub(crate) fn annotate(
        &mut self,
        conn: ConnId,
        dir: Direction,
        offset: u64,
        comment: &str,
    ) -> bool {
        let Some(list) = self.index.get(&(conn, dir)) else {
            return false;
        };
        let mut hit = false;
        for i in list.iter().rev() {
            if i.tap_end <= offset {
                break;
            }
            if i.range.contains(&offset) {
                let at = (i.seq - self.front_seq) as usize;
                if let Some(h) = self.frames.get_mut(at) {
                    h.frame.comments.push(comment.to_owned());
                    hit = true;
                }
            }
        }
        hit
    }

    /// The newest frame of `conn` still held.
    pub(crate) fn newest_of(&mut self, conn: ConnId) -> Option<&mut Held> {
        let seq = *self.newest.get(&conn)?;
        self.frames.get_mut((seq - self.front_seq) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::synth::Leg;

    fn frame(conn: ConnId, dir: Option<Direction>, range: Range<u64>, leg: Leg) -> Held {
        Held {
            conn,
            dir,
            range,
            since: Instant::now(),
            frame: SynthFrame {
                leg,
                at: 0,
                len: 10,
                captured: 10,
                comments: Vec::new(),
            },
            bytes: Span::default(),
        }
    }

    #[test]
    fn notes_reach_both_legs_of_their_byte_and_nothing_else() {
        let mut hold = HoldBack::default();
        let req = Direction::Request;
        // One tap [0, 200) seen on both legs, in two segments each.
        for leg in [Leg::Client, Leg::Sensor] {
            hold.push(frame(1, Some(req), 0..100, leg), 200);
            hold.push(frame(1, Some(req), 100..200, leg), 200);
        }
        hold.push(frame(2, Some(req), 0..100, Leg::Client), 100);
        hold.push(frame(1, None, 200..200, Leg::Client), 200);
        // The next tap [200, 300).
        hold.push(frame(1, Some(req), 200..300, Leg::Client), 300);
        assert!(hold.annotate(1, req, 150, "x"));
        let marked: Vec<usize> = hold
            .frames
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.frame.comments.is_empty())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(marked, vec![1, 3]);
        assert!(!hold.annotate(1, req, 300, "ahead"));
        assert!(!hold.annotate(1, Direction::Response, 0, "other way"));
        assert!(hold.annotate(2, req, 0, "y"));
        assert_eq!(hold.newest_of(1).map(|h| h.range.clone()), Some(200..300));
    }

    #[test]
    fn the_index_follows_frames_out() {
        let mut hold = HoldBack::default();
        let req = Direction::Request;
        hold.push(frame(1, Some(req), 0..100, Leg::Client), 100);
        hold.push(frame(1, Some(req), 100..200, Leg::Client), 200);
        assert_eq!(hold.bytes(), 20);
        assert_eq!(hold.pop_front().map(|h| h.0.range), Some(0..100));
        assert!(!hold.annotate(1, req, 50, "gone"));
        assert!(hold.annotate(1, req, 150, "still here"));
        assert_eq!(hold.pop_front().map(|h| h.0.frame.comments.len()), Some(1));
        assert!(hold.newest_of(1).is_none());
        assert!(hold.index.is_empty());
        assert_eq!(hold.bytes(), 0);
        assert!(hold.pop_front().is_none());
    }
}

#[cfg(test)]
mod arena_tests {
    use super::*;

    #[test]
    fn frames_keep_their_bytes_across_chunks_until_written() {
        let mut arena = Arena::default();
        let mut spans = Vec::new();
        for i in 0..3000usize {
            let len = 1 + (i * 7919) % 1600;
            let c = arena.room(len);
            let start = c.len();
            c.extend(std::iter::repeat_n(i as u8, len));
            spans.push((arena.span(start), i as u8, len));
        }
        assert!(arena.chunks.len() > 1);
        for (n, (span, byte, len)) in spans.iter().enumerate() {
            let b = arena.get(*span);
            assert_eq!(b.len(), *len);
            assert!(b.iter().all(|x| x == byte));
            arena.drop_before(span.chunk);
            if n == spans.len() - 1 {
                assert_eq!(arena.chunks.len(), 1);
            }
        }
        arena.clear();
        assert_eq!(arena.chunks.len(), 1);
        assert!(arena.chunks[0].is_empty());
    }
}
