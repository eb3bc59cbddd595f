//! Soak: sustained mixed ICAP traffic through the real `icaptap proxy`
//! process (recording on) for a given time, reporting bytes lost (must be
//! 0), exchanges without a record (must be 0) and the proxy's resident
//! memory over time (must be flat). Not run in CI; see docs/performance.md.
//!
//! ```sh
//! cargo build --release -p icaptap --bin icaptap -p icaptap-benches --bin soak
//! target/release/soak --secs 600 --connections 32 --rate 300
//! ```
//!
//! The sensor and the clients live in this process; the proxy is the
//! `icaptap` binary next to this one (same target directory and profile),
//! so the memory measured is the proxy's own. The traffic mixes every
//! captured c-icap conversation (OPTIONS, REQMOD, RESPMOD with and without
//! preview, 204 and 200 answers) with 64 KiB RESPMOD bodies, on
//! keep-alive connections and on connections that close after a few
//! exchanges.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use icap_codec::event::MessageEnd;
use icap_codec::{Decoder, Direction, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long one exchange may take before it counts as lost.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the proxy's memory is sampled and a line printed.
const SAMPLE_EVERY: Duration = Duration::from_secs(30);

/// Soak settings, from the command line.
struct Settings {
    secs: u64,
    connections: usize,
    /// Exchanges per second over all connections: a busy sensor's load,
    /// below what the observer decodes, so a record missing is a bug and
    /// not a counted drop of an overloaded side path.
    rate: f64,
    out: PathBuf,
}

fn settings() -> Result<Settings, Error> {
    let mut s = Settings {
        secs: 600,
        connections: 32,
        rate: 300.0,
        out: std::env::temp_dir().join(format!("icaptap-soak-{}", std::process::id())),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--secs" => s.secs = value.parse()?,
            "--connections" => s.connections = value.parse()?,
            "--rate" => s.rate = value.parse()?,
            "--out" => s.out = PathBuf::from(value),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(s)
}

/// Splits a captured conversation into its messages (by the codec's
/// message ends).
fn messages(bytes: &[u8], dir: Direction) -> Vec<Vec<u8>> {
    let mut decoder = Decoder::new(dir);
    let mut events = Vec::new();
    decoder.decode(Bytes::copy_from_slice(bytes), &mut events);
    decoder.finish(&mut events);
    let mut out = Vec::new();
    let mut start = 0usize;
    for e in events {
        if let Event::MessageEnd { offset, .. } = e {
            let end = offset as usize;
            if let Some(m) = bytes.get(start..end) {
                out.push(m.to_vec());
            }
            start = end;
        }
    }
    out
}

/// Request message -> the answer the sensor gives.
type Answers = HashMap<Vec<u8>, Vec<u8>>;

fn mix(fixtures: &Path) -> Result<(Vec<Vec<u8>>, Answers), Error> {
    let mut requests = Vec::new();
    let mut answers = Answers::new();
    for name in [
        "options",
        "reqmod",
        "reqmod_preview_ieof",
        "respmod_allow204",
        "respmod_allow206",
        "respmod_no204",
        "respmod_nopreview",
        "respmod_preview_ieof",
        "keepalive",
    ] {
        let req = std::fs::read(fixtures.join(format!("{name}.req")))?;
        let resp = std::fs::read(fixtures.join(format!("{name}.resp")))?;
        let reqs = messages(&req, Direction::Request);
        let resps = messages(&resp, Direction::Response);
        for (q, a) in reqs.into_iter().zip(resps) {
            answers.entry(q.clone()).or_insert(a);
            requests.push(q);
        }
    }
    // A bigger body, answered 204 (Allow: 204).
    let body: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let req_hdr = "GET http://origin.example/big.bin HTTP/1.1\r\nHost: origin.example\r\n\r\n";
    let res_hdr = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
    let mut big = format!(
        "RESPMOD icap://127.0.0.1/echo ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\nEncapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n{req_hdr}{res_hdr}{:x}\r\n",
        req_hdr.len(),
        req_hdr.len() + res_hdr.len(),
        body.len()
    )
    .into_bytes();
    big.extend_from_slice(&body);
    big.extend_from_slice(b"\r\n0\r\n\r\n");
    answers.insert(
        big.clone(),
        b"ICAP/1.0 204 Unmodified\r\nISTag: \"soak-1\"\r\n\r\n".to_vec(),
    );
    requests.push(big);
    Ok((requests, answers))
}

#[derive(Default)]
struct Counts {
    exchanges: AtomicU64,
    client_sent: AtomicU64,
    client_received: AtomicU64,
    server_received: AtomicU64,
    server_sent: AtomicU64,
    wrong_answers: AtomicU64,
    unknown_requests: AtomicU64,
    timeouts: AtomicU64,
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

/// The sensor: answers each whole request message from the table.
async fn sensor(listener: TcpListener, answers: Arc<Answers>, counts: Arc<Counts>) {
    while let Ok((stream, _)) = listener.accept().await {
        let (answers, counts) = (answers.clone(), counts.clone());
        tokio::spawn(async move {
            let _ = serve_one(stream, &answers, &counts).await;
        });
    }
}

async fn serve_one(mut s: TcpStream, answers: &Answers, counts: &Counts) -> Result<(), Error> {
    let mut decoder = Decoder::new(Direction::Request);
    let mut pending: Vec<u8> = Vec::new();
    let mut base = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Vec::new();
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        add(&counts.server_received, n);
        let piece = buf.get(..n).unwrap_or_default();
        pending.extend_from_slice(piece);
        decoder.decode(Bytes::copy_from_slice(piece), &mut events);
        for e in events.drain(..) {
            if let Event::MessageEnd {
                offset,
                end: MessageEnd::Complete,
                ..
            } = e
            {
                let len = (offset - base) as usize;
                let message: Vec<u8> = pending.drain(..len.min(pending.len())).collect();
                base = offset;
                match answers.get(&message) {
                    Some(a) => {
                        s.write_all(a).await?;
                        add(&counts.server_sent, a.len());
                    }
                    None => add(&counts.unknown_requests, 1),
                }
            }
        }
    }
}

/// One client connection's life: `exchanges` exchanges (0: until the end),
/// each a request picked from the mix and the exact answer checked.
async fn client(
    proxy: SocketAddr,
    (requests, answers, counts): (Arc<Vec<Vec<u8>>>, Arc<Answers>, Arc<Counts>),
    until: Instant,
    exchanges: usize,
    mut seed: u64,
    pace: &mut tokio::time::Interval,
) -> Result<(), Error> {
    let mut s = TcpStream::connect(proxy).await?;
    let mut done = 0;
    while Instant::now() < until && (exchanges == 0 || done < exchanges) {
        pace.tick().await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let i = (seed % requests.len() as u64) as usize;
        let Some(req) = requests.get(i) else {
            continue;
        };
        let Some(want) = answers.get(req) else {
            continue;
        };
        s.write_all(req).await?;
        add(&counts.client_sent, req.len());
        let mut got = vec![0u8; want.len()];
        match tokio::time::timeout(ANSWER_TIMEOUT, s.read_exact(&mut got)).await {
            Ok(Ok(_)) => {
                add(&counts.client_received, got.len());
                if &got != want {
                    add(&counts.wrong_answers, 1);
                }
                add(&counts.exchanges, 1);
            }
            _ => {
                add(&counts.timeouts, 1);
                return Ok(());
            }
        }
        done += 1;
    }
    s.shutdown().await?;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, s.read_to_end(&mut rest)).await;
    Ok(())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn count_lines(path: &Path) -> u64 {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let settings = settings()?;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let (requests, answers) = mix(&fixtures)?;
    let (requests, answers) = (Arc::new(requests), Arc::new(answers));
    let counts = Arc::new(Counts::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let sensor_addr = listener.local_addr()?;
    tokio::spawn(sensor(listener, answers.clone(), counts.clone()));

    let exe = std::env::current_exe()?;
    let icaptap = exe
        .parent()
        .map(|d| d.join("icaptap"))
        .ok_or("no directory for this executable")?;
    let mut child = Command::new(&icaptap)
        .args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(sensor_addr.to_string())
        .arg("--out")
        .arg(&settings.out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}; build it first", icaptap.display()))?;
    let pid = child.id();
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("icaptap: listening on ") {
                let _ = tx.send(rest.split(',').next().unwrap_or_default().to_string());
            } else if line.contains("WARN") || line.contains("error") {
                eprintln!("proxy: {line}");
            }
        }
    });
    let proxy: SocketAddr = rx.recv_timeout(Duration::from_secs(30))?.parse()?;
    println!(
        "soak: {} s, {} connections, {} exchanges/s, icaptap pid {pid} on {proxy}, output {}",
        settings.secs,
        settings.connections,
        settings.rate,
        settings.out.display()
    );

    let started = Instant::now();
    let until = started + Duration::from_secs(settings.secs);
    let mut workers = tokio::task::JoinSet::new();
    for c in 0..settings.connections {
        let (requests, answers, counts) = (requests.clone(), answers.clone(), counts.clone());
        let every = Duration::from_secs_f64(settings.connections as f64 / settings.rate.max(0.001));
        workers.spawn(async move {
            let mut pace = tokio::time::interval(every);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seed = 0x2545_F491_4F6C_DD1D ^ (c as u64 + 1);
            while Instant::now() < until {
                // Half the workers keep one connection; the others reconnect
                // every few exchanges.
                let per_conn = if c % 2 == 0 {
                    0
                } else {
                    1 + (seed % 8) as usize
                };
                seed = seed.rotate_left(7) ^ 0x9E37_79B9;
                let r = client(
                    proxy,
                    (requests.clone(), answers.clone(), counts.clone()),
                    until,
                    per_conn,
                    seed,
                    &mut pace,
                )
                .await;
                if let Err(e) = r {
                    eprintln!("client {c}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
    }
    let mut samples = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(SAMPLE_EVERY.min(until.saturating_duration_since(Instant::now()))).await;
        let rss = rss_kib(pid);
        let t = started.elapsed().as_secs();
        samples.push((t, rss));
        println!(
            "t={t:>5}s exchanges={} rss={rss} KiB",
            counts.exchanges.load(Ordering::Relaxed)
        );
    }
    while workers.join_next().await.is_some() {}
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait()?;

    let records = count_lines(&settings.out.join("exchanges.jsonl"));
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let exchanges = get(&counts.exchanges);
    let up_lost = get(&counts.client_sent).saturating_sub(get(&counts.server_received));
    let down_lost = get(&counts.server_sent).saturating_sub(get(&counts.client_received));
    let third = samples.len() / 3;
    let avg = |s: &[(u64, u64)]| s.iter().map(|x| x.1).sum::<u64>() / (s.len().max(1) as u64);
    let (early, late) = (
        avg(samples.get(1..third.max(2)).unwrap_or_default()),
        avg(samples
            .get(samples.len() - third.max(1)..)
            .unwrap_or_default()),
    );
    println!("--- soak result ({} s) ---", started.elapsed().as_secs());
    println!("exchanges answered            {exchanges}");
    println!(
        "bytes client->sensor          {} sent, {} received",
        get(&counts.client_sent),
        get(&counts.server_received)
    );
    println!(
        "bytes sensor->client          {} sent, {} received",
        get(&counts.server_sent),
        get(&counts.client_received)
    );
    println!("bytes lost                    {}", up_lost + down_lost);
    println!(
        "answers not byte-exact        {}",
        get(&counts.wrong_answers)
    );
    println!(
        "requests changed on the way   {}",
        get(&counts.unknown_requests)
    );
    println!("exchanges timed out           {}", get(&counts.timeouts));
    println!("exchange records              {records}");
    let started_exchanges = exchanges + get(&counts.timeouts);
    println!(
        "exchanges without records     {}",
        started_exchanges.saturating_sub(records)
    );
    println!("rss KiB over time             {samples:?}");
    println!("rss KiB early/late average    {early} / {late}");
    println!("icaptap exit                  {status}");
    Ok(())
}
