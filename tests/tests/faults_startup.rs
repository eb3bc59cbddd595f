//! Start-up errors of the real `icaptap proxy` binary: each is reported in
//! words that say what failed and what to do, with exit status 2, before
//! anything listens (the listen port stays free, "listening on" is never
//! printed) and without leaving a half-made run behind. An earlier run's
//! directory is never written over (proxy, demo, analyze), and values that
//! would silently break a run are refused naming their flag.
//!
//! The binary is run as a process (not `jobs::proxy::start`) because what a user
//! sees is its stderr and exit status. `CARGO_BIN_EXE_icaptap` only exists
//! for tests inside the icaptap package, so `faults_support` builds the
//! binary with cargo into the target directory of this very test
//! executable (fresh, same profile) and runs it from there.

mod faults_support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

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
    assert!(!out.exists(), "a failed start left {}", out.display());
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
    assert!(!out.exists(), "a failed start left {}", out.display());
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

/// Everything observable about a directory's contents: each entry's bytes
/// and modification time, and the directory's own modification time
/// (which changes when an entry is created or removed, even if removed
/// again).
#[derive(Debug, PartialEq)]
struct Snapshot {
    dir_modified: SystemTime,
    entries: BTreeMap<String, (Vec<u8>, SystemTime)>,
}

fn snapshot(dir: &Path) -> Snapshot {
    let entries = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let bytes = if meta.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                e.file_name().to_string_lossy().into_owned(),
                (bytes, meta.modified().unwrap()),
            )
        })
        .collect();
    Snapshot {
        dir_modified: std::fs::metadata(dir).unwrap().modified().unwrap(),
        entries,
    }
}

