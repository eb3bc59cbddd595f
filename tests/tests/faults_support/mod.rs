//! Helpers of the fault-injection suite (tests/tests/faults_*.rs): peers
//! that keep every byte they exchanged, so a test can check that forwarding
//! was byte-exact whatever went wrong; the real fixtures; the real
//! `icaptap` binary run as a process of its own (for start-up errors,
//! resident memory and descriptor counts that must be its own); and
//! reading back a run's records.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use icaptap::output::records::{ConnectionRecord, ExchangeRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any one wait in the suite may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The tests package's fixtures directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A fixture's bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

/// The request/response pairs captured from c-icap where one request gets
/// exactly one answer (no 100 Continue dance).
pub fn simple_pairs() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    [
        "options",
        "reqmod",
        "reqmod_preview_ieof",
        "respmod_allow204",
        "respmod_allow206",
        "respmod_no204",
        "respmod_nopreview",
        "respmod_preview_ieof",
        "keepalive",
    ]
    .into_iter()
    .map(|n| {
        (
            n,
            fixture(&format!("{n}.req")),
            fixture(&format!("{n}.resp")),
        )
    })
    .collect()
}

/// The requests in a stream, as the codec counts them (every captured
/// fixture starts with c-icap-client's OPTIONS).
pub fn request_methods(bytes: &[u8]) -> Vec<String> {
    let mut decoder = icap_codec::Decoder::new(icap_codec::Direction::Request);
    let mut events = Vec::new();
    decoder.decode(bytes::Bytes::copy_from_slice(bytes), &mut events);
    events
        .iter()
        .filter_map(|e| match e {
            icap_codec::Event::RequestHead(h) => Some(h.method.as_str().to_string()),
            _ => None,
        })
        .collect()
}

/// One step of a server script (one script per accepted connection).
#[derive(Clone, Debug)]
pub enum Act {
    /// Read until this many bytes in all came from the client on this
    /// connection (or it ended).
    ReadTo(usize),
    /// Read until the client's stream ends.
    ReadEof,
    /// Send these bytes.
    Send(Vec<u8>),
    /// Wait.
    Sleep(Duration),
    /// Half-close our sending side (FIN).
    Shutdown,
    /// Close with a reset (RST).
    Reset,
    /// Keep the connection open, silent, until the client leaves.
    Silent,
}

/// What one server connection saw and sent.
#[derive(Clone, Debug, Default)]
pub struct Leg {
    /// Bytes received from the client, in order.
    pub received: Vec<u8>,
    /// Bytes this side wrote successfully.
    pub sent: Vec<u8>,
    /// How the client's stream ended, once it did: `eof`, or the error
    /// kind (`ConnectionReset`...).
    pub end: Option<String>,
}

/// A scripted ICAP server on 127.0.0.1 that keeps every byte of every
/// connection. The n-th connection plays the n-th script (the last repeats).
#[derive(Clone, Debug)]
pub struct RecordingServer {
    pub addr: SocketAddr,
    pub legs: Arc<Mutex<Vec<Arc<Mutex<Leg>>>>>,
}

impl RecordingServer {
    pub async fn start(scripts: Vec<Vec<Act>>) -> RecordingServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let legs: Arc<Mutex<Vec<Arc<Mutex<Leg>>>>> = Arc::default();
        let all = legs.clone();
        tokio::spawn(async move {
            let mut n = 0usize;
            while let Ok((stream, _)) = listener.accept().await {
                let script = scripts
                    .get(n)
                    .or_else(|| scripts.last())
                    .cloned()
                    .unwrap_or_default();
                n += 1;
                let leg = Arc::new(Mutex::new(Leg::default()));
                all.lock().unwrap().push(leg.clone());
                tokio::spawn(play_server(stream, script, leg));
            }
        });
        RecordingServer { addr, legs }
    }

    /// A snapshot of connection `i`'s leg, waiting for it to exist.
    pub async fn leg(&self, i: usize) -> Leg {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(leg) = self.legs.lock().unwrap().get(i) {
                return leg.lock().unwrap().clone();
            }
            assert!(
                Instant::now() < deadline,
                "the sensor never saw connection {i}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Connection `i`'s leg once the client's stream has ended.
    pub async fn ended_leg(&self, i: usize) -> Leg {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let leg = self.leg(i).await;
            if leg.end.is_some() {
                return leg;
            }
            assert!(
                Instant::now() < deadline,
                "connection {i} never ended at the sensor"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many connections reached the server.
    pub fn connections(&self) -> usize {
        self.legs.lock().unwrap().len()
    }
}

async fn read_some(stream: &mut TcpStream, leg: &Mutex<Leg>) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0)) => {
            leg.lock().unwrap().end = Some("eof".into());
            false
        }
        Ok(Ok(n)) => {
            leg.lock().unwrap().received.extend_from_slice(&buf[..n]);
            true
        }
        Ok(Err(e)) => {
            leg.lock().unwrap().end = Some(format!("{:?}", e.kind()));
            false
        }
        Err(_) => false,
    }
}

