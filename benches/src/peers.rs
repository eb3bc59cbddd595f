//! The processes the side-by-side harness compares, each started as its own
//! process on 127.0.0.1: the two ICAP servers (c-icap's `echo` service and
//! the bench echo server) and the proxies in front of them (icaptap with and
//! without recording, HAProxy in `mode tcp`, socat), and their ICAP over
//! TLS forms (c-icap's `TlsPort`, the echo server behind rustls, HAProxy
//! terminating and re-originating TLS, icaptap with `--tls` and
//! `--upstream-tls`). Every process is killed when its [`Peer`] is dropped.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::tls::BenchPki;

/// How long a started process may take to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a peer may take to stop after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a peer could not start.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The program could not be run.
    #[error("cannot run {program}: {source}; install it (the harness installs haproxy, socat and c-icap with apt-get unless --no-install)")]
    Spawn {
        /// The program.
        program: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// It ran but never listened.
    #[error("{name} did not accept connections on {addr} within {START_TIMEOUT:?}; see {log}")]
    NotListening {
        /// Which peer.
        name: String,
        /// Where it should listen.
        addr: SocketAddr,
        /// Its output.
        log: String,
    },
    /// Its configuration or log file could not be written.
    #[error("cannot write {path}: {source}")]
    Files {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
}

/// A running process under test.
#[derive(Debug)]
pub struct Peer {
    /// Short name (`c-icap`, `haproxy`...).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl Peer {
    /// Its process id (for CPU and memory readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGTERM and waits up to `limit` for it to exit (icaptap
    /// finishes its capture and writes summary.json then), killing it after
    /// that. Returns its exit status, `None` when it had to be killed.
    pub fn stop(mut self, limit: Duration) -> std::io::Result<Option<std::process::ExitStatus>> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok(None)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM first: c-icap stops its forked children only then, and
        // icaptap finishes its files.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn write_file(path: &Path, text: &str) -> Result<(), PeerError> {
    fs::write(path, text).map_err(|source| PeerError::Files {
        path: path.display().to_string(),
        source,
    })
}

/// Runs `program args` with its output in `dir/NAME.log`, and waits until
/// `addr` accepts connections.
fn spawn(
    name: &str,
    program: &Path,
    args: &[String],
    addr: SocketAddr,
    dir: &Path,
) -> Result<Peer, PeerError> {
    let log_path = dir.join(format!("{name}.log"));
    let log = fs::File::create(&log_path).map_err(|source| PeerError::Files {
        path: log_path.display().to_string(),
        source,
    })?;
    let err = log.try_clone().map_err(|source| PeerError::Files {
        path: log_path.display().to_string(),
        source,
    })?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|source| PeerError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    let peer = Peer {
        name: name.to_owned(),
        addr,
        child,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(peer);
        }
        sleep(Duration::from_millis(50));
    }
    Err(PeerError::NotListening {
        name: name.to_owned(),
        addr,
        log: log_path.display().to_string(),
    })
}

/// The bench echo server: this harness's own binary in `echo-server` mode.
pub fn start_bench_echo(dir: &Path) -> Result<Peer, PeerError> {
    start_bench_echo_with(dir, &[])
}

/// [`start_bench_echo`] over TLS, presenting the run's certificate.
pub fn start_bench_echo_tls(dir: &Path, pki: &BenchPki) -> Result<Peer, PeerError> {
    let tls = [
        "--tls-cert".to_owned(),
        pki.cert.display().to_string(),
        "--tls-key".to_owned(),
        pki.key.display().to_string(),
    ];
    start_bench_echo_with(dir, &tls)
}

/// The bench echo server on a free port, with `extra` options.
fn start_bench_echo_with(dir: &Path, extra: &[String]) -> Result<Peer, PeerError> {
    let addr = free_port().map_err(|source| PeerError::Spawn {
        program: "bind".into(),
        source,
    })?;
    let exe = std::env::current_exe().map_err(|source| PeerError::Spawn {
        program: "sidebyside (own path)".into(),
        source,
    })?;
    let mut args = vec!["echo-server".to_owned(), addr.to_string()];
    args.extend_from_slice(extra);
    spawn("bench-echo", &exe, &args, addr, dir)
}

/// c-icap with its built-in `echo` service, keep-alive without limit, run
/// as the current user, files in `dir`.
pub fn start_cicap(dir: &Path) -> Result<Peer, PeerError> {
    start_cicap_with(dir, None)
}

