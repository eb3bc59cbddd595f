//! A side path's inbox: a queue bounded in data taps and in payload bytes
//! that the forwarding path offers taps to without ever waiting, and that
//! drops and counts the data that does not fit.
//!
//! Control taps (`Open`, `Closed`, `ConnectFailed`, `Finished`) are never
//! dropped and never wait: they go in past the bounds, in order with the
//! data, so that every connection a side path hears of has a start and an
//! end, whatever the load. They carry no payload and a connection sends at
//! most four, so what they hold is bounded by the connections open.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// What a queue holds, shared by its two ends.
#[derive(Debug, Default)]
struct Held {
    /// Payload bytes queued.
    bytes: AtomicU64,
    /// Data taps queued.
    data: AtomicUsize,
}

impl Held {
    /// Frees the room of one data tap of `len` payload bytes.
    fn release(&self, len: u64) {
        self.bytes.fetch_sub(len, Ordering::Relaxed);
        self.data.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A side path's inbox: a queue bounded both in data taps and in payload
/// bytes that the forwarding path offers taps to without waiting. When
/// either bound is reached a data tap is dropped and counted; control taps
/// always go in (see the module header).
#[derive(Clone, Debug)]
pub struct TapQueue {
    tx: mpsc::UnboundedSender<Tap>,
    drops: Arc<DropCounters>,
    held: Arc<Held>,
    capacity: usize,
    budget: u64,
}

/// The receiving end of a [`TapQueue`], run by the side path.
#[derive(Debug)]
pub struct TapReceiver {
    rx: mpsc::UnboundedReceiver<Tap>,
    held: Arc<Held>,
    capacity: usize,
    budget: u64,
}

/// How full a side path's queue is: what tells a side path that it is
/// behind and should shed optional work before it must drop input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backlog {
    /// The larger of the two fill ratios (data taps of capacity, payload
    /// bytes of budget), 0.0 to 1.0.
    pub filled: f64,
}

/// How long a side path at a nice level sleeps between looks at its queue
/// while taps keep coming (see [`TapReceiver::take_while_busy`]).
pub const BUSY_POLL: Duration = Duration::from_micros(50);

/// The same for a side path whose thread is `SCHED_IDLE`: any thread that
/// wakes preempts it, so its bursts of work delay no one and it can look
/// twenty times less often.
pub const IDLE_POLL: Duration = Duration::from_millis(1);

/// How long a side path keeps looking at its queue after a look found
/// nothing, before it waits on the queue (see
/// [`TapReceiver::take_while_busy`]).
pub const LINGER: Duration = Duration::from_millis(5);

/// How long a lossless sender (tests, benches) sleeps before looking for
/// room again.
const ROOM_POLL: Duration = Duration::from_millis(1);

/// What [`TapReceiver::take_while_busy`] hands its caller.
#[derive(Debug)]
pub enum Busy {
    /// The next tap.
    Tap(Tap),
    /// A look at the queue begins: how full it is, before the taps it
    /// holds are handed out.
    Backlog(Backlog),
    /// A look at the queue has ended, and it found taps: time for the
    /// caller's timers.
    Looked,
}

/// The payload bytes `tap` counts against a queue's budget, or `None` for
/// a control tap.
fn payload(tap: &Tap) -> Option<u64> {
    match &tap.event {
        TapEvent::Data { bytes, .. } => Some(bytes.len() as u64),
        _ => None,
    }
}

impl TapReceiver {
    /// Takes taps while they keep coming, looking every `pause()` (one of
    /// [`BUSY_POLL`] and [`IDLE_POLL`]) rather than waiting on the queue:
    /// a waiting receiver is woken (a futex wake and a context switch) for
    /// every tap, which on a busy machine costs the forwarding path more
    /// than the side path's work on the tap. Hands `each` how full the
    /// queue is at the start of every look ([`Busy::Backlog`]), every tap
    /// and, after every look that found some, [`Busy::Looked`].
    ///
    /// After a look that finds nothing it lingers: it keeps looking for
    /// [`LINGER`] before it returns. A keep-alive client's next request
    /// comes well within that, so the forwarding path's send between two
    /// round trips finds the side path looking, not waiting, and wakes no
    /// thread. An idle side path then waits on the queue and costs
    /// nothing. Returns false when the queue is closed and empty.
    pub fn take_while_busy(
        &mut self,
        pause: impl Fn() -> Duration,
        mut each: impl FnMut(Busy),
    ) -> bool {
        let mut empty_since: Option<Instant> = None;
        loop {
            let mut got = false;
            each(Busy::Backlog(self.backlog()));
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
            if got {
                each(Busy::Looked);
                empty_since = None;
            } else if empty_since.get_or_insert_with(Instant::now).elapsed() >= LINGER {
                return true;
            }
            std::thread::sleep(pause());
        }
    }