async fn play_server(mut stream: TcpStream, script: Vec<Act>, leg: Arc<Mutex<Leg>>) {
    for act in script {
        match act {
            Act::ReadTo(n) => {
                while leg.lock().unwrap().received.len() < n {
                    if !read_some(&mut stream, &leg).await {
                        break;
                    }
                }
            }
            Act::ReadEof | Act::Silent => while read_some(&mut stream, &leg).await {},
            Act::Send(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
                leg.lock().unwrap().sent.extend_from_slice(&bytes);
            }
            Act::Sleep(d) => tokio::time::sleep(d).await,
            Act::Shutdown => {
                let _ = stream.shutdown().await;
            }
            Act::Reset => {
                let _ = stream.set_zero_linger();
                return;
            }
        }
    }
}

/// A client connection that keeps every byte it received, read by a task
/// of its own so that the peer is never blocked by an unread buffer.
pub struct RecordingClient {
    pub write: tokio::net::tcp::OwnedWriteHalf,
    pub received: Arc<Mutex<Vec<u8>>>,
    pub ended: Arc<Mutex<Option<String>>>,
    pub local: SocketAddr,
    sent: Vec<u8>,
    reader: tokio::task::JoinHandle<()>,
}

impl RecordingClient {
    pub async fn connect(addr: SocketAddr) -> RecordingClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        let (mut read, write) = stream.into_split();
        let received: Arc<Mutex<Vec<u8>>> = Arc::default();
        let ended: Arc<Mutex<Option<String>>> = Arc::default();
        let (r, e) = (received.clone(), ended.clone());
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) => {
                        *e.lock().unwrap() = Some("eof".into());
                        return;
                    }
                    Ok(n) => r.lock().unwrap().extend_from_slice(&buf[..n]),
                    Err(err) => {
                        *e.lock().unwrap() = Some(format!("{:?}", err.kind()));
                        return;
                    }
                }
            }
        });
        RecordingClient {
            write,
            received,
            ended,
            local,
            sent: Vec::new(),
            reader,
        }
    }

    /// Aborts the connection with a reset (RST), as a client that crashed
    /// or gave up would.
    pub async fn abort(self) {
        let _ = self.write.as_ref().set_zero_linger();
        // Dropping the write half would send a FIN first; forgetting it
        // leaves the close to the read half, which goes with the reader.
        self.write.forget();
        self.reader.abort();
        let _ = self.reader.await;
    }

    /// Sends `bytes`; false when the connection is gone.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        let ok = self.write.write_all(bytes).await.is_ok();
        if ok {
            self.sent.extend_from_slice(bytes);
        }
        ok
    }

    /// Everything sent so far.
    pub fn sent(&self) -> &[u8] {
        &self.sent
    }

    /// Half-closes the sending side.
    pub async fn shutdown(&mut self) {
        let _ = self.write.shutdown().await;
    }

    /// Waits until at least `n` bytes came back.
    pub async fn wait_for(&self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= n || self.ended.lock().unwrap().is_some() {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} bytes came back",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the stream ends; returns how (`eof` or an error kind)
    /// and everything received.
    pub async fn wait_end(&self) -> (String, Vec<u8>) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(how) = self.ended.lock().unwrap().clone() {
                return (how, self.received.lock().unwrap().clone());
            }
            assert!(Instant::now() < deadline, "the connection never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Reads a JSON Lines file of records (a partial last line, as left by a
/// full disk, is not a record).
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l}: {e}")))
        .collect()
}

/// A run's records.
#[derive(Debug)]
pub struct Records {
    pub exchanges: Vec<ExchangeRecord>,
    pub connections: Vec<ConnectionRecord>,
}

impl Records {
    /// Reads both logs of `dir`, a rotated set as one log (oldest file
    /// first).
    pub fn read(dir: &Path) -> Records {
        use icaptap::output::logset::{list, Log};
        fn read<T: serde::de::DeserializeOwned>(dir: &Path, log: Log) -> Vec<T> {
            list(dir, log).iter().flat_map(|p| read_jsonl(p)).collect()
        }
        Records {
            exchanges: read(dir, Log::Exchanges),
            connections: read(dir, Log::Connections),
        }
    }

    /// The connection record of the client connection from `client`.
    pub fn connection_from(&self, client: SocketAddr) -> Option<&ConnectionRecord> {
        self.connections
            .iter()
            .find(|c| c.client == client.to_string())
    }

    /// The exchanges of connection `conn`.
    pub fn exchanges_of(&self, conn: u64) -> Vec<&ExchangeRecord> {
        self.exchanges.iter().filter(|x| x.conn == conn).collect()
    }

    /// Every anomaly code, of exchanges and connections.
    pub fn codes(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .exchanges
            .iter()
            .flat_map(|x| x.anomalies.iter().map(|a| a.code.clone()))
            .collect();
        out.extend(
            self.connections
                .iter()
                .flat_map(|c| c.anomalies.iter().map(|a| a.code.clone())),
        );
        out
    }
}

