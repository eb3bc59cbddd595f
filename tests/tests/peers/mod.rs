//! Real peers for integration tests, from Debian packages, on loopback:
//! c-icap (ICAP server, built-in `echo` service), Squid (ICAP client), a
//! small HTTP origin, and curl. Each runs in its own temporary directory on
//! free ports and is stopped when dropped.
#![allow(dead_code)]

pub mod e2guardian;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on {addr}");
}

/// Whether a program is installed (the tests need the Debian packages that
/// .ci/run installs).
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A child process killed on drop.
pub struct Daemon {
    child: Child,
    pub dir: PathBuf,
}

impl Daemon {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// c-icap on a free loopback port with its built-in `echo` service.
pub struct CIcap {
    pub addr: SocketAddr,
    pub daemon: Daemon,
}

impl CIcap {
    /// Starts c-icap; `extra` lines are appended to its configuration.
    pub fn start(dir: &Path, extra: &str) -> CIcap {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let base = std::fs::read_to_string("/etc/c-icap/c-icap.conf")
            .expect("c-icap is installed (.ci/run)");
        let mut conf = String::new();
        for line in base.lines() {
            let key = line.split_whitespace().next().unwrap_or("");
            let replaced = match key {
                "Port" => format!("Port 127.0.0.1:{port}"),
                "PidFile" => format!("PidFile {}/c-icap.pid", dir.display()),
                "CommandsSocket" => format!("CommandsSocket {}/c-icap.ctl", dir.display()),
                "ServerLog" => format!("ServerLog {}/server.log", dir.display()),
                "AccessLog" => format!("AccessLog {}/access.log", dir.display()),
                "User" => "User root".to_string(),
                "Group" => "Group root".to_string(),
                "StartServers" => "StartServers 1".to_string(),
                "MaxKeepAliveRequests" => "MaxKeepAliveRequests 10000".to_string(),
                _ => line.to_string(),
            };
            conf.push_str(&replaced);
            conf.push('\n');
        }
        conf.push_str(extra);
        let path = dir.join("c-icap.conf");
        std::fs::write(&path, conf).unwrap();
        let log = std::fs::File::create(dir.join("c-icap.out")).unwrap();
        let child = Command::new("c-icap")
            .args(["-f", path.to_str().unwrap(), "-N", "-D"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run c-icap");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let daemon = Daemon {
            child,
            dir: dir.to_path_buf(),
        };
        wait_listening(addr, "c-icap");
        CIcap { addr, daemon }
    }
}

/// Squid as the ICAP client, sending REQMOD and RESPMOD for every request to
/// `icap` (icaptap or c-icap), with preview and persistent connections on.
pub struct Squid {
    pub addr: SocketAddr,
    pub daemon: Daemon,
}

/// How Squid talks to its ICAP service.
pub struct SquidIcap {
    pub icap: SocketAddr,
    pub reqmod_service: String,
    pub respmod_service: String,
    /// `bypass=1`: fail open when the ICAP service is down.
    pub bypass: bool,
    pub preview_size: usize,
}

impl SquidIcap {
    /// Both services at `/echo` of `icap` (c-icap's echo service), fail
    /// closed, a 1 KiB preview: how the interop tests chain Squid.
    pub fn echo(icap: SocketAddr) -> SquidIcap {
        SquidIcap {
            icap,
            reqmod_service: "/echo".to_string(),
            respmod_service: "/echo".to_string(),
            bypass: false,
            preview_size: 1024,
        }
    }
}

impl Squid {
    /// [`Squid::start`] from an async test, off the runtime's workers
    /// (Squid takes a while to start listening).
    pub async fn start_from_async(dir: PathBuf, icap: SquidIcap) -> Squid {
        tokio::task::spawn_blocking(move || Squid::start(&dir, &icap))
            .await
            .unwrap()
    }

    /// Starts Squid and waits until it accepts HTTP.
    pub fn start(dir: &Path, icap: &SquidIcap) -> Squid {
        Squid::start_with(dir, icap, "")
    }

    /// [`Squid::start`] with `extra` lines appended to its configuration
    /// (what a particular ICAP service asks of Squid).
    pub fn start_with(dir: &Path, icap: &SquidIcap, extra: &str) -> Squid {
        Squid::launch(dir, icap, None, extra)
    }

