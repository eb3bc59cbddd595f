//! One engine for every side path (the live observer, the recorder, the
//! offline observer): a thread of its own, at a lower CPU priority than
//! forwarding, that takes taps from an inbox, hands them to the side path,
//! gives it a tick for its clock work, and finishes it when the inbox
//! closes.
//!
//! While taps keep coming from a live queue the engine looks at the queue
//! every [`BUSY_POLL`] instead of being woken for each tap, and keeps
//! looking for [`LINGER`](super::queue::LINGER) after the queue runs dry,
//! so that a keep-alive client's next round trip finds it looking (see
//! [`TapReceiver::take_while_busy`]); when idle longer it waits on the
//! queue and costs nothing. A live side path's thread is `SCHED_IDLE` while
//! it keeps up and takes its nice level's share once it falls behind
//! ([`Standing`]); while it is `SCHED_IDLE` it looks only every
//! [`IDLE_POLL`] (1 ms), since any thread that wakes takes the CPU from it
//! at once. At a nice level, looking every millisecond made the side paths
//! run in bursts that delayed forwarding, and looking every 50 µs woke a
//! side-path thread about once per round trip (docs/performance.md).
//! Ticks come every tick interval while idle and
//! at most once per interval while busy, so a steady stream of taps never
//! starves the clock and never pays for it per tap.

use std::cell::Cell;
use std::sync::mpsc::{sync_channel, SendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::batches::BatchReceiver;
use super::event::Tap;
use super::priority::{lower_thread_priority, Standing};
use super::queue::{Backlog, Busy, TapReceiver, BUSY_POLL, IDLE_POLL};

/// A consumer of taps on its own thread.
pub trait SidePath: Send + 'static {
    /// Handles one tap, in the order the connection reported them.
    fn on_tap(&mut self, tap: Tap);
    /// Clock work: timeouts, releasing what was held, flushing.
    fn tick(&mut self);
    /// The inbox is closed and empty: nothing more will come.
    fn finish(&mut self);
    /// How full a live inbox is, after every look at it: a side path that
    /// falls behind sheds optional work here, before its inbox must drop
    /// input. Not called for batches, which wait for room.
    fn backlog(&mut self, _backlog: Backlog) {}
}

/// Where a side path's taps come from.
#[derive(Debug)]
pub enum Inbox {
    /// The live proxy's bounded, lossy queue.
    Live(TapReceiver),
    /// Batches from a capture reader that waits for room.
    Batches(BatchReceiver),
}

/// An inbox with what its thread needs to wait on it.
enum Driven {
    Live(TapReceiver, tokio::runtime::Runtime),
    Batches(BatchReceiver),
}

/// A side path's thread; [`SidePathThread::join`] hands the side path
/// back once it has finished.
pub struct SidePathThread<P> {
    thread: JoinHandle<Option<P>>,
}

impl<P> std::fmt::Debug for SidePathThread<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SidePathThread")
            .field(&self.thread.thread().name())
            .finish()
    }
}

impl<P> SidePathThread<P> {
    /// Waits until the inbox is closed, drained and the side path finished.
    pub fn join(self) -> std::thread::Result<P> {
        self.thread.join()?.ok_or_else(|| {
            Box::new("the side path never reached its thread") as Box<dyn std::any::Any + Send>
        })
    }
}

/// A side path whose thread could not be started, handed back so the
/// caller may run it another way or report `error`.
pub struct NotStarted<P> {
    /// Why (out of threads or memory).
    pub error: std::io::Error,
    /// The side path, untouched.
    pub path: P,
}

impl<P> std::fmt::Debug for NotStarted<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NotStarted({})", self.error)
    }
}

/// Runs `path` on a thread called `name`, at `niceness` if given, fed by
/// `inbox`, ticked every `tick` if given, until the inbox closes; then
/// finishes it.
pub fn spawn<P: SidePath>(
    name: &str,
    niceness: Option<i32>,
    tick: Option<Duration>,
    inbox: Inbox,
    path: P,
) -> Result<SidePathThread<P>, NotStarted<P>> {
    // A live queue is waited on with a timer: a current-thread runtime on
    // the side path's own thread, one `block_on` for its whole life.
    let inbox = match inbox {
        Inbox::Live(taps) => match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => Driven::Live(taps, runtime),
            Err(error) => return Err(NotStarted { error, path }),
        },
        Inbox::Batches(batches) => Driven::Batches(batches),
    };
    // The side path is handed over only once its thread runs, so that it
    // is still at hand if no thread can be started.
    let (give, take) = sync_channel::<P>(1);
    let started = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut path = take.recv().ok()?;
            match inbox {
                Driven::Live(mut taps, runtime) => {
                    let mut standing = niceness.map(Standing::begin);
                    runtime.block_on(run_live(&mut path, &mut taps, tick, &mut standing));
                }
                Driven::Batches(batches) => {
                    if let Some(niceness) = niceness {
                        lower_thread_priority(niceness);
                    }
                    run_batches(&mut path, &batches, tick);
                }
            }
            path.finish();
            Some(path)
        });
    let thread = match started {
        Ok(thread) => thread,
        Err(error) => return Err(NotStarted { error, path }),
    };
    match give.send(path) {
        Ok(()) => Ok(SidePathThread { thread }),
        Err(SendError(path)) => Err(NotStarted {
            error: std::io::Error::other(format!("the {name} thread ended at its start")),
            path,
        }),
    }
}

