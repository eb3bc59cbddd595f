//! Start-up errors of the real `icaptap proxy` binary: each is reported in
//! words that say what failed and what to do, with exit status 2, before
//! anything listens (the listen port stays free, "listening on" is never
//! printed) and without leaving a half-made run behind.
//!
//! The binary is run as a process (not `jobs::proxy::start`) because what a user
//! sees is its stderr and exit status. `CARGO_BIN_EXE_icaptap` only exists
//! for tests inside the icaptap package, so `faults_support` builds the
//! binary with cargo into the target directory of this very test
//! executable (fresh, same profile) and runs it from there.

mod faults_support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use faults_support::*;

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn proxy(args: &[&str]) -> Command {
    let mut cmd = Command::new(icaptap_binary());
    cmd.arg("proxy").args(args).env("RUST_LOG", "warn");
    cmd
}

/// Runs `cmd` to completion; checks exit status 2, that nothing listened,
/// and returns stderr.
fn fails_before_listening(mut cmd: Command, port: u16) -> String {
    let out: Output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert!(stderr.contains("icaptap: error: "), "{stderr}");
    // Nothing holds the port afterwards either.
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    stderr
}

#[test]
fn output_directory_not_writable() {
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    // Root ignores permission bits: a read-only tmpfs is read-only for
    // root too. Without root, a 0500 directory does the same.
    let mounted = is_root()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
            .arg(&ro)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !mounted {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    }
    let port = free_port();
    let out = ro.join("run");
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = proxy(&["--listen", &listen, "--upstream", "127.0.0.1:1344", "--out"]);
    cmd.arg(&out);
    let stderr = fails_before_listening(cmd, port);
    if mounted {
        let _ = Command::new("umount").arg(&ro).status();
    }
    assert!(stderr.contains(&out.display().to_string()), "{stderr}");
    assert!(stderr.contains("--out"), "no hint what to do: {stderr}");
}

#[test]
fn listen_port_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(icaptap_binary());
    cmd.args([
        "proxy",
        "--listen",
        &listen,
        "--upstream",
        "127.0.0.1:1344",
        "--out",
    ])
    .arg(&out);
    let run = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(stderr.contains(&listen), "{stderr}");
    assert!(stderr.contains("--listen"), "no hint what to do: {stderr}");
    drop(taken);
    assert_no_half_made_run(&out);
}

/// A failed start leaves no record files a later reader would take for a
/// run.
fn assert_no_half_made_run(out: &Path) {
    for name in [
        "exchanges.jsonl",
        "connections.jsonl",
        "capture.pcapng",
        "summary.json",
    ] {
        let f = out.join(name);
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert_eq!(
            len,
            0,
            "{} holds {len} bytes after a failed start",
            f.display()
        );
    }
}

#[test]
fn upstream_name_unresolvable() {
    // The name must fail without asking the network's resolver (tests
    // stay on loopback): a private mount namespace gets a resolv.conf
    // naming 127.0.0.1, where no DNS server listens.
    assert!(is_root(), "a private resolv.conf needs root (unshare -m)");
    let tmp = tempfile::tempdir().unwrap();
    let resolv = tmp.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let out = tmp.path().join("run");
    let port = free_port();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec {} proxy --listen 127.0.0.1:{port} --upstream sensor.icaptap-test.invalid:1344 --out {}",
        resolv.display(),
        icaptap_binary().display(),
        out.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let stderr = fails_before_listening(cmd, port);
    assert!(
        stderr.contains("cannot resolve --upstream `sensor.icaptap-test.invalid:1344`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("IP address"),
        "no hint what to do: {stderr}"
    );
}

#[test]
fn bad_config_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("icaptap.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:1344\"\nverdict_timout = \"5s\"\n"),
    )
    .unwrap();
    let mut cmd = proxy(&["--config"]);
    cmd.arg(&config).arg("--out").arg(tmp.path().join("run"));
    let stderr = fails_before_listening(cmd, port);
    assert!(stderr.contains("unknown key `verdict_timout`"), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("verdict-timeout"),
        "the valid keys are not listed: {stderr}"
    );
}