    fn take(&self, tap: Tap) -> Tap {
        if let Some(len) = payload(&tap) {
            self.held.release(len);
        }
        tap
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
        self.held.bytes.load(Ordering::Relaxed)
    }

    /// How full the queue is now.
    pub fn backlog(&self) -> Backlog {
        let taps = self.held.data.load(Ordering::Relaxed) as f64 / self.capacity as f64;
        let bytes = self.queued_bytes() as f64 / self.budget as f64;
        Backlog {
            filled: taps.max(bytes).min(1.0),
        }
    }
}

impl TapQueue {
    /// A queue holding at most `capacity` data taps and
    /// [`DEFAULT_QUEUE_BYTES`] of payload, and its receiving end.
    pub fn bounded(capacity: usize) -> (TapQueue, TapReceiver) {
        TapQueue::with_budget(capacity, DEFAULT_QUEUE_BYTES)
    }

    /// A queue holding at most `capacity` data taps and `bytes` of payload.
    pub fn with_budget(capacity: usize, bytes: u64) -> (TapQueue, TapReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let held = Arc::new(Held::default());
        (
            TapQueue {
                tx,
                drops: Arc::new(DropCounters::default()),
                held: held.clone(),
                capacity: capacity.max(1),
                budget: bytes.max(1),
            },
            TapReceiver {
                rx,
                held,
                capacity: capacity.max(1),
                budget: bytes.max(1),
            },
        )
    }

    fn dropped(&self, len: u64) -> bool {
        self.drops.taps.fetch_add(1, Ordering::Relaxed);
        self.drops.bytes.fetch_add(len, Ordering::Relaxed);
        false
    }

    /// Reserves room for a data tap of `len` payload bytes; false when the
    /// queue is full in taps or in bytes. Reserving before sending keeps
    /// two sessions from both squeezing past a bound.
    fn reserve(&self, len: u64) -> bool {
        if self.held.data.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.held.data.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let before = self.held.bytes.fetch_add(len, Ordering::Relaxed);
        if len > 0 && before + len > self.budget {
            self.held.release(len);
            return false;
        }
        true
    }

    /// Queues a tap whose room is reserved (or a control tap, which needs
    /// none); false when the consumer is gone, and the room is given back.
    fn send(&self, tap: Tap) -> bool {
        let len = payload(&tap);
        if self.tx.send(tap).is_err() {
            if let Some(len) = len {
                self.held.release(len);
            }
            return false;
        }
        true
    }

    /// Offers `tap` without waiting. A data tap is dropped and counted when
    /// the queue is full (in taps or in bytes) or its consumer is gone; a
    /// control tap always goes in while there is a consumer. Returns
    /// whether it was queued.
    pub fn offer(&self, tap: Tap) -> bool {
        match payload(&tap) {
            Some(len) => {
                if !self.reserve(len) || !self.send(tap) {
                    return self.dropped(len);
                }
                true
            }
            None => self.send(tap) || self.dropped(0),
        }
    }