    /// [`Squid::start`] with ICAP over TLS: `icaps://` services whose
    /// certificate must chain to `cafile` (Squid 5.7 with GnuTLS).
    pub fn start_icaps(dir: &Path, icap: &SquidIcap, cafile: &Path) -> Squid {
        Squid::launch(dir, icap, Some(cafile), "")
    }

    fn launch(dir: &Path, icap: &SquidIcap, tls_cafile: Option<&Path>, extra: &str) -> Squid {
        std::fs::create_dir_all(dir).unwrap();
        let (scheme, tls) = match tls_cafile {
            Some(ca) => ("icaps", format!(" tls-cafile={}", ca.display())),
            None => ("icap", String::new()),
        };
        let port = free_port();
        let d = dir.display();
        let bypass = u8::from(icap.bypass);
        let conf = format!(
            "http_port 127.0.0.1:{port}\n\
             pid_filename {d}/squid.pid\n\
             cache deny all\n\
             cache_mem 8 MB\n\
             access_log stdio:{d}/access.log\n\
             cache_log {d}/cache.log\n\
             icap_log stdio:{d}/icap.log icap_squid\n\
             coredump_dir {d}\n\
             shutdown_lifetime 1 seconds\n\
             http_access allow all\n\
             via off\n\
             forwarded_for delete\n\
             dns_v4_first on\n\
             icap_enable on\n\
             icap_preview_enable on\n\
             icap_preview_size {preview}\n\
             icap_persistent_connections on\n\
             icap_send_client_ip on\n\
             icap_service_failure_limit -1\n\
             icap_service svc_req reqmod_precache {scheme}://{ia}{req} bypass={bypass}{tls}\n\
             icap_service svc_resp respmod_precache {scheme}://{ia}{resp} bypass={bypass}{tls}\n\
             adaptation_access svc_req allow all\n\
             adaptation_access svc_resp allow all\n",
            preview = icap.preview_size,
            ia = icap.icap,
            req = icap.reqmod_service,
            resp = icap.respmod_service,
        );
        let path = dir.join("squid.conf");
        std::fs::write(&path, conf + extra).unwrap();
        // Squid drops privileges to `proxy`, which must be able to write its logs.
        let _ = Command::new("chown")
            .args(["-R", "proxy:proxy", dir.to_str().unwrap()])
            .status();
        let out = std::fs::File::create(dir.join("squid.out")).unwrap();
        let child = Command::new("squid")
            .args(["-f", path.to_str().unwrap(), "-N"])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("run squid");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let daemon = Daemon {
            child,
            dir: dir.to_path_buf(),
        };
        wait_listening(addr, "squid");
        Squid { addr, daemon }
    }