/// [`start_cicap`] with a `TlsPort` presenting the run's certificate: the
/// [`Peer`]'s address is the TLS one.
pub fn start_cicap_tls(dir: &Path, pki: &BenchPki) -> Result<Peer, PeerError> {
    start_cicap_with(dir, Some(pki))
}

fn start_cicap_with(dir: &Path, tls: Option<&BenchPki>) -> Result<Peer, PeerError> {
    let addr = free_port().map_err(|source| PeerError::Spawn {
        program: "bind".into(),
        source,
    })?;
    let tls_port = match tls {
        Some(pki) => {
            let at = free_port().map_err(|source| PeerError::Spawn {
                program: "bind".into(),
                source,
            })?;
            Some((at, pki))
        }
        None => None,
    };
    let base =
        fs::read_to_string("/etc/c-icap/c-icap.conf").map_err(|source| PeerError::Spawn {
            program: "c-icap (/etc/c-icap/c-icap.conf)".into(),
            source,
        })?;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let mut conf = String::new();
    for line in base.lines() {
        let key = line.split_whitespace().next().unwrap_or("");
        let replaced = match key {
            "Port" => format!("Port {addr}"),
            "PidFile" => format!("PidFile {}/c-icap.pid", dir.display()),
            "CommandsSocket" => format!("CommandsSocket {}/c-icap.ctl", dir.display()),
            "ServerLog" => format!("ServerLog {}/c-icap-server.log", dir.display()),
            "AccessLog" => format!("AccessLog {}/c-icap-access.log", dir.display()),
            "User" => format!("User {user}"),
            "Group" => format!("Group {user}"),
            "StartServers" => "StartServers 1".to_owned(),
            // 0 would mean "no keep-alive"; a long run must never be cut.
            "MaxKeepAliveRequests" => "MaxKeepAliveRequests 100000000".to_owned(),
            _ => line.to_owned(),
        };
        conf.push_str(&replaced);
        conf.push('\n');
    }
    if let Some((at, pki)) = tls_port {
        conf.push_str(&format!(
            "TlsPort {at} cert={} key={}\n",
            pki.cert.display(),
            pki.key.display()
        ));
    }
    let path = dir.join("c-icap.conf");
    write_file(&path, &conf)?;
    let args = vec![
        "-f".to_owned(),
        path.display().to_string(),
        "-N".to_owned(),
        "-D".to_owned(),
    ];
    let listen = tls_port.map_or(addr, |(at, _)| at);
    spawn("c-icap", Path::new("c-icap"), &args, listen, dir)
}

/// `icaptap proxy` (the release binary) in front of `upstream`; with
/// `record` off it runs with `--no-pcap` (logs only). The capture rotates
/// at 256 MiB keeping two files, so long runs do not fill the disk.
pub fn start_icaptap(
    icaptap: &Path,
    upstream: SocketAddr,
    record: bool,
    dir: &Path,
) -> Result<Peer, PeerError> {
    let name = if record {
        "icaptap-full"
    } else {
        "icaptap-no-pcap"
    };
    start_icaptap_as(name, icaptap, upstream, record, dir)
}

/// [`start_icaptap`] under another name (e.g. a build from before a change,
/// measured side by side with the current one).
pub fn start_icaptap_as(
    name: &str,
    icaptap: &Path,
    upstream: SocketAddr,
    record: bool,
    dir: &Path,
) -> Result<Peer, PeerError> {
    let out: PathBuf = dir.join(format!("{name}-out"));
    let extra: Vec<String> = if record {
        ["--rotate-size", "256M", "--keep", "2"]
            .map(str::to_owned)
            .to_vec()
    } else {
        vec!["--no-pcap".to_owned()]
    };
    start_icaptap_with(name, icaptap, upstream, &out, &extra, dir)
}

/// `icaptap proxy` in front of `upstream` writing its run into `out` (which
/// must not exist yet or be empty), with its defaults apart from `extra`
/// (e.g. `--no-pcap`) and no status lines; its output goes to
/// `dir/NAME.log`.
pub fn start_icaptap_with(
    name: &str,
    icaptap: &Path,
    upstream: SocketAddr,
    out: &Path,
    extra: &[String],
    dir: &Path,
) -> Result<Peer, PeerError> {
    let addr = free_port().map_err(|source| PeerError::Spawn {
        program: "bind".into(),
        source,
    })?;
    let mut args: Vec<String> = [
        "proxy",
        "--listen",
        &addr.to_string(),
        "--upstream",
        &upstream.to_string(),
        "--out",
        &out.display().to_string(),
        "--status-every",
        "0s",
        // As a service runs it (ICAPTAP_QUIET in the systemd unit): no
        // line per exchange on a console nobody reads.
        "-q",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().cloned());
    spawn(name, icaptap, &args, addr, dir)
}

