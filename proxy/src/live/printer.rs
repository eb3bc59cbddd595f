//! Getting the lines out without holding anything up. [`LiveLines`] is a
//! [`RecordSink`] in the observer's fan-out: it formats the line of each
//! exchange the filter selects where the record is written, and hands it
//! to a bounded queue. A thread of its own ([`LinePrinter`]) writes what
//! is queued, a batch per write, to standard output.
//!
//! Nothing waits for the console in a live run ([`Overflow::Drop`]): when
//! the terminal or the pipe reading it is slower than the exchanges, the
//! queue fills and the lines that find it full are not shown, and counted;
//! the next line that gets through is preceded by `... N lines not shown`
//! at the place of the gap. The records are written all the same. Offline
//! ([`Overflow::Wait`]) there is nothing to keep up with, so every line is
//! shown and the analysis goes at the console's pace, as `tcpdump -r` does.
//!
//! A console that went away (SIGHUP, a closed pipe) ends the printer
//! quietly; the lines are then dropped without a word, since there is no
//! one to tell. A console that is there but takes nothing (a pipe whose
//! reader stopped) holds a live run's end up for [`FINISH_WAIT`] at most,
//! after summary.json is written.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use icap_codec::Exchange;

use super::format::exchange_line;
use super::heads::exchange_heads;
use super::LivePlan;
use crate::output::records::{ConnectionRecord, ExchangeRecord};
use crate::output::writer::RecordSink;
use crate::tap::{lower_thread_priority, RECORDER_NICENESS};

/// Exchanges (a line, with its heads under `-v`) the queue holds before
/// lines are dropped in a live run: a few seconds of a busy proxy, and at
/// most a few MiB with heads.
pub const LINE_QUEUE: usize = 4096;

/// Bytes of lines the printer gathers into one write.
const BATCH_BYTES: usize = 64 * 1024;

/// How long the printer lets lines gather after a write before it looks
/// again: while it sleeps, queueing a line wakes no one, so a busy run
/// pays for a few wake-ups a second, not one per exchange. Lines show at
/// most this much later.
const GATHER: Duration = Duration::from_millis(50);

/// Longest a finishing run waits for the console to take its last lines:
/// a pipe whose reader stopped reading must not keep a run from ending.
pub const FINISH_WAIT: Duration = Duration::from_secs(3);

/// What a full queue does to the line that finds it so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// The line is not shown and counted (a live run: nothing waits for
    /// the console).
    Drop,
    /// The writer of records waits for room (an analysis).
    Wait,
}

enum Message {
    /// One or more whole lines, each ending in a newline.
    Text(String),
    /// Everything before was written: say what was not, and end.
    End,
}

/// The sink that turns exchange records into lines.
pub struct LiveLines {
    queue: SyncSender<Message>,
    plan: LivePlan,
    /// Lines that found the queue full since the last one that got
    /// through; the printer says the last of them at the end.
    not_shown: Arc<AtomicU64>,
}

impl std::fmt::Debug for LiveLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveLines")
            .field("plan", &self.plan)
            .finish()
    }
}

/// The thread that writes the lines; [`LinePrinter::finish`] ends it.
#[derive(Debug)]
pub struct LinePrinter {
    queue: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
    /// Closed when the thread ends.
    ended: Receiver<()>,
    /// Whether lines were waited for all along (then the end is too).
    overflow: Overflow,
}

/// Starts the printer writing to `out`, and the sink that feeds it.
pub fn start(
    plan: LivePlan,
    out: Box<dyn Write + Send>,
) -> std::io::Result<(LiveLines, LinePrinter)> {
    let (sender, receiver) = sync_channel(LINE_QUEUE);
    let not_shown = Arc::new(AtomicU64::new(0));
    let counted = not_shown.clone();
    let nicer = plan.overflow == Overflow::Drop;
    let (ending, ended) = sync_channel::<()>(0);
    let thread = std::thread::Builder::new()
        .name("icaptap-lines".into())
        .spawn(move || {
            let _ending = ending;
            // Lines give way to forwarding and records, as the capture does.
            if nicer {
                lower_thread_priority(RECORDER_NICENESS);
            }
            let mut out = out;
            print_lines(&receiver, &counted, &mut out);
        })?;
    let lines = LiveLines {
        queue: sender.clone(),
        plan,
        not_shown,
    };
    let printer = LinePrinter {
        queue: sender,
        thread: Some(thread),
        ended,
        overflow: lines.plan.overflow,
    };
    Ok((lines, printer))
}

impl LinePrinter {
    /// Waits until every line queued so far is written (and the count of
    /// those that were not is said), then ends the thread. Call it once the
    /// records are over, before anything else is printed on standard
    /// output. In a live run ([`Overflow::Drop`]) a console that takes
    /// nothing for [`FINISH_WAIT`] (a pipe nobody reads) is left behind,
    /// with a word on stderr; an analysis waits as it did for every line.
    /// Returns whether every line queued got out.
    pub fn finish(mut self) -> bool {
        if self.overflow == Overflow::Wait {
            let _ = self.queue.send(Message::End);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
            return true;
        }
        let deadline = Instant::now() + FINISH_WAIT;
        let mut end = Message::End;
        loop {
            match self.queue.try_send(end) {
                // A printer that ended early (the console went away) takes
                // no message: it is over already.
                Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(again)) if Instant::now() < deadline => {
                    end = again;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(TrySendError::Full(_)) => return self.left_behind(),
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.ended.recv_timeout(wait) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => self.left_behind(),
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
                true
            }
        }
    }