    /// Offers a data tap like [`TapQueue::offer`], handing it back when it
    /// was dropped (counted as such), so that the caller can say so
    /// without having copied anything beforehand.
    fn try_offer_data(&self, tap: Tap) -> Result<(), Tap> {
        let len = payload(&tap).unwrap_or(0);
        if !self.reserve(len) {
            self.dropped(len);
            return Err(tap);
        }
        match self.tx.send(tap) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(tap)) => {
                self.held.release(len);
                self.dropped(len);
                Err(tap)
            }
        }
    }

    /// Delivers `tap` from a plain thread without losing it: a control tap
    /// goes in at once, a data tap waits for room (tests and benches that
    /// feed a side path directly). Returns whether the consumer was still
    /// there.
    pub fn deliver_blocking(&self, tap: Tap) -> bool {
        if let Some(len) = payload(&tap) {
            while !self.reserve(len) {
                if self.tx.is_closed() {
                    return false;
                }
                std::thread::sleep(ROOM_POLL);
            }
        }
        self.send(tap)
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

    /// Offers a data tap to every side path without waiting; when the
    /// observer's queue drops it, and the previous data tap of this
    /// direction got through (`dropping` false), the observer is told at
    /// once with a [`TapEvent::Lost`] control tap, so that it never pairs
    /// what comes next on the other direction with what it missed. One
    /// such tap per run of drops, so they are bounded by the data taps
    /// delivered. `dropping` is the caller's, one per direction.
    pub fn offer_data(&self, tap: Tap, dropping: &mut bool) {
        if let Some(r) = &self.recorder {
            r.offer(tap.clone());
        }
        let Some(o) = &self.observer else {
            return;
        };
        let tap = match o.try_offer_data(tap) {
            Ok(()) => {
                *dropping = false;
                return;
            }
            Err(tap) => tap,
        };
        if *dropping {
            return;
        }
        if let TapEvent::Data { dir, offset, .. } = tap.event {
            *dropping = true;
            o.offer(Tap {
                event: TapEvent::Lost { dir, offset },
                ..tap
            });
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
    fn taking_while_busy_takes_what_keeps_coming_and_lingers_before_it_returns() {
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
            open = rx.take_while_busy(
                || BUSY_POLL,
                |busy| match busy {
                    Busy::Tap(tap) => match tap.event {
                        TapEvent::Data { offset, .. } => offsets.push(offset),
                        _ => panic!("only data was offered"),
                    },
                    Busy::Looked => looks += 1,
                    Busy::Backlog(_) => {}
                },
            );
        }
        assert!(open, "the queue is still open");
        assert_eq!(offsets, vec![0, 10, 20, 30, 40, 50]);
        assert!(looks >= 1);
        // The queue closes: the first empty look says so.
        drop(late.join().unwrap());
        assert!(!rx.take_while_busy(|| BUSY_POLL, |_| {}));
    }

    #[test]
    fn a_tap_offered_while_the_receiver_lingers_is_taken_without_waking_it() {
        let conn = conn();
        let (queue, mut rx) = TapQueue::with_budget(1000, 100_000);
        assert!(queue.offer(data(&conn, 0, 10)));
        let mut offsets = Vec::new();
        let mut looks = 0;
        let started = Instant::now();
        let open = rx.take_while_busy(
            || BUSY_POLL,
            |busy| match busy {
                Busy::Backlog(_) => {
                    looks += 1;
                    // The third look comes after one that found nothing: the
                    // receiver is lingering, and takes what comes then.
                    if looks == 3 {
                        assert!(queue.offer(data(&conn, 10, 10)));
                    }
                }
                Busy::Tap(tap) => match tap.event {
                    TapEvent::Data { offset, .. } => offsets.push(offset),
                    _ => panic!("only data was offered"),
                },
                Busy::Looked => {}
            },
        );
        assert!(open);
        assert_eq!(offsets, vec![0, 10], "both taps were taken in one call");
        assert!(looks > 3, "it kept looking after the second tap");
        assert!(
            started.elapsed() >= LINGER,
            "it returned only after lingering with nothing to take"
        );
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

    #[test]
    fn control_taps_go_in_past_a_full_queue_in_order_with_the_data() {
        let conn = conn();
        let control = |event| Tap {
            event,
            ..data(&conn, 0, 0)
        };
        let (queue, mut rx) = TapQueue::with_budget(2, 100_000);
        assert!(queue.offer(control(TapEvent::Open)));
        assert!(queue.offer(data(&conn, 0, 10)));
        assert!(queue.offer(data(&conn, 10, 10)));
        // Full in taps: data is dropped, the connection's end is not.
        assert!(!queue.offer(data(&conn, 20, 10)));
        assert!(queue.offer(control(TapEvent::Finished)));
        assert_eq!(queue.drops().taps.load(Ordering::Relaxed), 1);
        let got: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|tap| match tap.event {
                TapEvent::Open => "open",
                TapEvent::Data { .. } => "data",
                TapEvent::Finished => "finished",
                _ => "other",
            })
            .collect();
        assert_eq!(got, ["open", "data", "data", "finished"]);
        // Taking frees the room of the data taps only.
        assert!(queue.offer(data(&conn, 20, 10)));
    }

    #[test]
    fn a_run_of_dropped_data_is_told_to_the_observer_once_in_order() {
        let conn = conn();
        let (observer, mut rx) = TapQueue::with_budget(1, 100_000);
        let sinks = TapSinks {
            observer: Some(observer),
            recorder: None,
        };
        let mut dropping = false;
        sinks.offer_data(data(&conn, 0, 10), &mut dropping);
        // Full: the next two are dropped, and said once.
        sinks.offer_data(data(&conn, 10, 10), &mut dropping);
        sinks.offer_data(data(&conn, 20, 10), &mut dropping);
        assert!(dropping);
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|tap| match tap.event {
                TapEvent::Data { offset, .. } => format!("data {offset}"),
                TapEvent::Lost { offset, .. } => format!("lost {offset}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["data 0", "lost 10"]);
        // Room again: delivered, and a later drop is a new run.
        sinks.offer_data(data(&conn, 30, 10), &mut dropping);
        assert!(!dropping);
        sinks.offer_data(data(&conn, 40, 10), &mut dropping);
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|tap| match tap.event {
                TapEvent::Data { offset, .. } => format!("data {offset}"),
                TapEvent::Lost { offset, .. } => format!("lost {offset}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["data 30", "lost 40"]);
    }
}
