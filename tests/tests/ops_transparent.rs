//! Transparent mode between network namespaces the test creates itself:
//! client, icaptap and sensor each in their own namespace, joined by veth
//! pairs with private addresses that exist only inside those namespaces.
//! The icaptap namespace routes between the other two, and the rules of
//! deploy/icaptap-nft.sh (or deploy/icaptap-iptables.sh) redirect the
//! client's connections to the sensor into icaptap, which forwards them to
//! their original destination (REDIRECT: SO_ORIGINAL_DST, via nftables and
//! via iptables; TPROXY: IP_TRANSPARENT and a policy route). Asserted: both streams
//! arrive byte for byte, the sensor sees icaptap's address (so the traffic
//! went through it), the records name the original destination, and the
//! scripts' removal leaves no rule behind.
//!
//! Needs root (namespaces, nftables/iptables); skipped with a message
//! otherwise. No packet leaves these namespaces.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use icaptap::forward::ForwardConfig;
use icaptap::forward::TransparentMode;
use icaptap::jobs::proxy::{start, ProxyPlan};
use nix::sched::{setns, CloneFlags};

const CLIENT_IP: &str = "10.254.1.2";
const TAP_CLIENT_SIDE: &str = "10.254.1.1";
const TAP_SENSOR_SIDE: &str = "10.254.2.1";
const SENSOR_IP: &str = "10.254.2.2";
const SENSOR_PORT: u16 = 1344;
const TAP_PORT: u16 = 11344;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sh(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?} failed");
}

fn ns_sh(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} in {ns}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three namespaces, removed (with everything in them) when dropped.
struct Namespaces {
    client: String,
    tap: String,
    sensor: String,
}

impl Namespaces {
    fn create(tag: &str) -> Namespaces {
        let id = std::process::id();
        let n = Namespaces {
            client: format!("icaptap-{tag}-c-{id}"),
            tap: format!("icaptap-{tag}-t-{id}"),
            sensor: format!("icaptap-{tag}-s-{id}"),
        };
        for ns in [&n.client, &n.tap, &n.sensor] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // Both ends of each veth pair are created inside namespaces: no
        // interface or address ever appears in the host's namespace.
        sh(&[
            "ip", "link", "add", "ct0", "netns", &n.client, "type", "veth", "peer", "name", "tc0",
            "netns", &n.tap,
        ]);
        sh(&[
            "ip", "link", "add", "ts0", "netns", &n.tap, "type", "veth", "peer", "name", "st0",
            "netns", &n.sensor,
        ]);
        let addr = |ns: &str, ip: &str, dev: &str| {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        };
        addr(&n.client, CLIENT_IP, "ct0");
        addr(&n.tap, TAP_CLIENT_SIDE, "tc0");
        addr(&n.tap, TAP_SENSOR_SIDE, "ts0");
        addr(&n.sensor, SENSOR_IP, "st0");
        sh(&[
            "ip",
            "-n",
            &n.client,
            "route",
            "add",
            "default",
            "via",
            TAP_CLIENT_SIDE,
        ]);
        sh(&[
            "ip",
            "-n",
            &n.sensor,
            "route",
            "add",
            "default",
            "via",
            TAP_SENSOR_SIDE,
        ]);
        ns_sh(&n.tap, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        n
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.client, &self.tap, &self.sensor] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Moves the calling thread into namespace `ns`: sockets it opens from now
/// on (and threads it starts) live there.
fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).unwrap();
    setns(f, CloneFlags::CLONE_NEWNET).unwrap();
}