/// Waits for the ticker's next tick, or forever without one.
async fn next_tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The live loop: waits on the queue when idle, takes taps while busy.
async fn run_live<P: SidePath>(
    path: &mut P,
    taps: &mut TapReceiver,
    every: Option<Duration>,
    standing: &mut Option<Standing>,
) {
    // Whether the thread is SCHED_IDLE now, for how often to look.
    let idle = Cell::new(standing.as_ref().is_some_and(Standing::is_idle));
    let pause = || if idle.get() { IDLE_POLL } else { BUSY_POLL };
    let mut backlog = |path: &mut P, backlog: Backlog| {
        if let Some(standing) = standing.as_mut() {
            standing.follow(backlog);
            idle.set(standing.is_idle());
        }
        path.backlog(backlog);
    };
    let mut ticker = every.map(|every| {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    loop {
        // The ticker first: it is ready only when due, and a steady stream
        // of taps must not starve the clock work.
        tokio::select! {
            biased;
            _ = next_tick(&mut ticker) => path.tick(),
            tap = taps.recv() => match tap {
                Some(tap) => {
                    backlog(path, taps.backlog());
                    path.on_tap(tap);
                    let mut last_tick = Instant::now();
                    let open = taps.take_while_busy(pause, |busy| match busy {
                        Busy::Tap(tap) => path.on_tap(tap),
                        Busy::Backlog(filled) => backlog(path, filled),
                        Busy::Looked => {
                            if let (Some(every), Some(ticker)) = (every, ticker.as_mut()) {
                                if last_tick.elapsed() >= every {
                                    path.tick();
                                    ticker.reset();
                                    last_tick = Instant::now();
                                }
                            }
                        }
                    });
                    if !open {
                        break;
                    }
                }
                None => break,
            },
        }
    }
}

/// The batch loop: every batch in order, a tick between batches when due.
fn run_batches<P: SidePath>(path: &mut P, batches: &BatchReceiver, every: Option<Duration>) {
    let mut last_tick = Instant::now();
    while let Some(batch) = batches.recv() {
        for tap in batch {
            path.on_tap(tap);
        }
        if let Some(every) = every {
            if last_tick.elapsed() >= every {
                path.tick();
                last_tick = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;
    use crate::tap::batches::TapBatches;
    use crate::tap::event::{ConnMeta, TapEvent};
    use crate::tap::queue::TapQueue;

    /// Remembers what the engine handed it.
    #[derive(Debug, Default)]
    struct Log {
        taps: Vec<u64>,
        ticks: usize,
        finished: usize,
    }

    impl SidePath for Log {
        fn on_tap(&mut self, tap: Tap) {
            assert_eq!(self.finished, 0, "no tap after the finish");
            self.taps.push(tap.at);
        }

        fn tick(&mut self) {
            self.ticks += 1;
        }

        fn finish(&mut self) {
            self.finished += 1;
        }
    }

    fn tap(at: u64) -> Tap {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        Tap {
            conn: Arc::new(ConnMeta {
                id: 1,
                client: addr,
                listen: addr,
                upstream_local: None,
                server: addr,
                opened: 0,
            }),
            at,
            frame: None,
            event: TapEvent::Open,
        }
    }

    #[test]
    fn a_live_side_path_gets_every_queued_tap_in_order_then_one_finish() {
        let (queue, rx) = TapQueue::bounded(100);
        let thread = spawn(
            "test-live",
            None,
            Some(Duration::from_millis(10)),
            Inbox::Live(rx),
            Log::default(),
        )
        .unwrap();
        for at in 0..50 {
            assert!(queue.deliver_blocking(tap(at)));
        }
        // Idle for a few tick intervals: the clock work comes anyway.
        std::thread::sleep(Duration::from_millis(50));
        drop(queue);
        let log = thread.join().unwrap();
        assert_eq!(log.taps, (0..50).collect::<Vec<_>>());
        assert_eq!(log.finished, 1);
        assert!(log.ticks >= 1);
    }

    #[test]
    fn a_batched_side_path_gets_every_tap_across_batches_and_no_tick_without_a_clock() {
        let (mut batches, rx) = TapBatches::channel();
        let thread = spawn(
            "test-batches",
            None,
            None,
            Inbox::Batches(rx),
            Log::default(),
        )
        .unwrap();
        let n = 3 * crate::tap::batches::TAP_BATCH as u64 + 7;
        for at in 0..n {
            batches.push(tap(at));
        }
        batches.close();
        let log = thread.join().unwrap();
        assert_eq!(log.taps, (0..n).collect::<Vec<_>>());
        assert_eq!((log.ticks, log.finished), (0, 1));
    }
}