/// The `icaptap` binary of the build these tests belong to, built first.
///
/// `CARGO_BIN_EXE_icaptap` exists only for tests of the `icaptap` package
/// itself, and a dependency's binary is not built for another package's
/// tests; so this asks cargo to build it (a no-op when it is fresh, which
/// also means a stale binary is never tested) into the target directory
/// this test executable lives in (`target/<profile>/deps/..`), whatever
/// the profile or `CARGO_TARGET_DIR`.
pub fn icaptap_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
            let target_dir = profile_dir.parent().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", "icaptap", "--bin", "icaptap"])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
                cmd.arg("--release");
            }
            let status = cmd.status().unwrap();
            assert!(status.success(), "building the icaptap binary failed");
            let bin = profile_dir.join("icaptap");
            assert!(
                bin.exists(),
                "{} is missing after cargo build",
                bin.display()
            );
            bin
        })
        .clone()
}

/// `icaptap proxy` running as a process of its own.
pub struct ProxyProcess {
    pub child: Child,
    pub listen: SocketAddr,
    pub out: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl ProxyProcess {
    /// Starts `icaptap proxy` on a free loopback port, forwarding to
    /// `upstream`, writing into `out`, with `extra` options, and an
    /// open-file limit of `nofile` when given; waits until it listens.
    pub fn start(
        upstream: SocketAddr,
        out: &Path,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> ProxyProcess {
        let bin = icaptap_binary();
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
            .arg(upstream.to_string())
            .arg("--out")
            .arg(out)
            .args(extra)
            .env("RUST_LOG", "warn,icaptap=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let text = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("icaptap: listening on ") {
                    let addr = rest.split(',').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                let mut t = text.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        let listen = match rx.recv_timeout(PATIENCE) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("icaptap did not start: {}", stderr.lock().unwrap());
            }
        };
        ProxyProcess {
            child,
            listen,
            out: out.to_path_buf(),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// Its open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Everything it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stops it with SIGTERM (drain, flush, summary) and waits; returns
    /// whether it exited successfully, and its stderr.
    pub fn stop(mut self) -> (bool, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("icaptap did not stop on SIGTERM: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        (status.success(), self.stderr())
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid` in KiB (VmRSS), 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Raises this process's soft open-file limit to its hard limit (up to
/// `want`), for tests that hold thousands of sockets.
pub fn raise_nofile(want: u64) {
    let _ = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={want}:"))
        .status();
}

/// Whether the suite runs as root (tmpfs mounts, private mount namespaces).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The real proxy, in-process, recording into a private temporary
/// directory, with fast clock rules.
pub struct InProcess {
    pub proxy: icaptap::jobs::proxy::RunningProxy,
    pub dir: PathBuf,
    pub tmp: tempfile::TempDir,
}

/// Clock rules fast enough to fire within a test.
pub fn quick_timers() -> icaptap::observe::ObserverConfig {
    icaptap::observe::ObserverConfig {
        verdict_timeout: Duration::from_millis(800),
        stall_timeout: Duration::from_millis(500),
        eof_wait: Duration::from_millis(400),
        max_pipeline: icap_codec::MAX_OPEN_EXCHANGES,
    }
}

/// Starts the in-process proxy in front of `upstream`.
pub async fn start_in_process(upstream: SocketAddr) -> InProcess {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let mut forward =
        icaptap::forward::ForwardConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    forward.drain = Duration::from_secs(3);
    forward.connect_timeout = Duration::from_secs(2);
    let proxy = icaptap::jobs::proxy::start(icaptap::jobs::proxy::ProxyPlan {
        observer: quick_timers(),
        ..icaptap::jobs::proxy::ProxyPlan::new(forward, dir.clone())
    })
    .await
    .unwrap();
    InProcess { proxy, dir, tmp }
}

impl InProcess {
    pub fn listen(&self) -> SocketAddr {
        self.proxy.listen
    }

    /// Stops the proxy (drain, flush) and reads back its records and
    /// summary.
    pub async fn finish(
        self,
    ) -> (
        Records,
        icaptap::output::summary::Summary,
        tempfile::TempDir,
    ) {
        let summary = self.proxy.stop().await.unwrap();
        (Records::read(&self.dir), summary, self.tmp)
    }
}

/// The nice level and scheduling policy (as /proc reports it: 0 normal, 5
/// `SCHED_IDLE`) of each thread of `pid`, by thread name.
pub fn thread_nice(pid: u32) -> Vec<(String, i64, i64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, nice 19,
        // policy 41.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let field = |n: usize| rest.split_whitespace().nth(n).and_then(|n| n.parse().ok());
        if let (Some(nice), Some(policy)) = (field(16), field(38)) {
            found.push((comm.trim().to_string(), nice, policy));
        }
    }
    found
}
