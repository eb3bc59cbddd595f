//! The hold-back buffer: frames wait here briefly before they are written,
//! so that an observer's note about a byte (a verdict, an anomaly) that
//! arrives just after the byte can still become a comment on its packet.
//!
//! Frames leave in the order they came. Notes find their frames through an
//! index per connection and direction instead of a scan of everything held:
//! with many connections and a second of hold-back, a scan per note cost
//! more than forwarding the bytes (profiled: 14% of the proxy's CPU time
//! on small exchanges).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::time::Instant;

use super::synth::Frame;
use crate::tap::{ConnId, Direction};

/// A frame waiting in the hold-back buffer.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) conn: ConnId,
    /// The stream whose bytes it carries, for data segments.
    pub(crate) dir: Option<Direction>,
    pub(crate) range: Range<u64>,
    pub(crate) since: Instant,
    pub(crate) frame: Frame,
}

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
    index: HashMap<(ConnId, Direction), VecDeque<Indexed>>,
    /// Arrival number of each connection's newest frame.
    newest: HashMap<ConnId, u64>,
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
        self.bytes += held.frame.data.len();
        self.frames.push_back(held);
    }

    /// Takes the oldest frame out.
    pub(crate) fn pop_front(&mut self) -> Option<Held> {
        let held = self.frames.pop_front()?;
        let seq = self.front_seq;
        self.front_seq += 1;
        self.bytes -= held.frame.data.len();
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
        Some(held)
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
    use crate::record::synth::Leg;

    fn frame(conn: ConnId, dir: Option<Direction>, range: Range<u64>, leg: Leg) -> Held {
        Held {
            conn,
            dir,
            range,
            since: Instant::now(),
            frame: Frame {
                leg,
                at: 0,
                data: vec![0; 10],
                captured: 10,
                comments: Vec::new(),
            },
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
        assert_eq!(hold.pop_front().map(|h| h.range), Some(0..100));
        assert!(!hold.annotate(1, req, 50, "gone"));
        assert!(hold.annotate(1, req, 150, "still here"));
        assert_eq!(hold.pop_front().map(|h| h.frame.comments.len()), Some(1));
        assert!(hold.newest_of(1).is_none());
        assert!(hold.index.is_empty());
        assert_eq!(hold.bytes(), 0);
        assert!(hold.pop_front().is_none());
    }
}
