//! `icaptap replay DIR_OR_CAPTURE --target HOST:PORT`: re-sends the client
//! requests of a recording to a sensor, byte for byte, and compares the
//! verdicts with the recorded ones (RFC 3507 sections 4.5, 4.8, 4.9: a
//! preview goes alone and its remainder only after `100 Continue`).
//!
//! The replayed verdicts are read by the observer's classifier, like the
//! recorded ones, so a difference means the sensor decided differently
//! (new signatures, another policy, another product), not that two readers
//! disagree. Connections are replayed one after the other, each on its own
//! keep-alive connection to the target, requests in their recorded order.

pub mod recording;

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::output::terminal::{say, sayln};
use crate::progress::Progress;
use crate::toolkit::client::{BuiltRequest, ClientError, IcapConnection, Verdict};
use crate::units::parse_duration;

pub use recording::{
    load, RecordedConnection, RecordedRequest, RecordedVerdict, RecordingError, MAX_REPLAY_BYTES,
};

/// Options of `icaptap replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// An icaptap output directory (capture*.pcapng and exchanges.jsonl) or
    /// a capture file (pcap or pcapng, gzip'd or not).
    pub input: PathBuf,
    /// The sensor to send to, HOST:PORT.
    #[arg(long)]
    pub target: String,
    /// Another TCP port carrying ICAP in a capture file (1344 is always
    /// looked at; an output directory names its own ports).
    #[arg(long = "port")]
    pub ports: Vec<u16>,
    /// Time allowed for connecting and for each answer (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The recording could not be read.
    #[error(transparent)]
    Recording(#[from] RecordingError),
    /// The target is not an address.
    #[error("--target {target}: {source}; give HOST:PORT, e.g. 127.0.0.1:1344")]
    Target {
        /// What was given.
        target: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime for the replay: {0}")]
    Runtime(std::io::Error),
    /// The recording holds no ICAP request: a replay of it would test
    /// nothing.
    #[error("{0} holds no ICAP request, so there is nothing to replay; check it with `icaptap analyze` (it lists the TCP ports it saw) and give the ICAP port with --port if the capture starts mid-connection")]
    Nothing(PathBuf),
}

/// The outcome of one re-sent request.
#[derive(Clone, Debug)]
pub struct ReplayedVerdict {
    /// The verdict now.
    pub verdict: Verdict,
    /// Threat names now.
    pub threat: Option<String>,
    /// The final ICAP status now, when there was one.
    pub icap_status: Option<u16>,
    /// Why there was no answer, when there was none.
    pub error: Option<String>,
}

/// One request: what was recorded and what the target answered now.
#[derive(Clone, Debug)]
pub struct ReplayRow {
    /// Connection id in the recording.
    pub conn: u64,
    /// Request index on the connection.
    pub seq: u64,
    /// ICAP method.
    pub method: String,
    /// Encapsulated HTTP URL.
    pub http_url: Option<String>,
    /// The recorded verdict, when the logs have one.
    pub recorded: Option<RecordedVerdict>,
    /// The verdict now.
    pub replayed: ReplayedVerdict,
}

impl ReplayRow {
    /// Whether the target decided differently: another verdict, or other
    /// threat names for an infected object. A request without a recorded
    /// verdict is a difference too (nothing to agree with).
    pub fn differs(&self) -> bool {
        let Some(recorded) = &self.recorded else {
            return true;
        };
        if recorded.verdict != self.replayed.verdict.as_str() {
            return true;
        }
        self.replayed.verdict == Verdict::Infected && recorded.threat != self.replayed.threat
    }
}

/// Every replayed request.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    /// Where the requests went.
    pub target: SocketAddr,
    /// One row per request, in recorded order.
    pub rows: Vec<ReplayRow>,
}

impl ReplayReport {
    /// The rows whose verdicts differ.
    pub fn differences(&self) -> impl Iterator<Item = &ReplayRow> {
        self.rows.iter().filter(|r| r.differs())
    }

    /// How many rows differ.
    pub fn difference_count(&self) -> usize {
        self.differences().count()
    }
}

