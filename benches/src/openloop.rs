//! Open-loop RESPMOD load: requests are started on a fixed schedule (rate
//! per second, evenly spaced) over a pool of keep-alive connections,
//! whatever the path's speed, so that a path that cannot keep up shows as
//! requests that started late, were answered late or not at all, never as
//! a lower offered rate. Each request carries its own encapsulated HTTP URL
//! ([`request_url`]), so that every record icaptap writes can be matched to
//! the request it is about; the answer's body is checked byte for byte
//! against the echo it must be.
//!
//! A request waits in a queue when every connection is busy (as a client
//! with a bounded connection pool does); its time is counted from its
//! scheduled start.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::client::{respmod_chunked_body, respmod_head, respmod_plain_body, BenchConnection};

/// A request that starts more than this after its scheduled time is late.
pub const LATE_AFTER: Duration = Duration::from_millis(100);

/// A step is sustained when every request was answered intact and the
/// 99th percentile of scheduled start to answer end is at most this: the
/// path kept up without building a backlog.
pub const SUSTAINED_P99: Duration = Duration::from_millis(250);

/// The URL of request `id` of the step tagged `tag`.
pub fn request_url(tag: &str, id: u64) -> String {
    format!("{}{id}", url_prefix(tag))
}

/// What every URL of the step tagged `tag` starts with.
pub fn url_prefix(tag: &str) -> String {
    format!("http://origin.test/overload/{tag}/")
}

/// One load step.
#[derive(Clone, Debug)]
pub struct Step {
    /// Where the client connects (the server, or a proxy in front of it).
    pub target: SocketAddr,
    /// The ICAP server named in the request URI.
    pub service: SocketAddr,
    /// Body bytes per RESPMOD.
    pub body: usize,
    /// Requests started per second.
    pub rate: f64,
    /// How long requests are started for.
    pub duration: Duration,
    /// Keep-alive connections in the pool.
    pub connections: usize,
    /// Time after the last scheduled start for the last answers; requests
    /// not answered by then count as failed, not started by then as
    /// never started.
    pub grace: Duration,
    /// Tells this step's URLs apart from every other step's.
    pub tag: String,
}

/// What happened to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Answered 200 with the body echoed byte for byte.
    Intact,
    /// Answered, but not with the echo.
    Wrong,
    /// Sent, but the connection failed or no answer came in time.
    Failed,
    /// Still waiting for a free connection at the deadline.
    NotStarted,
}

/// What a step measured.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Requests scheduled.
    pub offered: u64,
    /// Answered intact.
    pub intact: u64,
    /// Answered, not with the echo.
    pub wrong: u64,
    /// Sent, no complete answer.
    pub failed: u64,
    /// Never sent.
    pub not_started: u64,
    /// Sent more than [`LATE_AFTER`] after their scheduled start.
    pub late: u64,
    /// Scheduled start to answer end of intact answers, microseconds.
    pub p50_us: u64,
    /// The same, 99th percentile.
    pub p99_us: u64,
    /// The same, maximum.
    pub max_us: u64,
    /// First scheduled start to the last answer, seconds.
    pub seconds: f64,
    /// Request and answer bytes of intact round trips.
    pub bytes: u64,
    /// Whether the path kept up (see [`SUSTAINED_P99`]).
    pub sustained: bool,
    /// Each request's fate, by id.
    #[serde(skip)]
    pub fates: Vec<Fate>,
}

impl Outcome {
    /// Intact answers per second over the step.
    pub fn answered_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.intact as f64 / self.seconds
        } else {
            0.0
        }
    }
}

struct Job {
    id: u64,
    scheduled: Instant,
}

#[derive(Default)]
struct Tally {
    fates: Vec<Option<Fate>>,
    late: u64,
    bytes: u64,
    last_answer: Option<Instant>,
}