    /// Lines of Squid's icap_log so far (one per ICAP transaction).
    pub fn icap_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.daemon.dir.join("icap.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Fetches `url` through the HTTP proxy `proxy` with curl; returns the HTTP
/// status and the body.
pub fn curl_via(proxy: SocketAddr, url: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "30",
            "-x",
            &format!("http://{proxy}"),
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()
        .expect("run curl");
    let mut body = out.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&body[split + 1..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(split);
    (code, body)
}

/// A tiny HTTP/1.1 origin server on loopback serving fixed objects by path
/// (keep-alive, Content-Length).
pub struct Origin {
    pub addr: SocketAddr,
}

impl Origin {
    /// Serves `objects` (path, body) on a free port, on its own thread.
    pub fn start(objects: Vec<(String, Vec<u8>)>) -> Origin {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let objects = std::sync::Arc::new(objects);
            for stream in listener.incoming().flatten() {
                let objects = objects.clone();
                std::thread::spawn(move || serve_http(stream, &objects));
            }
        });
        Origin { addr }
    }

    /// The URL of `path` on this origin.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn serve_http(mut stream: std::net::TcpStream, objects: &[(String, Vec<u8>)]) {
    use std::io::{Read, Write};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let path = path.split_once("://").map_or(path.clone(), |(_, rest)| {
                rest.find('/')
                    .map_or("/".to_string(), |i| rest[i..].to_string())
            });
            let found = objects.iter().find(|(p, _)| *p == path);
            let (status, body): (&str, &[u8]) = match found {
                Some((_, b)) => ("200 OK", b),
                None => ("404 Not Found", b"not found"),
            };
            let head = format!("HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", body.len());
            if stream
                .write_all(head.as_bytes())
                .and_then(|_| stream.write_all(body))
                .is_err()
            {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// tcpdump writing a capture; stop it with [`Tcpdump::stop`] so it flushes.
pub struct Tcpdump {
    child: Child,
    pub file: PathBuf,
}

impl Tcpdump {
    /// Starts `tcpdump -i IFACE -s 0 -B 65536 -U -w FILE FILTER` and waits
    /// until it says it is listening.
    pub fn start(iface: &str, filter: &str, file: &Path) -> Tcpdump {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new("tcpdump")
            .args(["-i", iface, "-nn", "-s", "0", "-B", "65536", "-U", "-w"])
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tcpdump (installed by .ci/run)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("tcpdump did not start listening");
        Tcpdump {
            child,
            file: file.to_path_buf(),
        }
    }

    /// Waits until the capture has not grown for 1.2 s (tcpdump drains the kernel
    /// buffer after the traffic is over; stopping it earlier loses the
    /// tail), then stops tcpdump with SIGTERM so it closes its file.
    pub fn stop(mut self) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut last, mut stable) = (0, 0);
        while stable < 8 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(150));
            let len = std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
            if len == last {
                stable += 1;
            } else {
                (stable, last) = (0, len);
            }
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.file.clone()
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics with what to install when `program` is missing: the real-peer
/// tests skip nothing.
pub fn require(program: &str, package: &str) {
    assert!(
        have(program),
        "{program} is not installed: install via .ci/run (Debian package {package})"
    );
}

/// Panics with what to install when c-icap's module `file` is missing.
pub fn require_cicap_module(file: &str, package: &str) {
    let path = Path::new(CICAP_MODULES).join(file);
    assert!(
        path.exists(),
        "{} is missing: install via .ci/run (Debian package {package})",
        path.display()
    );
}

/// Where Debian puts c-icap's services and modules.
pub const CICAP_MODULES: &str = "/usr/lib/x86_64-linux-gnu/c_icap";

/// The made-up body pattern the test signature database detects anywhere
/// in a body (an `.ndb` signature).
pub const VIRUS_MARKER: &str = "ICAPTAP-TEST-VIRUS-MARKER-4d2f9a";
/// The name ClamAV reports for [`VIRUS_MARKER`] (private databases get
/// `.UNOFFICIAL`).
pub const VIRUS_MARKER_NAME: &str = "IcapTap.Test.Marker.UNOFFICIAL";
/// The name ClamAV reports for the 68-byte EICAR file (an `.hdb` hash
/// signature: without the official databases EICAR is not detected).
pub const EICAR_NAME: &str = "Eicar-Test-Signature.UNOFFICIAL";

/// clamd in the foreground on a Unix socket in `dir`, with a signature
/// database written here (no download): [`VIRUS_MARKER`] anywhere in a
/// body, and the EICAR test file by its MD5.
pub struct Clamd {
    pub socket: PathBuf,
    pub daemon: Daemon,
}

impl Clamd {
    /// Starts clamd and waits until it answers `zPING` with `PONG`.
    pub fn start(dir: &Path) -> Clamd {
        require("clamd", "clamav-daemon");
        let db = dir.join("db");
        std::fs::create_dir_all(&db).unwrap();
        let hex: String = VIRUS_MARKER.bytes().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            db.join("icaptap.ndb"),
            format!("IcapTap.Test.Marker:0:*:{hex}\n"),
        )
        .unwrap();
        std::fs::write(
            db.join("eicar.hdb"),
            "44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n",
        )
        .unwrap();
        let socket = dir.join("clamd.sock");
        let d = dir.display();
        let conf = format!(
            "Foreground yes\nLocalSocket {}\nLocalSocketMode 666\nDatabaseDirectory {}\n\
             TemporaryDirectory {d}\nPidFile {d}/clamd.pid\nLogFile {d}/clamd.log\nLogTime yes\n",
            socket.display(),
            db.display()
        );
        let path = dir.join("clamd.conf");
        std::fs::write(&path, conf).unwrap();
        let out = std::fs::File::create(dir.join("clamd.out")).unwrap();
        let child = Command::new("clamd")
            .arg("-c")
            .arg(&path)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("run clamd");
        let daemon = Daemon {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !clamd_pong(&socket) {
            assert!(
                Instant::now() < deadline,
                "clamd did not answer on {}: {}",
                socket.display(),
                std::fs::read_to_string(dir.join("clamd.out")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Clamd { socket, daemon }
    }
}

fn clamd_pong(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = Vec::new();
    s.write_all(b"zPING\0").is_ok()
        && s.read_to_end(&mut answer).is_ok()
        && answer.starts_with(b"PONG")
}

/// c-icap as a real anti-malware and policy sensor: `virus_scan` backed by
/// `clamd`, `url_check` blocking the hosts in `deny_hosts` (and their
/// subdomains), `srv_content_filtering` blocking text bodies that contain
/// `forbidden-word`, and `echo`. Its scan log (`scan.log` in its
/// directory) has one line per request: method, status, URL, the
/// virus_scan action and virus name.
pub fn cicap_sensor(dir: &Path, clamd: &Clamd, deny_hosts: &[&str]) -> CIcap {
    cicap_sensor_with(dir, clamd, deny_hosts, "")
}

/// [`cicap_sensor`] with `more` configuration lines after its own (a later
/// line wins, e.g. `Timeout 3`).
pub fn cicap_sensor_with(dir: &Path, clamd: &Clamd, deny_hosts: &[&str], more: &str) -> CIcap {
    require("c-icap", "c-icap");
    require_cicap_module("virus_scan.so", "libc-icap-mod-virus-scan");
    require_cicap_module("clamd_mod.so", "libc-icap-mod-virus-scan");
    require_cicap_module("srv_url_check.so", "libc-icap-mod-urlcheck");
    require_cicap_module("srv_content_filtering.so", "libc-icap-mod-contentfiltering");
    std::fs::create_dir_all(dir).unwrap();
    let deny = dir.join("denyhosts.txt");
    std::fs::write(&deny, deny_hosts.join("\n") + "\n").unwrap();
    let d = dir.display();
    let extra = format!(
        "LogFormat tapFmt \"%im %is %huo action=%{{virus_scan:action}}Sa virus=%{{virus_scan:virus}}Sa\"\n\
         AccessLog {d}/scan.log tapFmt\n\
         Module common clamd_mod.so\n\
         clamd_mod.ClamdSocket {sock}\n\
         Service antivirus_module virus_scan.so\n\
         virus_scan.ScanFileTypes TEXT DATA EXECUTABLE ARCHIVE GIF JPEG MSOFFICE\n\
         virus_scan.SendPercentData 5\n\
         virus_scan.StartSendPercentDataAfter 2M\n\
         virus_scan.MaxObjectSize 5M\n\
         virus_scan.DefaultEngine clamd\n\
         Service url_check_module srv_url_check.so\n\
         url_check.LookupTableDB denyhosts domain hash:{deny} \"Denied Hosts\"\n\
         url_check.Profile default block denyhosts\n\
         url_check.Profile default pass ALL\n\
         Service srv_cfg_filter srv_content_filtering.so\n\
         srv_content_filtering.Match BadWords body /forbidden-word/i score=10\n\
         srv_content_filtering.Action block score{{BadWords>5}}\n\
         {more}",
        sock = clamd.socket.display(),
        deny = deny.display(),
    );
    let cicap = CIcap::start(dir, &extra);
    wait_icap_ready(cicap.addr);
    // clamd_mod connects once, at start: without clamd virus_scan fails
    // open and answers 204 to everything.
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    assert!(
        !log.contains("Can not connect to clamd"),
        "c-icap could not reach clamd at {}: {log}",
        clamd.socket.display()
    );
    cicap
}

/// Waits until the ICAP server at `addr` answers an OPTIONS with 200.
pub fn wait_icap_ready(addr: SocketAddr) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let request = format!("OPTIONS icap://{addr}/echo ICAP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut buf = [0u8; 32];
            if s.write_all(request.as_bytes()).is_ok()
                && s.read(&mut buf)
                    .is_ok_and(|n| buf[..n].starts_with(b"ICAP/1.0 200"))
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "c-icap on {addr} did not answer OPTIONS"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
