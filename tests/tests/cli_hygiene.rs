//! The real `icaptap` binary as a terminal, a pipe and a log collector see
//! it: no ANSI escapes when stderr is not a terminal; with `--log-format
//! json` stderr holds only JSON objects whose values are JSON (no Rust
//! debug text); no panic when the reader of stdout goes away; man pages
//! with ENVIRONMENT, EXIT STATUS and EXAMPLES; `--version` with the git
//! commit; `analyze -` from stdin; `demo --port` and `check --port`; the
//! exit status table of docs/cli.md; `--out ...{time}`; and the side-path
//! threads at the nice levels the systemd unit lets them set.

mod faults_support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use faults_support::*;

/// A free loopback port (bound and released: another test could take it
/// in between, which would fail loudly, not pass wrongly).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn icaptap(args: &[&str]) -> Command {
    let mut cmd = Command::new(icaptap_binary());
    cmd.args(args)
        .env_remove("ICAPTAP_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A short proxy run to a closed sensor port, stderr captured.
fn short_proxy_run(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:1",
        "--duration",
        "1s",
        "--out",
        out.to_str().unwrap(),
    ]);
    icaptap(&args).env("RUST_LOG", "info").output().unwrap()
}

/// Runs the demo into `out` on `port`; returns its output.
fn demo(out: &Path, port: u16) -> Output {
    icaptap(&["demo", "--port", &port.to_string(), "--out"])
        .arg(out)
        .output()
        .unwrap()
}

/// Runs `args` with stdout a pipe whose reading end is already closed:
/// every write to it fails with EPIPE.
fn with_closed_stdout(args: &[&str]) -> Output {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    icaptap(args)
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn logs_carry_no_ansi_escapes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = short_proxy_run(&dir.path().join("run"), &[]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("forwarding stopped"), "no log line: {err}");
    assert!(!err.contains('\u{1b}'), "ANSI escapes on a pipe: {err:?}");
}

#[test]
fn json_log_format_writes_only_json_objects_with_json_values() {
    let dir = tempfile::tempdir().unwrap();
    let out = short_proxy_run(&dir.path().join("run"), &["--log-format", "json"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for e in &events {
        assert!(
            e["level"].is_string() && e["fields"]["message"].is_string(),
            "{e}"
        );
        for (key, value) in e["fields"].as_object().unwrap() {
            let value = value.to_string();
            assert!(
                !value.contains(" { ") && !value.contains("Some(") && !value.contains("None"),
                "{key} is Rust debug text: {value}"
            );
        }
    }
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["fields"]["message"].as_str().unwrap())
        .collect();
    // icaptap's own notices are JSON too.
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("icaptap: listening on")),
        "{messages:?}"
    );
    let forwarded = events
        .iter()
        .find(|e| e["fields"]["message"] == "forwarding stopped")
        .expect("the forwarding totals");
    assert_eq!(forwarded["fields"]["connections_total"], 0);
    assert!(forwarded["fields"]["bytes_client_to_sensor"].is_u64());
    let recorded = events
        .iter()
        .find(|e| e["fields"]["message"] == "recording stopped")
        .expect("the recording totals");
    assert!(recorded["fields"]["packets"].is_u64(), "{recorded}");

    // Real connections at debug level (the demo forwards through icaptap):
    // how each copy loop ended is a word, not an enum's debug text.
    let out = icaptap(&["--log-format", "json", "demo", "--out"])
        .arg(dir.path().join("demo"))
        .env("RUST_LOG", "warn,icaptap=debug")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let finished: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["fields"]["message"] == "connection finished")
        .collect();
    assert!(!finished.is_empty(), "{err}");
    for e in finished {
        for end in ["up", "down"] {
            let how = e["fields"][end].as_str().unwrap();
            assert!(!how.contains('(') && !how.contains('{'), "{e}");
        }
    }

    // A usage error and a start-up error are one JSON object each, exit 2.
    for args in [
        &["--log-format", "json", "proxy", "--no-such-flag"][..],
        &["--log-format", "json", "analyze", "/nonexistent.pcap"][..],
    ] {
        let out = icaptap(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        let e: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(e["level"], "ERROR", "{e}");
    }
}

