//! A side path's inbox: a queue bounded in taps and in payload bytes that
//! the forwarding path offers taps to without ever waiting, and that drops
//! and counts what does not fit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::event::{Tap, TapEvent};

/// Counts what a side path missed because it was behind.
#[derive(Debug, Default)]
pub struct DropCounters {
    /// Taps not delivered.
    pub taps: AtomicU64,
    /// Payload bytes in taps not delivered.
    pub bytes: AtomicU64,
}

/// Payload bytes a side path's queue may hold by default. Counting taps
/// alone is not enough: each can carry a whole read buffer, so a side path
/// that falls behind would otherwise hold up to `capacity x buffer size`.
pub const DEFAULT_QUEUE_BYTES: u64 = 64 << 20;

/// A tap in a queue, with the payload bytes it counts against the budget.
#[derive(Debug)]
struct Queued {
    tap: Tap,
    bytes: u64,
}

/// A side path's inbox: a queue bounded both in taps and in payload bytes
/// that the forwarding path offers taps to without waiting. When either
/// bound is reached the tap is dropped and counted.
#[derive(Clone, Debug)]
pub struct TapQueue {
    tx: mpsc::Sender<Queued>,
    drops: Arc<DropCounters>,
    in_flight: Arc<AtomicU64>,
    budget: u64,
}

/// The receiving end of a [`TapQueue`], run by the side path.
#[derive(Debug)]
pub struct TapReceiver {
    rx: mpsc::Receiver<Queued>,
    in_flight: Arc<AtomicU64>,
}

/// How long a side path sleeps between looks at its queue while taps keep
/// coming (see [`TapReceiver::take_while_busy`]).
pub const BUSY_POLL: Duration = Duration::from_micros(50);

/// What [`TapReceiver::take_while_busy`] hands its caller.
#[derive(Debug)]
pub enum Busy {
    /// The next tap.
    Tap(Tap),
    /// A look at the queue has ended, and it found taps: time for the
    /// caller's timers.
    Looked,
}

