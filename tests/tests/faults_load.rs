//! Load faults with the real `icaptap` binary as a process of its own, so
//! that its descriptors and resident memory are measured alone:
//! - 8,000 concurrent connections, the sensor in a third process (this test
//!   executable re-run as a helper), the client here: each process stays
//!   under the hard limit of 20,000 descriptors while the proxy holds two
//!   per connection;
//! - the open-file limit reached (the proxy started with `ulimit -n 256`):
//!   reported clearly, only whole answers or nothing reach a client, and it
//!   recovers once descriptors are free;
//! - a 1 GiB body streamed through with resident memory growth under 32 MiB.
//!
//! The tests run one at a time (a mutex): each needs the machine's cores.

mod faults_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faults_support::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const HELPER_ENV: &str = "ICAPTAP_FAULTS_HELPER";

/// Connections held open at once in the concurrency case.
const CONCURRENT: usize = 8_000;

/// A sensor that answers every OPTIONS request with the captured answer,
/// and anything else with nothing (so the client sees the mismatch).
async fn options_sensor(listener: TcpListener) {
    let req = fixture("options.req");
    let resp = fixture("options.resp");
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (req, resp) = (req.clone(), resp.clone());
        tokio::spawn(async move {
            let mut got = vec![0u8; req.len()];
            if s.read_exact(&mut got).await.is_err() || got != req {
                return;
            }
            if s.write_all(&resp).await.is_err() {
                return;
            }
            let mut rest = [0u8; 256];
            while let Ok(n) = s.read(&mut rest).await {
                if n == 0 {
                    return;
                }
            }
        });
    }
}

/// Not a test: the sensor process of the concurrency case, started by
/// `sensor_process` with the helper variable set.
#[test]
#[ignore = "helper process of the load tests"]
fn helper_sensor_process() {
    if std::env::var(HELPER_ENV).as_deref() != Ok("sensor") {
        return;
    }
    raise_nofile(20_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("helper-port {}", listener.local_addr().unwrap().port());
        options_sensor(listener).await;
    });
}