#[test]
fn a_closed_stdout_ends_no_command_with_a_panic() {
    for args in [
        &["completions", "bash"][..],
        &["manpage"][..],
        &["sensor", "--print-scenario"][..],
        &["check", "--print-suite"][..],
        &["--help"][..],
        &["--version"][..],
    ] {
        let out = with_closed_stdout(args);
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
    // Through a real `head`, as the user types it.
    let bin = icaptap_binary();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' completions bash 2>&1 >/dev/null | head -1; '{}' completions bash | head -1 >/dev/null",
            bin.display(),
            bin.display()
        ))
        .output()
        .unwrap();
    assert!(!text(&out.stdout).contains("panicked"));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_demo_takes_a_port_and_its_capture_analyzes_from_stdin_and_into_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = demo(&dir.path().join("demo"), port);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(
        said.contains(&format!("icaptap on 127.0.0.1:{port}")),
        "{said}"
    );
    let capture = dir.path().join("demo/capture.pcapng");
    let exchanges = |run: &Path| {
        std::fs::read_to_string(run.join("exchanges.jsonl"))
            .unwrap()
            .lines()
            .count()
    };

    // From a file and from standard input: the same exchanges.
    let by_path = dir.path().join("by-path");
    let out = icaptap(&["analyze", "--no-progress", "--out"])
        .arg(&by_path)
        .arg(&capture)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let by_stdin = dir.path().join("by-stdin");
    let out = icaptap(&["analyze", "--no-progress", "-", "--out"])
        .arg(&by_stdin)
        .stdin(std::fs::File::open(&capture).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(exchanges(&by_path) > 5);
    assert_eq!(exchanges(&by_stdin), exchanges(&by_path));
    // Standard input is read once.
    let out = icaptap(&["analyze", "-", "-", "--out"])
        .arg(dir.path().join("twice"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("only once"),
        "{}",
        text(&out.stderr)
    );

    // `analyze ... | head`: the story is cut, the run is whole.
    let into_pipe = dir.path().join("into-pipe");
    let out = with_closed_stdout(&[
        "analyze",
        "--no-progress",
        capture.to_str().unwrap(),
        "--out",
        into_pipe.to_str().unwrap(),
    ]);
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(exchanges(&into_pipe), exchanges(&by_path));
}

#[test]
fn a_port_in_use_is_a_clear_start_up_error() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();

    let out = icaptap(&["demo", "--port", &port, "--out"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("already in use") && err.contains("--port"),
        "{err}"
    );

    let out = icaptap(&["check", "--port", &port, "--proxy", "127.0.0.1:9", "--out"])
        .arg(dir.path().join("check"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("already in use"),
        "{err}"
    );

    let out = icaptap(&["sensor", "--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn exit_statuses_follow_the_one_table() {
    let dir = tempfile::tempdir().unwrap();
    // Usage errors: 2, for every subcommand.
    for sub in [
        "proxy", "analyze", "demo", "check", "sensor", "client", "report", "bundle",
    ] {
        let out = icaptap(&[sub, "--no-such-flag"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{sub}");
    }
    // Nothing found: 1 (a capture without ICAP).
    let empty = dir.path().join("no-icap.pcap");
    let mut pcap = Vec::new();
    pcap.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    pcap.extend_from_slice(&[2, 0, 4, 0]);
    pcap.extend_from_slice(&[0; 8]);
    pcap.extend_from_slice(&65535u32.to_le_bytes());
    pcap.extend_from_slice(&1u32.to_le_bytes());
    std::fs::write(&empty, &pcap).unwrap();
    let out = icaptap(&["analyze", "--out"])
        .arg(dir.path().join("a"))
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // An output directory holding an earlier run: 2.
    let out = icaptap(&["analyze", "--out"])
        .arg(dir.path().join("a"))
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // docs/cli.md lists every row of the table the man pages render.
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md"))
            .unwrap();
    for (code, what) in icaptap::cli::exit::EXIT_STATUS {
        let first_words: String = what
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            docs.contains(&format!("| {code} | {first_words}")),
            "docs/cli.md lacks exit status {code}"
        );
    }
}

#[test]
fn man_pages_have_environment_exit_status_and_examples() {
    let dir = tempfile::tempdir().unwrap();
    let out = icaptap(&["manpage", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    for name in [
        "icaptap.1",
        "icaptap-proxy.1",
        "icaptap-analyze.1",
        "icaptap-check.1",
    ] {
        let roff = page(name);
        for section in [".SH ENVIRONMENT", ".SH \"EXIT STATUS\"", ".SH EXAMPLES"] {
            assert!(roff.contains(section), "{name} lacks {section}");
        }
        assert!(roff.contains("ICAPTAP_LOG_FORMAT"), "{name}");
    }
    assert!(page("icaptap-proxy.1").contains("ICAPTAP_UPSTREAM"));
    // man renders them, sections included.
    if Command::new("man").arg("--version").output().is_ok() {
        let shown = Command::new("man")
            .arg("-l")
            .arg(dir.path().join("icaptap-analyze.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "200")
            .output()
            .unwrap();
        let shown = text(&shown.stdout);
        assert!(shown.contains("EXIT STATUS"), "{shown}");
        assert!(shown.contains("icaptap analyze -"), "{shown}");
    }
}

#[test]
fn the_version_names_the_git_commit() {
    let out = icaptap(&["--version"]).output().unwrap();
    let version = text(&out.stdout);
    assert!(version.starts_with("icaptap 0."), "{version}");
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(head) if head.status.success() => {
            let commit = text(&head.stdout).trim().to_string();
            assert!(
                version.contains(&format!("({commit})"))
                    || version.contains(&format!("({commit}-dirty)")),
                "{version} does not name {commit}"
            );
        }
        _ => eprintln!("SKIPPED: no git here; the version is {version}"),
    }
}

#[test]
fn out_takes_a_time_placeholder() {
    let dir = tempfile::tempdir().unwrap();
    let out = short_proxy_run(&dir.path().join("run-{time}"), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let stamp = names[0].strip_prefix("run-").unwrap();
    assert!(
        stamp.len() == 15
            && stamp.as_bytes()[8] == b'-'
            && stamp.chars().filter(char::is_ascii_digit).count() == 14,
        "{names:?}"
    );
    assert!(PathBuf::from(dir.path())
        .join(&names[0])
        .join("summary.json")
        .exists());
}

/// Whether this process has `CAP_SYS_NICE` (bit 23 of `CapEff`).
fn has_cap_sys_nice() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 23) != 0)
}

/// `SCHED_IDLE` as /proc reports it.
const SCHED_IDLE: i64 = 5;

#[test]
fn the_side_path_threads_run_at_their_nice_levels() {
    let dir = tempfile::tempdir().unwrap();
    let sensor: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let proxy = ProxyProcess::start(sensor, &dir.path().join("run"), &[], None);
    let of = |threads: &[(String, i64, i64)], prefix: &str| {
        threads
            .iter()
            .find(|(name, _, _)| name.starts_with(prefix))
            .map(|(_, nice, policy)| (*nice, *policy))
    };
    // An idle side path waits at SCHED_IDLE when the thread may come back
    // from it (tap/priority.rs), else at its nice level's normal policy.
    let policy = if has_cap_sys_nice() { SCHED_IDLE } else { 0 };
    // Each thread lowers its priority as it starts, which may be just
    // after "listening on": wait for it (or fail after PATIENCE).
    let deadline = std::time::Instant::now() + PATIENCE;
    let threads = loop {
        let threads = faults_support::thread_nice(proxy.pid());
        let lowered = of(&threads, "icaptap-observ") == Some((5, policy))
            && of(&threads, "icaptap-record") == Some((10, policy));
        if lowered || std::time::Instant::now() > deadline {
            break threads;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        of(&threads, "icaptap-observ"),
        Some((5, policy)),
        "{threads:?}"
    );
    assert_eq!(
        of(&threads, "icaptap-record"),
        Some((10, policy)),
        "{threads:?}"
    );
    let (ok, err) = proxy.stop();
    assert!(ok, "{err}");
}

/// icaptap's build script as cargo last built it (the newest in this
/// target directory).
fn build_script() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let build = exe.parent()?.parent()?.join("build");
    std::fs::read_dir(build)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("icaptap-"))
        .map(|e| e.path().join("build-script-build"))
        .filter(|p| p.exists())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

#[test]
fn without_git_the_version_is_the_package_version() {
    let Some(script) = build_script() else {
        panic!("icaptap's build script is not in this target directory");
    };
    let no_git = tempfile::tempdir().unwrap();
    let version = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(&script);
        cmd.env("CARGO_MANIFEST_DIR", no_git.path())
            .env_remove("ICAPTAP_BUILD_COMMIT")
            .current_dir(no_git.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        text(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("cargo:rustc-env=ICAPTAP_VERSION="))
            .unwrap()
            .to_string()
    };
    // No .git (a tarball, a container build context): the package version.
    assert_eq!(version(&[]), env!("CARGO_PKG_VERSION"));
    // No git at all.
    assert_eq!(
        version(&[("PATH", "/nonexistent")]),
        env!("CARGO_PKG_VERSION")
    );
    // The packager names the commit.
    assert_eq!(
        version(&[("ICAPTAP_BUILD_COMMIT", "1a2b3c4")]),
        format!("{} (1a2b3c4)", env!("CARGO_PKG_VERSION"))
    );
}