    fn left_behind(&mut self) -> bool {
        // Its thread stays blocked in its write and ends with the process.
        self.thread.take();
        tracing::warn!(
            "the console took no lines for {} s: the last lines per exchange are not shown (every exchange is in exchanges.jsonl)",
            FINISH_WAIT.as_secs()
        );
        false
    }
}

/// `... N lines not shown` and why, with its newline.
pub fn not_shown_line(n: u64) -> String {
    let lines = if n == 1 { "line" } else { "lines" };
    format!(
        "... {n} {lines} not shown (the console could not keep up; every exchange is in exchanges.jsonl)\n"
    )
}

/// Writes what `queue` brings to `out` until [`Message::End`], every
/// sender is gone, or `out` fails.
fn print_lines(queue: &Receiver<Message>, not_shown: &AtomicU64, out: &mut dyn Write) {
    let mut batch = String::with_capacity(BATCH_BYTES);
    loop {
        let mut end = match queue.recv() {
            Ok(Message::Text(text)) => {
                batch.push_str(&text);
                false
            }
            Ok(Message::End) | Err(_) => true,
        };
        while !end && batch.len() < BATCH_BYTES {
            match queue.try_recv() {
                Ok(Message::Text(text)) => batch.push_str(&text),
                Ok(Message::End) | Err(TryRecvError::Disconnected) => end = true,
                Err(TryRecvError::Empty) => break,
            }
        }
        if end {
            let n = not_shown.swap(0, Ordering::Relaxed);
            if n > 0 {
                batch.push_str(&not_shown_line(n));
            }
        }
        if !batch.is_empty()
            && out
                .write_all(batch.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
        {
            return;
        }
        batch.clear();
        if end {
            return;
        }
        std::thread::sleep(GATHER);
    }
}

impl LiveLines {
    /// Queues the line of `record`, and its heads when `-v` asked and `x`
    /// is there.
    fn show(&mut self, record: &ExchangeRecord, x: Option<&Exchange>) {
        if let Some(filter) = self.plan.filter.as_mut() {
            if filter.uses_run_start() && filter.run_start().is_none() {
                // An analysis learns when its run started from the
                // capture; without that the first exchange is the closest.
                let known = self
                    .plan
                    .run_start
                    .as_ref()
                    .map_or(0, |s| s.load(Ordering::Acquire));
                filter.set_run_start(if known > 0 { known } else { record.ts_us });
            }
            if !filter.matches(record) {
                return;
            }
        }
        let mut text = String::new();
        let gap = self.not_shown.load(Ordering::Relaxed);
        if gap > 0 {
            text.push_str(&not_shown_line(gap));
        }
        text.push_str(&exchange_line(record, self.plan.style));
        text.push('\n');
        if let Some(x) = x.filter(|_| self.plan.heads) {
            text.push_str(&exchange_heads(x));
        }
        match self.plan.overflow {
            Overflow::Wait => {
                let _ = self.queue.send(Message::Text(text));
            }
            Overflow::Drop => match self.queue.try_send(Message::Text(text)) {
                Ok(()) => {
                    if gap > 0 {
                        self.not_shown.fetch_sub(gap, Ordering::Relaxed);
                    }
                }
                Err(TrySendError::Full(_)) => {
                    self.not_shown.fetch_add(1, Ordering::Relaxed);
                }
                // The console went away: no one to tell.
                Err(TrySendError::Disconnected(_)) => {}
            },
        }
    }
}

impl RecordSink for LiveLines {
    fn exchange(&mut self, record: &ExchangeRecord) {
        self.show(record, None);
    }

    fn exchange_seen(&mut self, record: &ExchangeRecord, exchange: &Exchange) {
        self.show(record, Some(exchange));
    }

    fn connection(&mut self, _record: &ConnectionRecord) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Filter;
    use crate::live::format::Style;
    use crate::live::testing::record;

    fn plan(overflow: Overflow) -> LivePlan {
        LivePlan {
            style: Style::default(),
            heads: false,
            filter: None,
            overflow,
            run_start: None,
        }
    }

    /// A sink whose queue holds `capacity` messages, with no printer yet.
    fn unprinted(capacity: usize, plan: LivePlan) -> (LiveLines, Receiver<Message>) {
        let (sender, receiver) = sync_channel(capacity);
        let lines = LiveLines {
            queue: sender,
            plan,
            not_shown: Arc::default(),
        };
        (lines, receiver)
    }

    fn printed(lines: LiveLines, receiver: &Receiver<Message>) -> String {
        let not_shown = lines.not_shown.clone();
        drop(lines);
        let mut out = Vec::new();
        print_lines(receiver, &not_shown, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn url(n: usize) -> ExchangeRecord {
        let mut r = record("clean");
        r.http_url = Some(format!("http://x.test/{n}"));
        r
    }

    #[test]
    fn a_full_queue_drops_lines_and_says_how_many_where_they_were() {
        let (mut lines, receiver) = unprinted(2, plan(Overflow::Drop));
        for n in 0..5 {
            lines.exchange(&url(n));
        }
        // The printer takes the two queued lines; the third, fourth and
        // fifth were not shown; the sixth says so before itself.
        let first = match receiver.try_recv() {
            Ok(Message::Text(t)) => t,
            _ => panic!("a line"),
        };
        assert!(first.ends_with("http://x.test/0\n"), "{first}");
        lines.exchange(&url(5));
        lines.exchange(&url(6));
        let text = printed(lines, &receiver);
        let shown: Vec<&str> = text
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap_or(l))
            .collect();
        // The seventh found the queue full again: said at the end.
        assert_eq!(
            shown,
            [
                "http://x.test/1",
                "exchanges.jsonl)",
                "http://x.test/5",
                "exchanges.jsonl)"
            ],
            "{text}"
        );
        assert!(
            text.contains("/1\n... 3 lines not shown (the console could not keep up; every exchange is in exchanges.jsonl)\n"),
            "{text}"
        );
        assert!(text.ends_with("/5\n... 1 line not shown (the console could not keep up; every exchange is in exchanges.jsonl)\n"), "{text}");
        assert!(!text.contains("x.test/6"), "{text}");
    }

    #[test]
    fn the_last_lines_not_shown_are_counted_at_the_end() {
        let (mut lines, receiver) = unprinted(1, plan(Overflow::Drop));
        lines.exchange(&url(0));
        lines.exchange(&url(1));
        let text = printed(lines, &receiver);
        assert!(text.starts_with("10:15:42.123 "), "{text}");
        assert!(text.ends_with("http://x.test/0\n... 1 line not shown (the console could not keep up; every exchange is in exchanges.jsonl)\n"), "{text}");
    }

    #[test]
    fn the_filter_picks_the_lines() {
        let mut p = plan(Overflow::Wait);
        p.filter = Some(Filter::parse("verdict!=clean").unwrap());
        let (mut lines, receiver) = unprinted(8, p);
        lines.exchange(&record("clean"));
        lines.exchange(&record("infected"));
        lines.exchange(&record("clean"));
        let text = printed(lines, &receiver);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(" infected "), "{text}");
    }

    #[test]
    fn a_relative_time_counts_from_the_first_exchange_when_nothing_else_says() {
        let mut p = plan(Overflow::Wait);
        p.filter = Some(Filter::parse("after=+1s").unwrap());
        let (mut lines, receiver) = unprinted(8, p);
        let early = record("clean");
        let mut late = record("blocked");
        late.ts_us += 2_000_000;
        lines.exchange(&early);
        lines.exchange(&late);
        let text = printed(lines, &receiver);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(" blocked "), "{text}");
    }

    #[test]
    fn a_relative_time_counts_from_the_run_start_given() {
        let mut p = plan(Overflow::Wait);
        p.filter = Some(Filter::parse("before=+1s").unwrap());
        let p = p.run_start_from(Arc::new(AtomicU64::new(
            crate::live::testing::T - 5_000_000,
        )));
        let (mut lines, receiver) = unprinted(8, p);
        lines.exchange(&record("clean"));
        assert_eq!(printed(lines, &receiver), "");
    }

    #[test]
    fn the_printer_ends_on_end_and_writes_everything_before() {
        let shared = Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (mut lines, printer) =
            start(plan(Overflow::Wait), Box::new(Shared(shared.clone()))).unwrap();
        for n in 0..100 {
            lines.exchange(&url(n));
        }
        // The sink is still alive (the observer has not dropped it yet):
        // finishing does not wait for it.
        assert!(printer.finish());
        let text = String::from_utf8(shared.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert!(text.ends_with("http://x.test/99\n"));
    }

    #[test]
    fn a_console_gone_ends_the_printer_and_nothing_waits_for_it() {
        struct Gone;
        impl Write for Gone {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (mut lines, printer) = start(plan(Overflow::Wait), Box::new(Gone)).unwrap();
        // More lines than the queue holds: a writer that waited for a
        // printer gone would hang here.
        for n in 0..LINE_QUEUE * 2 {
            lines.exchange(&url(n));
        }
        assert!(printer.finish());
    }

    #[test]
    fn a_console_that_takes_nothing_does_not_keep_the_run_from_ending() {
        let (stuck, release) = std::sync::mpsc::channel::<()>();
        struct Stuck(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                // Blocks until the test lets go: a pipe nobody reads.
                let _ = self.0.lock().unwrap().recv();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (mut lines, printer) = start(
            plan(Overflow::Drop),
            Box::new(Stuck(std::sync::Mutex::new(release))),
        )
        .unwrap();
        for n in 0..LINE_QUEUE * 2 {
            lines.exchange(&url(n));
        }
        assert!(lines.not_shown.load(Ordering::Relaxed) > 0);
        assert!(!printer.finish());
        drop(stuck);
    }
}
