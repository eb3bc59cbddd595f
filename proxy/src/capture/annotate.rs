//! Annotations: notes the observer pins on the bytes it found something in
//! (an anomaly code, an exchange id, a non-clean verdict). The recorder
//! writes each one as a pcapng packet comment (`opt_comment`) on the packet
//! that carries the byte, so Wireshark's `pkt_comment` filter finds it.
//!
//! The channel is bounded and `try_send` only: the observer never waits for
//! the recorder. A full channel drops the note and counts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;

use crate::tap::{ConnId, Direction};

/// How many annotations may wait for the recorder before new ones are dropped.
pub const ANNOTATION_QUEUE_CAPACITY: usize = 4096;

/// A note about one byte of one stream of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotation {
    /// The connection.
    pub conn: ConnId,
    /// The stream the byte belongs to.
    pub dir: Direction,
    /// Stream offset of the relevant byte (e.g. an anomaly's offset, or the
    /// first byte of the response that carried a verdict).
    pub offset: u64,
    /// The comment text, e.g. `icaptap: encapsulated-order (error) exchange 3.1`.
    pub comment: String,
}

/// The observer's end of the annotation channel. Cloneable; never blocks.
#[derive(Clone, Debug)]
pub struct AnnotationSender {
    tx: SyncSender<Annotation>,
    dropped: Arc<AtomicU64>,
}

/// The recorder's end of the annotation channel.
#[derive(Debug)]
pub struct AnnotationReceiver {
    pub(crate) rx: mpsc::Receiver<Annotation>,
    pub(crate) dropped: Arc<AtomicU64>,
}

/// A bounded annotation channel holding at most `capacity` notes.
pub fn annotation_channel(capacity: usize) -> (AnnotationSender, AnnotationReceiver) {
    let (tx, rx) = mpsc::sync_channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        AnnotationSender {
            tx,
            dropped: Arc::clone(&dropped),
        },
        AnnotationReceiver { rx, dropped },
    )
}

impl AnnotationSender {
    /// Offers `note` without waiting; a full channel or a recorder that is
    /// gone drops it and counts it. Returns whether it was queued.
    pub fn try_send(&self, note: Annotation) -> bool {
        match self.tx.try_send(note) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Notes dropped so far because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl AnnotationReceiver {
    /// A receiver whose sender is already gone: for runs without an observer.
    pub fn disconnected() -> AnnotationReceiver {
        annotation_channel(1).1
    }
}