fn describe(verdict: &str, threat: Option<&str>, status: Option<u16>) -> String {
    let mut s = verdict.to_owned();
    match (threat, status) {
        (Some(t), _) => {
            let _ = write!(s, " ({t})");
        }
        (None, Some(code)) => {
            let _ = write!(s, " ({code})");
        }
        (None, None) => {}
    }
    s
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let differing = self.difference_count();
        writeln!(
            f,
            "replayed {} requests to {}: {} same verdict, {} different",
            self.rows.len(),
            self.target,
            self.rows.len() - differing,
            differing
        )?;
        if differing == 0 {
            return Ok(());
        }
        writeln!(
            f,
            "  {:<7} {:<8} {:<28} {:<28} url",
            "exch", "method", "recorded", "replayed"
        )?;
        for row in self.differences() {
            let recorded = row.recorded.as_ref().map_or("(no record)".to_owned(), |r| {
                describe(&r.verdict, r.threat.as_deref(), r.icap_status)
            });
            let now = &row.replayed;
            let mut replayed =
                describe(now.verdict.as_str(), now.threat.as_deref(), now.icap_status);
            if let Some(e) = &now.error {
                let _ = write!(replayed, ": {e}");
            }
            writeln!(
                f,
                "  {:<7} {:<8} {:<28} {:<28} {}",
                format!("{}/{}", row.conn, row.seq),
                row.method,
                recorded,
                replayed,
                row.http_url.as_deref().unwrap_or("-")
            )?;
        }
        Ok(())
    }
}

/// Re-sends every request of `connections` to `target` and reads the
/// verdicts.
pub async fn replay(
    connections: &[RecordedConnection],
    target: SocketAddr,
    timeout: Duration,
) -> ReplayReport {
    replay_shown(connections, target, timeout, &Progress::hidden()).await
}

/// [`replay`], advancing `progress` by one for each request answered (or
/// not).
pub async fn replay_shown(
    connections: &[RecordedConnection],
    target: SocketAddr,
    timeout: Duration,
    progress: &Progress,
) -> ReplayReport {
    let mut rows = Vec::new();
    for c in connections {
        let mut conn: Option<IcapConnection> = None;
        for request in &c.requests {
            let replayed = send(&mut conn, request, target, timeout).await;
            progress.advance(1);
            rows.push(ReplayRow {
                conn: request.conn,
                seq: request.seq,
                method: request.method.clone(),
                http_url: request.http_url.clone(),
                recorded: request.recorded.clone(),
                replayed,
            });
        }
    }
    ReplayReport { target, rows }
}

async fn send(
    conn: &mut Option<IcapConnection>,
    request: &RecordedRequest,
    target: SocketAddr,
    timeout: Duration,
) -> ReplayedVerdict {
    let built = BuiltRequest {
        first: request.first.clone(),
        head_len: 0,
        rest: request.rest.clone(),
        body_len: 0,
        ieof: request.ieof,
    };
    let result = async {
        let mut open = match conn.take() {
            Some(c) if c.is_reusable() => c,
            _ => IcapConnection::connect(target, timeout).await?,
        };
        let answer = open.send(&built, timeout).await;
        *conn = Some(open);
        answer
    }
    .await;
    match result {
        Ok(answer) => {
            let (verdict, threat) = answer.verdict();
            ReplayedVerdict {
                verdict,
                threat,
                icap_status: Some(answer.head.status),
                error: None,
            }
        }
        Err(e) => ReplayedVerdict {
            verdict: Verdict::Missing,
            threat: None,
            icap_status: None,
            error: Some(explain(&e, request)),
        },
    }
}

/// The client's error, plus the likely reason when the sensor asked for a
/// remainder the recording does not hold (the original was decided on
/// its preview, so its remainder never crossed the wire).
fn explain(e: &ClientError, request: &RecordedRequest) -> String {
    match e {
        ClientError::Timeout { stage, .. }
            if request.rest.is_none() && stage.contains("100 Continue") =>
        {
            format!("{e}; the sensor asked for the rest of a body the recording does not hold")
        }
        _ => e.to_string(),
    }
}

/// Runs `icaptap replay`: prints the table and returns the report (the
/// caller turns differences into the exit status).
pub fn run(args: ReplayArgs) -> Result<ReplayReport, ReplayError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ReplayError::Runtime)?;
    let target = runtime.block_on(resolve(&args.target))?;
    let connections = recording::load_shown(&args.input, &args.ports, true)?;
    let requests: usize = connections.iter().map(|c| c.requests.len()).sum();
    if requests == 0 {
        return Err(ReplayError::Nothing(args.input.clone()));
    }
    sayln!(
        "icaptap replay: {} requests on {} connections from {}",
        requests,
        connections.len(),
        args.input.display()
    );
    let progress = Progress::items(true, "replay", requests as u64, "requests");
    let report = runtime.block_on(replay_shown(&connections, target, args.timeout, &progress));
    progress.finish();
    say!("{report}");
    Ok(report)
}

async fn resolve(target: &str) -> Result<SocketAddr, ReplayError> {
    let mut found =
        tokio::net::lookup_host(target)
            .await
            .map_err(|source| ReplayError::Target {
                target: target.to_owned(),
                source,
            })?;
    found.next().ok_or_else(|| ReplayError::Target {
        target: target.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address"),
    })
}