/// A directory holding an earlier run's `files` (with made-up contents),
/// their times set far back so that any write would show.
fn earlier_run(parent: &Path, files: &[&str]) -> PathBuf {
    let dir = parent.join("case-1234");
    std::fs::create_dir_all(&dir).unwrap();
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for name in files {
        let path = dir.join(name);
        std::fs::write(&path, format!("evidence of an earlier run: {name}\n")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    dir
}

/// A pcap file with a header and no packets: enough for `analyze` to
/// accept it as a capture.
fn empty_pcap(dir: &Path) -> PathBuf {
    let path = dir.join("client-side.pcap");
    let mut header = Vec::new();
    header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes());
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&[0; 8]);
    header.extend_from_slice(&65535u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    std::fs::write(&path, header).unwrap();
    path
}

/// Runs `icaptap ARGS`, expecting a refusal: exit status 2 and each of
/// `said` in stderr. Returns stderr.
fn refused(args: &[&str], said: &[&str]) -> String {
    let out = Command::new(icaptap_binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "icaptap {args:?}: {stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    for s in said {
        assert!(
            stderr.contains(s),
            "icaptap {args:?} does not say {s:?}: {stderr}"
        );
    }
    stderr
}

#[test]
fn an_earlier_run_is_never_written_over() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = empty_pcap(tmp.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Each way a directory can hold a run, for each job that writes one.
    let runs: &[&[&str]] = &[
        &[
            "exchanges.jsonl",
            "connections.jsonl",
            "summary.json",
            "capture.pcapng",
            "report.html",
        ],
        &["summary.json"],
        &["exchanges.jsonl"],
        &["capture-0003.pcapng", "notes.txt"],
    ];
    for (n, files) in runs.iter().enumerate() {
        let dir = earlier_run(&tmp.path().join(n.to_string()), files);
        let d = dir.to_str().unwrap();
        let before = snapshot(&dir);
        let jobs: [Vec<&str>; 3] = [
            vec![
                "proxy",
                "--listen",
                &listen,
                "--upstream",
                "127.0.0.1:1344",
                "--out",
                d,
            ],
            vec!["demo", "--out", d],
            vec!["analyze", capture.to_str().unwrap(), "--out", d],
        ];
        for job in &jobs {
            let stderr = refused(
                job,
                &[
                    d,
                    "already holds a run",
                    "--out",
                    &format!("icaptap clean {d}"),
                ],
            );
            assert!(
                files
                    .iter()
                    .any(|f| f.contains("capture") || stderr.contains(f)),
                "{stderr}"
            );
            assert_eq!(snapshot(&dir), before, "icaptap {job:?} touched {d}");
        }
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}

#[test]
fn an_empty_directory_or_one_without_icaptap_files_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let other = earlier_run(tmp.path(), &["notes.txt"]);
    for dir in [&empty, &other] {
        let port = free_port();
        // Valid values of the checked options are taken, in every syntax.
        let out = Command::new(icaptap_binary())
            .args([
                "proxy",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--upstream",
                "127.0.0.1:1344",
                "--duration",
                "1s",
                "--rotate-time",
                "5m",
                "--stop-on",
                "verdict-timeout,istag-changed",
                "--trigger",
                "any",
                "--observer-queue",
                "64",
                "--out",
            ])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(dir.join("summary.json").is_file(), "{stderr}");
        // A run that ends on --duration leaves its report too.
        for report in ["report.html", "report.md"] {
            assert!(dir.join(report).is_file(), "no {report}: {stderr}");
        }
        assert!(!dir.join(".icaptap-summary-reserve").exists());
    }
    assert_eq!(
        std::fs::read_to_string(other.join("notes.txt")).unwrap(),
        "evidence of an earlier run: notes.txt\n"
    );
    // A run directory just written is then refused for the next run.
    refused(
        &["demo", "--out", empty.to_str().unwrap()],
        &["already holds a run", "summary.json"],
    );
    // bundle --max-size takes a size with a unit, like every size flag.
    let bundle = tmp.path().join("b.tar.gz");
    let out = Command::new(icaptap_binary())
        .args(["bundle", empty.to_str().unwrap(), "--max-size", "5M", "-o"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(bundle.is_file());
    refused(
        &["bundle", empty.to_str().unwrap(), "--max-size", "5 parsecs"],
        &["--max-size", "unknown size unit"],
    );
}

#[test]
fn a_failed_start_leaves_no_output_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let fresh = tmp.path().join("new/case");
    let f = fresh.to_str().unwrap();
    // Port in use, into a directory (and parent) that do not exist yet.
    refused(
        &[
            "proxy",
            "--listen",
            &listen,
            "--upstream",
            "127.0.0.1:1344",
            "--out",
            f,
        ],
        &["already in use"],
    );
    assert!(!tmp.path().join("new").exists(), "a failed start left new/");
    // The metrics port in use.
    let port = free_port().to_string();
    refused(
        &[
            "proxy",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            "127.0.0.1:1344",
            "--metrics",
            &listen,
            "--out",
            f,
        ],
        &[&listen],
    );
    assert!(!tmp.path().join("new").exists(), "a failed start left new/");
    // An existing empty directory stays, and stays empty.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let before = snapshot(&empty);
    refused(
        &[
            "proxy",
            "--listen",
            &listen,
            "--upstream",
            "127.0.0.1:1344",
            "--out",
            empty.to_str().unwrap(),
        ],
        &["already in use"],
    );
    assert_eq!(snapshot(&empty), before);
    // analyze: a capture that is missing or is no capture.
    let not_a_capture = tmp.path().join("notes.txt");
    std::fs::write(&not_a_capture, "not a capture at all, just words").unwrap();
    let capture = empty_pcap(tmp.path());
    refused(
        &[
            "analyze",
            capture.to_str().unwrap(),
            "missing.pcap",
            "--out",
            f,
        ],
        &["missing.pcap", "not found"],
    );
    refused(
        &[
            "analyze",
            capture.to_str().unwrap(),
            "--peer",
            not_a_capture.to_str().unwrap(),
            "--out",
            f,
        ],
        &["notes.txt", "is not a capture"],
    );
    assert!(
        !tmp.path().join("new").exists(),
        "a failed analyze left new/"
    );
    drop(taken);
}

#[test]
fn values_that_would_break_a_run_are_refused_naming_their_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let proxy = |extra: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "proxy",
            "--listen",
            &listen,
            "--upstream",
            "127.0.0.1:1344",
            "--out",
            o,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            proxy(&["--stop-on", "missing-verdict"]),
            vec![
                "--stop-on",
                "missing-verdict",
                "did you mean `verdict-timeout`?",
                "sensor-unreachable",
            ],
        ),
        (
            proxy(&["--stop-on", "verdict-timeout,istag-chnged"]),
            vec!["--stop-on", "did you mean `istag-changed`?"],
        ),
        (
            proxy(&["--trigger", "nonsense"]),
            vec![
                "--trigger",
                "unknown anomaly code `nonsense`",
                "`any`",
                "docs/anomalies.md",
            ],
        ),
        (
            proxy(&["--observer-queue", "0"]),
            vec!["--observer-queue", "at least 64"],
        ),
        (
            proxy(&["--recorder-queue", "0"]),
            vec!["--recorder-queue", "at least 64"],
        ),
        (
            proxy(&["--rotate-time", "0"]),
            vec!["--rotate-time", "at least 1"],
        ),
        (
            proxy(&["--rotate-time", "1500ms"]),
            vec!["--rotate-time", "whole number of seconds"],
        ),
        (
            proxy(&["--rotate-size", "1"]),
            vec!["--rotate-size", "at least 1MiB"],
        ),
        (proxy(&["--ring", "1"]), vec!["--ring", "at least 1MiB"]),
        (
            proxy(&["--duration", "0s"]),
            vec!["--duration", "longer than zero"],
        ),
        (proxy(&["--keep", "0"]), vec!["--keep"]),
        (
            [
                "proxy",
                "--listen",
                &listen,
                "--upstream",
                "127.0.0.1:0",
                "--out",
                o,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            vec!["--upstream `127.0.0.1:0`", "port 0", "1344"],
        ),
        (
            ["client", "--count", "0", "icap://127.0.0.1:1344/av/respmod"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            vec!["--count", "0"],
        ),
    ];
    for (args, said) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, said);
        assert!(!out.exists(), "icaptap {args:?} left {o}");
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
    // The same check for a value from a config file, blamed on its key.
    let config = tmp.path().join("icaptap.toml");
    std::fs::write(&config, "stop-on = [\"missing-verdict\"]\n").unwrap();
    let mut args = proxy(&[]);
    args.extend(["--config".to_string(), config.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(
        &args,
        &[
            "`stop-on`",
            &config.display().to_string(),
            "verdict-timeout",
        ],
    );
    assert!(!out.exists());
}