/// HAProxy in `mode tcp`, defaults as a user would leave them (threads =
/// CPUs), connection limit raised for the idle-connection test.
pub fn start_haproxy(upstream: SocketAddr, dir: &Path) -> Result<Peer, PeerError> {
    let addr = free_port().map_err(|source| PeerError::Spawn {
        program: "bind".into(),
        source,
    })?;
    let conf = format!(
        "global\n    maxconn 8000\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 10m\n    timeout server 10m\n\nfrontend icap\n    bind {addr}\n    default_backend sensor\n\nbackend sensor\n    server sensor {upstream}\n"
    );
    let path = dir.join("haproxy.cfg");
    write_file(&path, &conf)?;
    let args = vec![
        "-db".to_owned(),
        "-f".to_owned(),
        path.display().to_string(),
    ];
    spawn("haproxy", Path::new("haproxy"), &args, addr, dir)
}

/// icaptap over TLS on both legs in front of the TLS `upstream`: `--tls`
/// with the run's certificate for the client, `--upstream-tls` trusting the
/// run's CA; with `record` off it runs with `--no-pcap`, as
/// [`start_icaptap`] does.
pub fn start_icaptap_tls(
    icaptap: &Path,
    upstream: SocketAddr,
    record: bool,
    pki: &BenchPki,
    dir: &Path,
) -> Result<Peer, PeerError> {
    let name = if record {
        "icaptap-full"
    } else {
        "icaptap-no-pcap"
    };
    let out: PathBuf = dir.join(format!("{name}-out"));
    let mut extra: Vec<String> = if record {
        ["--rotate-size", "256M", "--keep", "2"]
            .map(str::to_owned)
            .to_vec()
    } else {
        vec!["--no-pcap".to_owned()]
    };
    extra.extend([
        "--tls".to_owned(),
        "--tls-cert".to_owned(),
        pki.cert.display().to_string(),
        "--tls-key".to_owned(),
        pki.key.display().to_string(),
        "--upstream-tls".to_owned(),
        "--upstream-tls-ca".to_owned(),
        pki.ca.display().to_string(),
    ]);
    start_icaptap_with(name, icaptap, upstream, &out, &extra, dir)
}

/// HAProxy in `mode tcp` terminating TLS from the client (`bind ... ssl
/// crt`) and re-originating it to the TLS `upstream` (`server ... ssl`),
/// verifying the upstream's certificate against the run's CA as icaptap
/// does; otherwise as [`start_haproxy`].
pub fn start_haproxy_tls(
    upstream: SocketAddr,
    pki: &BenchPki,
    dir: &Path,
) -> Result<Peer, PeerError> {
    let addr = free_port().map_err(|source| PeerError::Spawn {
        program: "bind".into(),
        source,
    })?;
    let conf = format!(
        "global\n    maxconn 8000\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 10m\n    timeout server 10m\n\nfrontend icap\n    bind {addr} ssl crt {}\n    default_backend sensor\n\nbackend sensor\n    server sensor {upstream} ssl verify required ca-file {}\n",
        pki.bundle.display(),
        pki.ca.display()
    );
    let path = dir.join("haproxy.cfg");
    write_file(&path, &conf)?;
    let args = vec![
        "-db".to_owned(),
        "-f".to_owned(),
        path.display().to_string(),
    ];
    spawn("haproxy", Path::new("haproxy"), &args, addr, dir)
}

/// socat forking a child per connection, default buffer sizes.
pub fn start_socat(upstream: SocketAddr, dir: &Path) -> Result<Peer, PeerError> {
    let addr = free_port().map_err(|source| PeerError::Spawn {
        program: "bind".into(),
        source,
    })?;
    let args = vec![
        format!(
            "TCP-LISTEN:{},bind={},reuseaddr,fork,backlog=4096",
            addr.port(),
            addr.ip()
        ),
        format!("TCP:{upstream}"),
    ];
    spawn("socat", Path::new("socat"), &args, addr, dir)
}