/// Runs `step` on the caller's runtime and reports every request's fate.
pub async fn run(step: &Step) -> Outcome {
    let count = (step.rate * step.duration.as_secs_f64()).round().max(1.0) as u64;
    let body = respmod_chunked_body(step.body);
    let plain = respmod_plain_body(step.body);
    let tally = Arc::new(Mutex::new(Tally {
        fates: vec![None; count as usize],
        ..Tally::default()
    }));
    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let queue = Arc::new(tokio::sync::Mutex::new(rx));
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).ok(),
    ));
    // Connections are opened before the clock starts.
    let mut pool = Vec::with_capacity(step.connections);
    for _ in 0..step.connections {
        pool.push(BenchConnection::connect(step.target).await.ok());
    }
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + step.duration + step.grace;
    let mut workers = tokio::task::JoinSet::new();
    for conn in pool {
        let (queue, tally, hist) = (queue.clone(), tally.clone(), hist.clone());
        let (body, plain, step) = (body.clone(), plain.clone(), step.clone());
        workers.spawn(async move {
            let mut conn = conn;
            loop {
                let job = queue.lock().await.recv().await;
                let Some(job) = job else { break };
                let fate = serve(&step, &mut conn, &job, &body, &plain, deadline, &tally).await;
                let now = Instant::now();
                let mut t = tally.lock().unwrap_or_else(PoisonError::into_inner);
                if fate == Fate::Intact {
                    t.last_answer = Some(t.last_answer.map_or(now, |l| l.max(now)));
                    let us = u64::try_from((now - job.scheduled).as_micros()).unwrap_or(u64::MAX);
                    if let Some(h) = hist.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                        h.saturating_record(us.max(1));
                    }
                }
                if let Some(slot) = t.fates.get_mut(job.id as usize) {
                    *slot = Some(fate);
                }
            }
        });
    }
    for id in 0..count {
        let scheduled = start + Duration::from_secs_f64(id as f64 / step.rate);
        tokio::time::sleep_until(scheduled.into()).await;
        if tx.send(Job { id, scheduled }).is_err() {
            break;
        }
    }
    drop(tx);
    while workers.join_next().await.is_some() {}
    let t = tally.lock().unwrap_or_else(PoisonError::into_inner);
    let fates: Vec<Fate> = t
        .fates
        .iter()
        .map(|f| f.unwrap_or(Fate::NotStarted))
        .collect();
    let n = |want: Fate| fates.iter().filter(|&&f| f == want).count() as u64;
    let (p50_us, p99_us, max_us) = hist
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .filter(|h| !h.is_empty())
        .map_or((0, 0, 0), |h| {
            (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max())
        });
    let intact = n(Fate::Intact);
    Outcome {
        offered: count,
        intact,
        wrong: n(Fate::Wrong),
        failed: n(Fate::Failed),
        not_started: n(Fate::NotStarted),
        late: t.late,
        p50_us,
        p99_us,
        max_us,
        seconds: t
            .last_answer
            .map_or(0.0, |l| l.saturating_duration_since(start).as_secs_f64()),
        bytes: t.bytes,
        sustained: intact == count && Duration::from_micros(p99_us) <= SUSTAINED_P99,
        fates,
    }
}

/// Sends one request on `conn` (reconnecting when it is gone) and says
/// what became of it.
async fn serve(
    step: &Step,
    conn: &mut Option<BenchConnection>,
    job: &Job,
    body: &Bytes,
    plain: &Bytes,
    deadline: Instant,
    tally: &Mutex<Tally>,
) -> Fate {
    let now = Instant::now();
    if now >= deadline {
        return Fate::NotStarted;
    }
    if now.saturating_duration_since(job.scheduled) > LATE_AFTER {
        tally.lock().unwrap_or_else(PoisonError::into_inner).late += 1;
    }
    if conn.is_none() {
        *conn = BenchConnection::connect(step.target).await.ok();
    }
    let Some(c) = conn.as_mut() else {
        return Fate::Failed;
    };
    let head = respmod_head(step.service, step.body, &request_url(&step.tag, job.id));
    let parts = [head, body.clone()];
    let trip = tokio::time::timeout_at(
        deadline.into(),
        c.round_trip_parts(&parts, Some(&plain[..])),
    );
    match trip.await {
        Ok(Ok(trip)) => {
            if trip.closing {
                *conn = None;
            }
            if trip.status == 200 && trip.intact && trip.body_bytes == step.body as u64 {
                tally.lock().unwrap_or_else(PoisonError::into_inner).bytes +=
                    trip.sent + trip.received;
                Fate::Intact
            } else {
                Fate::Wrong
            }
        }
        // A failed or timed-out connection is in an unknown state: a new one.
        Ok(Err(_)) | Err(_) => {
            *conn = None;
            Fate::Failed
        }
    }
}