impl TapReceiver {
    /// Takes taps while they keep coming, looking every [`BUSY_POLL`]
    /// rather than waiting on the queue: a waiting receiver is woken (a
    /// futex wake and a context switch) for every tap, which on a busy
    /// machine costs the forwarding path more than the side path's work on
    /// the tap. Hands `each` every tap and, after every look that found
    /// some, [`Busy::Looked`]. Returns as soon as a look finds nothing, so
    /// that an idle side path waits on the queue and costs nothing; false
    /// when the queue is closed and empty.
    pub fn take_while_busy(&mut self, mut each: impl FnMut(Busy)) -> bool {
        loop {
            let mut got = false;
            loop {
                match self.try_recv() {
                    Ok(tap) => {
                        each(Busy::Tap(tap));
                        got = true;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return false,
                }
            }
            if !got {
                return true;
            }
            each(Busy::Looked);
            std::thread::sleep(BUSY_POLL);
        }
    }

    fn take(&self, q: Queued) -> Tap {
        self.in_flight.fetch_sub(q.bytes, Ordering::Relaxed);
        q.tap
    }

    /// The next tap; `None` once every queue handle is gone and the queue
    /// is empty.
    pub async fn recv(&mut self) -> Option<Tap> {
        let q = self.rx.recv().await?;
        Some(self.take(q))
    }

    /// The next tap if one is waiting.
    pub fn try_recv(&mut self) -> Result<Tap, mpsc::error::TryRecvError> {
        let q = self.rx.try_recv()?;
        Ok(self.take(q))
    }

    /// The next tap, blocking the thread (for side paths on their own
    /// thread, never on a runtime worker).
    pub fn blocking_recv(&mut self) -> Option<Tap> {
        let q = self.rx.blocking_recv()?;
        Some(self.take(q))
    }

    /// Payload bytes queued and not yet received.
    pub fn queued_bytes(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl TapQueue {
    /// A queue holding at most `capacity` taps and [`DEFAULT_QUEUE_BYTES`]
    /// of payload, and its receiving end.
    pub fn bounded(capacity: usize) -> (TapQueue, TapReceiver) {
        TapQueue::with_budget(capacity, DEFAULT_QUEUE_BYTES)
    }

    /// A queue holding at most `capacity` taps and `bytes` of payload.
    pub fn with_budget(capacity: usize, bytes: u64) -> (TapQueue, TapReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let in_flight = Arc::new(AtomicU64::new(0));
        (
            TapQueue {
                tx,
                drops: Arc::new(DropCounters::default()),
                in_flight: in_flight.clone(),
                budget: bytes.max(1),
            },
            TapReceiver { rx, in_flight },
        )
    }

    fn dropped(&self, len: u64) -> bool {
        self.drops.taps.fetch_add(1, Ordering::Relaxed);
        self.drops.bytes.fetch_add(len, Ordering::Relaxed);
        false
    }

    /// Offers `tap` without waiting; drops and counts it when the queue is
    /// full (in taps or in bytes) or its consumer is gone. Returns whether
    /// it was queued.
    pub fn offer(&self, tap: Tap) -> bool {
        let len = match &tap.event {
            TapEvent::Data { bytes, .. } => bytes.len() as u64,
            _ => 0,
        };
        // Reserve first so two sessions cannot both squeeze past the budget.
        let before = self.in_flight.fetch_add(len, Ordering::Relaxed);
        if len > 0 && before + len > self.budget {
            self.in_flight.fetch_sub(len, Ordering::Relaxed);
            return self.dropped(len);
        }
        match self.tx.try_send(Queued { tap, bytes: len }) {
            Ok(()) => true,
            Err(_) => {
                self.in_flight.fetch_sub(len, Ordering::Relaxed);
                self.dropped(len)
            }
        }
    }

    /// Delivers `tap`, waiting for room: only for the few taps that must not
    /// be lost (a connection's end), sent after forwarding is over.
    pub async fn deliver(&self, tap: Tap) {
        let len = match &tap.event {
            TapEvent::Data { bytes, .. } => bytes.len() as u64,
            _ => 0,
        };
        self.in_flight.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(Queued { tap, bytes: len }).await.is_err() {
            self.in_flight.fetch_sub(len, Ordering::Relaxed);
            self.drops.taps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Delivers `tap` from a plain thread, blocking until there is room
    /// (tests and benches that feed a side path directly). Returns whether
    /// the consumer took it.
    pub fn deliver_blocking(&self, tap: Tap) -> bool {
        let len = match &tap.event {
            TapEvent::Data { bytes, .. } => bytes.len() as u64,
            _ => 0,
        };
        self.in_flight.fetch_add(len, Ordering::Relaxed);
        if self.tx.blocking_send(Queued { tap, bytes: len }).is_err() {
            self.in_flight.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// What this queue dropped so far.
    pub fn drops(&self) -> &Arc<DropCounters> {
        &self.drops
    }
}

/// Every side path a session reports to.
#[derive(Clone, Debug, Default)]
pub struct TapSinks {
    /// The observer's queue (decoding, verdicts, logs), if observing.
    pub observer: Option<TapQueue>,
    /// The recorder's queue (pcap), if recording.
    pub recorder: Option<TapQueue>,
}

impl TapSinks {
    /// Offers `tap` to every side path without waiting.
    pub fn offer(&self, tap: Tap) {
        if let Some(r) = &self.recorder {
            r.offer(tap.clone());
        }
        if let Some(o) = &self.observer {
            o.offer(tap);
        }
    }

    /// Delivers `tap` to every side path, waiting for room.
    pub async fn deliver(&self, tap: Tap) {
        if let Some(r) = &self.recorder {
            r.deliver(tap.clone()).await;
        }
        if let Some(o) = &self.observer {
            o.deliver(tap).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use bytes::Bytes;

    use super::*;
    use crate::tap::event::{ConnMeta, Direction};

    fn data(conn: &Arc<ConnMeta>, offset: u64, len: usize) -> Tap {
        Tap {
            conn: conn.clone(),
            at: 0,
            frame: None,
            event: TapEvent::Data {
                dir: Direction::Request,
                offset,
                bytes: Bytes::from(vec![0u8; len]),
            },
        }
    }

    fn conn() -> Arc<ConnMeta> {
        Arc::new(ConnMeta {
            id: 1,
            client: SocketAddr::from(([127, 0, 0, 1], 1)),
            listen: SocketAddr::from(([127, 0, 0, 1], 2)),
            upstream_local: None,
            server: SocketAddr::from(([127, 0, 0, 1], 3)),
            opened: 0,
        })
    }

    #[test]
    fn taking_while_busy_takes_what_keeps_coming_and_stops_at_the_first_empty_look() {
        let conn = conn();
        let (queue, mut rx) = TapQueue::with_budget(1000, 100_000);
        for i in 0..3 {
            assert!(queue.offer(data(&conn, i * 10, 10)));
        }
        // A sender that keeps offering for a while: its taps are taken in
        // later looks, without the receiver being woken for them.
        let late = std::thread::spawn(move || {
            for i in 3..6 {
                std::thread::sleep(BUSY_POLL / 4);
                assert!(queue.offer(data(&conn, i * 10, 10)));
            }
            queue
        });
        let mut offsets = Vec::new();
        let mut looks = 0;
        let mut open = true;
        while offsets.len() < 6 && open {
            open = rx.take_while_busy(|busy| match busy {
                Busy::Tap(tap) => match tap.event {
                    TapEvent::Data { offset, .. } => offsets.push(offset),
                    _ => panic!("only data was offered"),
                },
                Busy::Looked => looks += 1,
            });
        }
        assert!(open, "the queue is still open");
        assert_eq!(offsets, vec![0, 10, 20, 30, 40, 50]);
        assert!(looks >= 1);
        // The queue closes: the first empty look says so.
        drop(late.join().unwrap());
        assert!(!rx.take_while_busy(|_| {}));
    }

    #[test]
    fn a_queue_holds_at_most_its_byte_budget_and_frees_it_on_receive() {
        let conn = conn();
        let (queue, mut rx) = TapQueue::with_budget(1000, 100_000);
        assert!(queue.offer(data(&conn, 0, 60_000)));
        // Room in taps, not in bytes: dropped and counted.
        assert!(!queue.offer(data(&conn, 60_000, 60_000)));
        assert_eq!(queue.drops().taps.load(Ordering::Relaxed), 1);
        assert_eq!(queue.drops().bytes.load(Ordering::Relaxed), 60_000);
        // Control taps carry no payload and always fit.
        assert!(queue.offer(Tap {
            event: TapEvent::Open,
            ..data(&conn, 0, 0)
        }));
        assert_eq!(rx.queued_bytes(), 60_000);
        assert!(rx.try_recv().is_ok());
        assert_eq!(rx.queued_bytes(), 0);
        assert!(queue.offer(data(&conn, 120_000, 60_000)));
    }
}