struct Helper(std::process::Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this executable again as the sensor process.
fn sensor_process() -> (Helper, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_sensor_process",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_ENV, "sensor")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(p) = line.strip_prefix("helper-port ") {
            break p.trim().parse::<u16>().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Helper(child), SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Sends one OPTIONS and reads the whole answer; the stream stays open.
async fn ask(listen: SocketAddr, req: &[u8], resp_len: usize) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut got = vec![0u8; resp_len];
    let mut n = 0;
    while n < resp_len {
        match tokio::time::timeout(PATIENCE * 4, s.read(&mut got[n..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(m)) => n += m,
        }
    }
    got.truncate(n);
    (s, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_thousand_concurrent_connections_in_separate_processes() {
    let _one = ONE_AT_A_TIME.lock().await;
    raise_nofile(20_000);
    let (_sensor, sensor_addr) = sensor_process();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let proxy = ProxyProcess::start(sensor_addr, &out, &[], Some(20_000));
    let rss_idle = proxy.rss_kib();
    let req = fixture("options.req");
    let resp = fixture("options.resp");

    // Open in waves so the listen backlog is never the limit being tested.
    let mut held = Vec::with_capacity(CONCURRENT);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT {
        let (req, n) = (req.clone(), resp.len());
        let listen = proxy.listen;
        tasks.spawn(async move { ask(listen, &req, n).await });
        if (i + 1) % 500 == 0 {
            while let Some(done) = tasks.join_next().await {
                held.push(done.unwrap());
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        held.push(done.unwrap());
    }
    assert_eq!(held.len(), CONCURRENT);
    let wrong = held.iter().filter(|(_, got)| *got != resp).count();
    assert_eq!(wrong, 0, "{wrong} answers were not the sensor's bytes");
    // Every connection is open at once, here and in the proxy: two
    // descriptors each.
    let fds = proxy.open_fds();
    assert!(
        fds >= 2 * CONCURRENT,
        "the proxy holds only {fds} descriptors"
    );
    let rss_busy = proxy.rss_kib();
    eprintln!(
        "{CONCURRENT} connections: proxy holds {fds} descriptors, RSS {rss_idle} -> {rss_busy} KiB"
    );
    drop(held);
    let stopping = std::time::Instant::now();
    let (ok, stderr) = proxy.stop();
    eprintln!(
        "stopped {:.1} s after SIGTERM with {CONCURRENT} connections just closed",
        stopping.elapsed().as_secs_f64()
    );
    assert!(ok, "{stderr}");
    let records = Records::read(&out);
    assert_eq!(records.connections.len(), CONCURRENT);
    assert_eq!(records.exchanges.len(), CONCURRENT);
    assert!(records.exchanges.iter().all(|x| x.verdict == "options"));
    assert!(
        !stderr.contains("open-file limit"),
        "the limit was not reached, yet: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_file_limit_is_reported_clearly_and_recovered_from() {
    const CLIENTS: usize = 300;
    let _one = ONE_AT_A_TIME.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sensor_addr = listener.local_addr().unwrap();
    tokio::spawn(options_sensor(listener));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // The default connection limit follows `ulimit -n` and keeps clear of
    // it; a limit set above what the descriptors allow is what reaches it.
    let proxy = ProxyProcess::start(
        sensor_addr,
        &out,
        &["--max-connections", "10000"],
        Some(256),
    );
    let req = fixture("options.req");
    let resp = fixture("options.resp");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = TcpStream::connect(proxy.listen).await.unwrap();
        s.write_all(&req).await.unwrap();
        clients.push(s);
    }
    // Each client gets either the sensor's whole answer or nothing at all;
    // reading in turn frees descriptors as answered clients leave.
    let mut answered = 0;
    let mut refused = 0;
    for mut s in clients {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + PATIENCE;
        loop {
            if got.len() >= resp.len() {
                break;
            }
            match tokio::time::timeout(PATIENCE, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
            assert!(Instant::now() < deadline);
        }
        if got.is_empty() {
            refused += 1;
        } else {
            assert_eq!(got, resp, "a partial or foreign answer");
            answered += 1;
        }
    }
    let warned = proxy.stderr();
    // After the burst, the proxy serves again without help.
    let (_, got) = ask(proxy.listen, &req, resp.len()).await;
    assert_eq!(got, resp, "no recovery after the limit");
    let (ok, stderr) = proxy.stop();
    assert!(ok, "{stderr}");
    eprintln!("{answered} answered, {refused} closed unanswered");
    assert!(
        warned.contains("open-file limit reached") && warned.contains("ulimit -n"),
        "no clear warning about the open-file limit: {warned}"
    );
    assert!(
        answered >= CLIENTS / 2,
        "only {answered} of {CLIENTS} served"
    );
    let records = Records::read(&out);
    let unreachable = records
        .connections
        .iter()
        .filter(|c| c.connect_error.is_some())
        .count();
    assert_eq!(
        unreachable, refused,
        "every client closed unanswered has a record"
    );
    for c in records
        .connections
        .iter()
        .filter(|c| c.connect_error.is_some())
    {
        let e = c
            .connect_error
            .as_deref()
            .unwrap_or_default()
            .to_lowercase();
        assert!(e.contains("too many open files"), "{e}");
    }
}

/// One 64 KiB chunk of the big body, deterministic.
fn chunk_of(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_body_streams_through_in_bounded_memory() {
    const CHUNKS: u64 = 16 * 1024; // 1 GiB in 64 KiB chunks
    let _one = ONE_AT_A_TIME.lock().await;
    let req_hdr = "GET http://origin.example/big.iso HTTP/1.1\r\nHost: origin.example\r\n\r\n";
    let res_hdr = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        CHUNKS * 64 * 1024
    );
    let head = format!(
        "RESPMOD icap://127.0.0.1:1344/av/respmod ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\nEncapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n{req_hdr}{res_hdr}",
        req_hdr.len(),
        req_hdr.len() + res_hdr.len()
    );
    let answer = b"ICAP/1.0 204 No Content\r\nISTag: \"big-1\"\r\n\r\n".to_vec();
    let total = head.len() as u64 + CHUNKS * (64 * 1024 + 9) + 5;

    // The sensor hashes what it gets and answers 204 at the end.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sensor_addr = listener.local_addr().unwrap();
    let reply = answer.clone();
    let sensor = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut hash = Sha256::new();
        let mut got = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        while got < total {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the sensor leg ended after {got} bytes");
            hash.update(&buf[..n]);
            got += n as u64;
        }
        s.write_all(&reply).await.unwrap();
        let mut rest = [0u8; 16];
        let _ = s.read(&mut rest).await;
        hash.finalize()
    });

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Each side path's queue holds at most --queue-bytes (64 MiB by
    // default) of payload, which a side path that falls behind (a busy
    // machine) may fill. Queues of 128 taps of at most one 64 KiB read
    // bound that at 8 MiB each, so this measures the forwarding path and
    // the side paths' own state, not queue depth.
    let proxy = ProxyProcess::start(
        sensor_addr,
        &out,
        &["--observer-queue", "128", "--recorder-queue", "128"],
        None,
    );
    let rss_before = proxy.rss_kib();
    let pid = proxy.pid();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let mut client = TcpStream::connect(proxy.listen).await.unwrap();
    let mut sent = Sha256::new();
    client.write_all(head.as_bytes()).await.unwrap();
    sent.update(head.as_bytes());
    for i in 0..CHUNKS {
        let mut piece = b"10000\r\n".to_vec();
        piece.extend_from_slice(&chunk_of(i));
        piece.extend_from_slice(b"\r\n");
        client.write_all(&piece).await.unwrap();
        sent.update(&piece);
    }
    client.write_all(b"0\r\n\r\n").await.unwrap();
    sent.update(b"0\r\n\r\n");
    let mut got = vec![0u8; answer.len()];
    tokio::time::timeout(PATIENCE * 4, client.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, answer);
    drop(client);
    let received = sensor.await.unwrap();
    assert_eq!(received, sent.finalize(), "the body changed on the way");
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let (ok, stderr) = proxy.stop();
    assert!(ok, "{stderr}");
    let growth = peak.saturating_sub(rss_before);
    eprintln!(
        "1 GiB through icaptap: RSS {rss_before} KiB before, {peak} KiB at peak (+{growth} KiB)"
    );
    assert!(
        growth < 32 * 1024,
        "resident memory grew by {growth} KiB streaming 1 GiB"
    );
    let records = Records::read(&out);
    assert_eq!(records.exchanges.len(), 1, "{records:#?}");
    assert_eq!(records.exchanges[0].verdict, "clean");
}
