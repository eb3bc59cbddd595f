//! Where annotations land: each note becomes a comment on the packet that
//! carries its byte, on every recorded leg. The recorder asks here what to
//! do with a note its hold-back buffer could not place right away:
//!
//! - a note for a byte not recorded yet waits with its connection and is
//!   attached when the frames carrying the byte are made;
//! - a note whose packet was already written (or whose byte fell into a
//!   gap) goes, with its stream offset spelled out, on the next packet
//!   written for that connection;
//! - a note for a connection not seen yet waits (at most
//!   [`EARLY_ANNOTATIONS`] of them) until it opens;
//! - what is left when a connection finishes goes on its last packet
//!   still held, or is dropped and counted.

use std::collections::HashMap;

use super::annotate::Annotation;
use super::hold::{Held, IdHash};
use crate::tap::{ConnId, Direction};

/// Most annotations kept for connections the recorder has not seen yet.
pub const EARLY_ANNOTATIONS: usize = 4096;

/// The notes of one connection that have no packet yet.
#[derive(Debug, Default)]
pub(crate) struct ConnNotes {
    /// Annotations for bytes not recorded yet.
    ahead: Vec<Annotation>,
    /// Comments whose packet was already written.
    late: Vec<String>,
}

impl ConnNotes {
    /// Notes that were waiting for the connection to open.
    pub(crate) fn waiting(ahead: Vec<Annotation>) -> ConnNotes {
        ConnNotes {
            ahead,
            late: Vec::new(),
        }
    }

    /// Keeps `note`, which no held packet carries; `next` is the next
    /// stream offset of its direction to be recorded.
    pub(crate) fn keep(&mut self, note: Annotation, next: u64) {
        if note.offset >= next {
            self.ahead.push(note);
        } else {
            self.late.push(late_comment(&note));
        }
    }

    /// Attaches the waiting notes to `frames`, the frames just made for one
    /// tap; `next` gives the next stream offset of each direction. Returns
    /// how many notes were placed.
    pub(crate) fn attach(&mut self, frames: &mut [Held], next: impl Fn(Direction) -> u64) -> u64 {
        let mut attached = 0u64;
        if !self.ahead.is_empty() {
            let mut keep = Vec::with_capacity(self.ahead.len());
            for note in self.ahead.drain(..) {
                let mut hit = false;
                for h in frames.iter_mut() {
                    if h.dir == Some(note.dir) && h.range.contains(&note.offset) {
                        h.frame.comments.push(note.comment.clone());
                        hit = true;
                    }
                }
                if hit {
                    attached += 1;
                } else if note.offset < next(note.dir) {
                    // Its byte fell into a gap: say so on the next packet.
                    self.late.push(late_comment(&note));
                } else {
                    keep.push(note);
                }
            }
            self.ahead = keep;
        }
        if let Some(first) = frames.first_mut() {
            attached += self.late.len() as u64;
            first.frame.comments.append(&mut self.late);
        }
        attached
    }

    /// The connection finished: notes for bytes that never came go on its
    /// newest held frame `last`. Returns how many were placed and how many
    /// are dropped.
    pub(crate) fn close(mut self, last: Option<&mut Held>) -> (u64, u64) {
        let mut placed = 0u64;
        if let Some(last) = last {
            for a in self.ahead.drain(..) {
                last.frame.comments.push(a.comment);
                placed += 1;
            }
        }
        (placed, self.pending() as u64)
    }

    /// Notes not placed yet.
    pub(crate) fn pending(&self) -> usize {
        self.ahead.len() + self.late.len()
    }
}

/// Notes for connections the recorder has not seen yet (the observer can
/// be ahead of the recorder's queue).
#[derive(Debug, Default)]
pub(crate) struct EarlyNotes {
    by_conn: HashMap<ConnId, Vec<Annotation>, IdHash>,
    count: usize,
}

impl EarlyNotes {
    /// Keeps `note` unless [`EARLY_ANNOTATIONS`] are waiting already; says
    /// whether it was kept.
    pub(crate) fn offer(&mut self, note: Annotation) -> bool {
        if self.count >= EARLY_ANNOTATIONS {
            return false;
        }
        self.count += 1;
        self.by_conn.entry(note.conn).or_default().push(note);
        true
    }

    /// The notes waiting for connection `id`.
    pub(crate) fn take(&mut self, id: ConnId) -> Vec<Annotation> {
        match self.by_conn.remove(&id) {
            Some(v) => {
                self.count -= v.len();
                v
            }
            None => Vec::new(),
        }
    }

    /// Notes waiting.
    pub(crate) fn len(&self) -> usize {
        self.count
    }
}

/// The comment of a note whose packet was already written.
fn late_comment(note: &Annotation) -> String {
    let stream = match note.dir {
        Direction::Request => "request",
        Direction::Response => "response",
    };
    format!(
        "{} [refers to byte {} of the {stream} stream, in an earlier packet]",
        note.comment, note.offset
    )
}
