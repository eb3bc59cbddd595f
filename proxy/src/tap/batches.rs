//! The inbox of offline analysis: taps handed over in batches, one channel
//! operation per batch instead of per tap, from a reader that waits for
//! room and so loses nothing (a capture on disk can always wait; the live
//! proxy's traffic cannot, which is what [`super::queue`] is for).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::event::Tap;

/// Taps handed over at a time.
pub const TAP_BATCH: usize = 512;

/// Batches in flight between the reader and its side path. Each tap of a
/// capture pins a slice of a read block, so this also bounds the blocks
/// held.
pub const BATCHES_IN_FLIGHT: usize = 8;

/// The reader's end: collects taps into batches and hands each full batch
/// over, waiting while [`BATCHES_IN_FLIGHT`] are queued.
#[derive(Debug)]
pub struct TapBatches {
    tx: SyncSender<Vec<Tap>>,
    batch: Vec<Tap>,
    /// Whether the side path is still taking batches.
    open: bool,
}

/// The side path's end of [`TapBatches`].
#[derive(Debug)]
pub struct BatchReceiver {
    rx: Receiver<Vec<Tap>>,
}

impl TapBatches {
    /// A batch channel and its receiving end.
    pub fn channel() -> (TapBatches, BatchReceiver) {
        let (tx, rx) = sync_channel(BATCHES_IN_FLIGHT);
        (
            TapBatches {
                tx,
                batch: Vec::with_capacity(TAP_BATCH),
                open: true,
            },
            BatchReceiver { rx },
        )
    }

    /// Adds `tap` to the current batch, handing the batch over when full.
    /// Once the side path is gone, taps are let go.
    pub fn push(&mut self, tap: Tap) {
        if !self.open {
            return;
        }
        self.batch.push(tap);
        if self.batch.len() == TAP_BATCH {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(TAP_BATCH));
            self.open = self.tx.send(full).is_ok();
        }
    }

    /// Hands over the last, partial batch and closes the channel.
    pub fn close(mut self) {
        if self.open && !self.batch.is_empty() {
            let _ = self.tx.send(std::mem::take(&mut self.batch));
        }
    }
}

impl BatchReceiver {
    /// The next batch, blocking the thread; `None` once the reader closed
    /// the channel and every batch was taken.
    pub fn recv(&self) -> Option<Vec<Tap>> {
        self.rx.recv().ok()
    }
}