/// A deterministic, non-repeating-looking payload.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn transparent_forwarding_is_byte_exact(tag: &str, script: &str, mode: TransparentMode) {
    if !is_root() {
        eprintln!("SKIPPED: transparent mode test needs root (network namespaces, nftables/iptables); run as root to cover it");
        return;
    }
    let ns = Namespaces::create(tag);
    let script = repo().join("deploy").join(script);
    let script = script.to_str().unwrap();
    let port = SENSOR_PORT.to_string();
    let to_port = TAP_PORT.to_string();
    let mut rule_args = vec![
        "--sensor",
        SENSOR_IP,
        "--port",
        &port,
        "--to-port",
        &to_port,
    ];
    if mode == TransparentMode::Tproxy {
        rule_args.push("--tproxy");
    }
    let with = |action: &'static str| {
        let mut args = vec![script, action];
        args.extend_from_slice(&rule_args);
        args
    };
    ns_sh(&ns.tap, &with("insert"));

    // The sensor: reads the whole request stream, then answers.
    let request = payload(1 << 20, 7);
    let response = payload(300_000, 11);
    let sensor_ns = ns.sensor.clone();
    let answer = response.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sensor = std::thread::spawn(move || {
        enter(&sensor_ns);
        let listener = TcpListener::bind((SENSOR_IP, SENSOR_PORT)).unwrap();
        ready_tx.send(()).unwrap();
        let (mut conn, peer) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        conn.write_all(&answer).unwrap();
        (got, peer)
    });
    ready_rx.recv().unwrap();

    // icaptap in its namespace, forwarding redirected connections to their
    // original destination; --upstream is a fallback no one uses here.
    let tap_ns = ns.tap.clone();
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("run");
    let run_dir = out_dir.clone();
    let (proxy_tx, proxy_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let tap = std::thread::spawn(move || {
        enter(&tap_ns);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listen: SocketAddr = format!("0.0.0.0:{TAP_PORT}").parse().unwrap();
            let fallback: SocketAddr = "127.0.0.1:9".parse().unwrap();
            let mut forward = ForwardConfig::new(listen, fallback);
            forward.drain = Duration::from_secs(2);
            forward.transparent = Some(mode);
            let plan = ProxyPlan::new(forward, run_dir);
            let proxy = start(plan).await.unwrap();
            proxy_tx.send(()).unwrap();
            let _ = stop_rx.await;
            proxy.stop().await.unwrap()
        })
    });
    proxy_rx.recv().unwrap();

    // The client connects to the sensor's address, as configured, unaware
    // of icaptap.
    let client_ns = ns.client.clone();
    let sent = request.clone();
    let client = std::thread::spawn(move || {
        enter(&client_ns);
        let mut conn = TcpStream::connect((SENSOR_IP, SENSOR_PORT)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let local = conn.local_addr().unwrap();
        conn.write_all(&sent).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        (got, local)
    });
    let (client_got, client_addr) = client.join().unwrap();
    let (sensor_got, sensor_peer) = sensor.join().unwrap();
    stop_tx.send(()).unwrap();
    let summary = tap.join().unwrap();

    assert!(
        sensor_got == request,
        "the sensor got {} bytes, not the client's {} bytes",
        sensor_got.len(),
        request.len()
    );
    assert!(
        client_got == response,
        "the client got {} bytes, not the sensor's {} bytes",
        client_got.len(),
        response.len()
    );
    assert_eq!(
        sensor_peer.ip().to_string(),
        TAP_SENSOR_SIDE,
        "the sensor must see icaptap, not the client: the connection went through icaptap"
    );
    assert_eq!(summary.connections, 1);
    let records = std::fs::read_to_string(out_dir.join("connections.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(records.lines().next().unwrap()).unwrap();
    assert_eq!(record["server"], format!("{SENSOR_IP}:{SENSOR_PORT}"));
    assert_eq!(record["client"], client_addr.to_string());
    assert_eq!(record["bytes_client_to_server"], request.len());
    assert_eq!(record["bytes_server_to_client"], response.len());

    // Rollback leaves nothing behind.
    ns_sh(&ns.tap, &with("remove"));
    let rules = ns_sh(
        &ns.tap,
        &[
            "sh",
            "-c",
            "(nft list ruleset 2>/dev/null; iptables-save 2>/dev/null) | grep -i icaptap || true",
        ],
    );
    assert!(rules.trim().is_empty(), "rules left after remove: {rules}");
}

#[test]
fn nftables_redirect_to_icaptap_forwards_byte_exact_to_the_original_destination() {
    transparent_forwarding_is_byte_exact("nft", "icaptap-nft.sh", TransparentMode::Redirect);
}

#[test]
fn nftables_tproxy_to_icaptap_forwards_byte_exact_to_the_original_destination() {
    transparent_forwarding_is_byte_exact("ntp", "icaptap-nft.sh", TransparentMode::Tproxy);
}

#[test]
fn iptables_redirect_to_icaptap_forwards_byte_exact_to_the_original_destination() {
    transparent_forwarding_is_byte_exact("ipt", "icaptap-iptables.sh", TransparentMode::Redirect);
}
