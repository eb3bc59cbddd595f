//! The line per exchange while icaptap runs, as a person at a terminal
//! and a pipe into `grep` see it: the real `icaptap` binary, once under a
//! pseudo-terminal (util-linux `script`) and once with its output piped,
//! forwarding what the real `c-icap-client` sends to a real c-icap
//! (`virus_scan` backed by clamd, `url_check`). One line per exchange
//! record, in the records' order, with the same method, verdict and URL;
//! ANSI colour on the terminal only (and not under `NO_COLOR`); nothing
//! with `-q`; the heads with `-v`; only what `--filter` selects; the same
//! lines from `icaptap analyze` over the run's own capture.
//!
//! Every peer comes from a Debian package `.ci/run` installs; a missing
//! one fails the test, it is never skipped.

mod faults_support;
mod peers;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faults_support::{icaptap_binary, read_jsonl, PATIENCE};
use icaptap::output::records::ExchangeRecord;
use peers::*;

/// Where icaptap's output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Console {
    /// stdout and stderr on one pseudo-terminal, `NO_COLOR` set or not.
    Terminal { no_color: bool },
    /// stdout and stderr each to a pipe of its own.
    Pipes,
}

/// A real sensor: c-icap with clamd behind it.
struct Sensor {
    addr: SocketAddr,
    _cicap: CIcap,
    _clamd: Clamd,
    tmp: tempfile::TempDir,
}

impl Sensor {
    fn start() -> Sensor {
        require("c-icap-client", "c-icap");
        require("script", "util-linux");
        let tmp = tempfile::tempdir().unwrap();
        let clamd = Clamd::start(&tmp.path().join("clamd"));
        let cicap = cicap_sensor(&tmp.path().join("cicap"), &clamd, &["blocked.example"]);
        for (name, body) in [
            ("infected.txt", format!("hello {VIRUS_MARKER} world\n")),
            ("clean.txt", "nothing to see here\n".to_string()),
        ] {
            std::fs::write(tmp.path().join(name), body).unwrap();
        }
        Sensor {
            addr: cicap.addr,
            _cicap: cicap,
            _clamd: clamd,
            tmp,
        }
    }

    /// The three c-icap-client runs of every case, with the verdict and URL
    /// each must get: malware, a clean file, a blocked URL.
    fn traffic(&self) -> Vec<(Vec<String>, &'static str, &'static str)> {
        let file = |name: &str| self.tmp.path().join(name).display().to_string();
        vec![
            (
                strings(&["-s", "virus_scan", "-f", &file("infected.txt")])
                    .into_iter()
                    .chain(strings(&["-resp", "http://origin.test/infected.txt"]))
                    .collect(),
                "infected",
                "http://origin.test/infected.txt",
            ),
            (
                strings(&["-s", "virus_scan", "-f", &file("clean.txt")])
                    .into_iter()
                    .chain(strings(&["-resp", "http://origin.test/clean.txt"]))
                    .collect(),
                "clean",
                "http://origin.test/clean.txt",
            ),
            (
                strings(&["-s", "url_check", "-req", "http://www.blocked.example/x"]),
                "blocked",
                "http://www.blocked.example/x",
            ),
        ]
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// What one icaptap process said and recorded.
struct Run {
    /// stdout (on a terminal: everything, stdout and stderr, as shown).
    stdout: String,
    /// stderr (empty on a terminal: it is in `stdout`).
    stderr: String,
    records: Vec<ExchangeRecord>,
    out: PathBuf,
}

/// Collects what `pipe` brings until it closes.
fn collect(
    mut pipe: impl Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let into = text.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    });
    (text, thread)
}

/// Waits until `text` says where icaptap listens.
fn listening(text: &Mutex<String>, child: &mut Child) -> SocketAddr {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let said = text.lock().unwrap().clone();
        if let Some(at) = said.find("icaptap: listening on ") {
            let rest = &said[at + "icaptap: listening on ".len()..];
            if let Some(end) = rest.find(',') {
                return rest[..end].parse().unwrap();
            }
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("icaptap did not start: {said}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The process `script` runs the command in (`exec`: icaptap itself).
fn child_of(pid: u32) -> u32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(child) = children.split_whitespace().next() {
            return child.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "script started no command");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `icaptap proxy` in front of `sensor` with `options`, output to
/// `console`, sends the traffic with c-icap-client, stops it with SIGTERM.
fn run_proxy(sensor: &Sensor, console: Console, options: &[&str]) -> Run {
    let out = sensor.tmp.path().join(format!("run-{}", unique()));
    let icaptap = icaptap_binary();
    let mut args: Vec<String> = strings(&["proxy", "--listen", "127.0.0.1:0", "--upstream"]);
    args.push(sensor.addr.to_string());
    args.push("--out".into());
    args.push(out.display().to_string());
    args.extend(strings(options));
    let mut cmd = match console {
        Console::Terminal { .. } => {
            // `exec`: the process under the terminal is icaptap itself, so
            // SIGTERM reaches it and not a shell.
            let line = std::iter::once(icaptap.display().to_string())
                .chain(args)
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" ");
            let mut c = Command::new("script");
            c.args(["-qfec", &format!("exec {line}"), "/dev/null"]);
            c
        }
        Console::Pipes => {
            let mut c = Command::new(&icaptap);
            c.args(&args);
            c
        }
    };
    cmd.env("RUST_LOG", "warn,icaptap=info")
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if console == (Console::Terminal { no_color: true }) {
        cmd.env("NO_COLOR", "1");
    }
    let mut child = cmd.spawn().expect("run icaptap");
    let (stdout, stdout_done) = collect(child.stdout.take().unwrap());
    let (stderr, stderr_done) = collect(child.stderr.take().unwrap());
    let said = match console {
        Console::Terminal { .. } => &stdout,
        Console::Pipes => &stderr,
    };
    let listen = listening(said, &mut child);
    for (args, _, _) in sensor.traffic() {
        let o = Command::new("c-icap-client")
            .args(["-i", "127.0.0.1", "-p", &listen.port().to_string()])
            .args(&args)
            .output()
            .expect("run c-icap-client");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let icaptap_pid = match console {
        Console::Terminal { .. } => child_of(child.id()),
        Console::Pipes => child.id(),
    };
    Command::new("kill")
        .args(["-TERM", &icaptap_pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("icaptap did not stop: {}", stdout.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stdout_done.join().unwrap();
    stderr_done.join().unwrap();
    let stdout = stdout.lock().unwrap().replace("\r\n", "\n");
    let stderr = stderr.lock().unwrap().clone();
    assert!(status.success(), "{status}: {stdout}{stderr}");
    Run {
        records: read_jsonl(&out.join("exchanges.jsonl")),
        stdout,
        stderr,
        out,
    }
}

/// A name no other run of this process has.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `text` without its ANSI escape sequences (CSI ... final byte).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// One exchange line taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    method: String,
    verdict: String,
    status: String,
    url: String,
    /// The line as printed, escapes and all.
    raw: String,
}

/// The exchange lines of `text`: those that begin with `HH:MM:SS.mmm `.
fn exchange_lines(text: &str) -> Vec<Line> {
    text.lines()
        .filter(|raw| {
            let b = raw.as_bytes();
            b.len() > 13
                && b[2] == b':'
                && b[5] == b':'
                && b[8] == b'.'
                && b[12] == b' '
                && b[..12]
                    .iter()
                    .enumerate()
                    .all(|(i, c)| [2, 5, 8].contains(&i) || c.is_ascii_digit())
        })
        .map(|raw| {
            let shown = plain(raw);
            let words: Vec<&str> = shown.split_whitespace().collect();
            assert!(words.len() >= 7, "{raw:?}");
            Line {
                method: words[2].to_string(),
                verdict: words[3].to_string(),
                status: words[4].to_string(),
                url: words[6].to_string(),
                raw: raw.to_string(),
            }
        })
        .collect()
}

/// The line each record must have, in the records' order.
fn expected(records: &[ExchangeRecord]) -> Vec<(String, String, String, String)> {
    records
        .iter()
        .map(|r| {
            (
                r.method.clone().unwrap_or_else(|| "-".into()),
                r.verdict.clone(),
                r.icap_status.map_or("-".into(), |s| s.to_string()),
                r.http_url
                    .clone()
                    .or(r.uri.clone())
                    .unwrap_or_else(|| "-".into()),
            )
        })
        .collect()
}

fn shown(lines: &[Line]) -> Vec<(String, String, String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l.method.clone(),
                l.verdict.clone(),
                l.status.clone(),
                l.url.clone(),
            )
        })
        .collect()
}

/// The checks every run that prints lines passes: one line per record,
/// in order, with its method, verdict, status and URL; the traffic's
/// verdicts and URLs; every line before the summary table.
fn one_line_per_exchange(sensor: &Sensor, run: &Run) -> Vec<Line> {
    let lines = exchange_lines(&run.stdout);
    assert_eq!(
        shown(&lines),
        expected(&run.records),
        "{}\n{:#?}",
        run.stdout,
        run.records
    );
    for (_, verdict, url) in sensor.traffic() {
        let line = lines
            .iter()
            .find(|l| l.url == url)
            .unwrap_or_else(|| panic!("no line for {url}:\n{}", run.stdout));
        assert_eq!(line.verdict, verdict, "{}", line.raw);
        let method = if url.contains("blocked") {
            "REQMOD"
        } else {
            "RESPMOD"
        };
        assert_eq!(line.method, method, "{}", line.raw);
    }
    let infected = lines.iter().find(|l| l.verdict == "infected").unwrap();
    assert!(
        plain(&infected.raw).ends_with(&format!("threat=\"{VIRUS_MARKER_NAME}\"")),
        "{}",
        infected.raw
    );
    let table = run.stdout.find("icaptap proxy: ").expect("a summary table");
    let last = run.stdout.rfind(&lines.last().unwrap().raw).unwrap();
    assert!(
        last < table,
        "a line after the summary table:\n{}",
        run.stdout
    );
    lines
}

#[test]
fn on_a_terminal_each_exchange_gets_a_line_with_a_coloured_verdict() {
    let sensor = Sensor::start();
    let run = run_proxy(&sensor, Console::Terminal { no_color: false }, &[]);
    let lines = one_line_per_exchange(&sensor, &run);
    let colour = |verdict: &str| {
        lines
            .iter()
            .find(|l| l.verdict == verdict)
            .unwrap()
            .raw
            .clone()
    };
    assert!(
        colour("infected").contains(" \x1b[1;31minfected\x1b[0m "),
        "{:?}",
        colour("infected")
    );
    assert!(
        colour("blocked").contains(" \x1b[1;31mblocked\x1b[0m "),
        "{:?}",
        colour("blocked")
    );
    assert!(
        colour("clean").contains(" \x1b[32mclean\x1b[0m "),
        "{:?}",
        colour("clean")
    );
    // Only the verdict is coloured.
    for line in &lines {
        assert_eq!(
            line.raw.matches('\x1b').count(),
            2 * usize::from(line.verdict != "options"),
            "{:?}",
            line.raw
        );
    }
}

#[test]
fn no_color_keeps_a_terminal_plain() {
    let sensor = Sensor::start();
    let run = run_proxy(&sensor, Console::Terminal { no_color: true }, &[]);
    let lines = one_line_per_exchange(&sensor, &run);
    for line in &lines {
        assert!(!line.raw.contains('\x1b'), "{:?}", line.raw);
    }
}

#[test]
fn piped_the_lines_are_plain_on_stdout_and_the_logs_stay_on_stderr() {
    let sensor = Sensor::start();
    let run = run_proxy(&sensor, Console::Pipes, &[]);
    one_line_per_exchange(&sensor, &run);
    assert!(!run.stdout.contains('\x1b'), "{:?}", run.stdout);
    // The log lines on a piped stderr are plain too.
    assert!(run.stderr.contains(" INFO "), "{}", run.stderr);
    assert!(!run.stderr.contains('\x1b'), "{:?}", run.stderr);
    assert!(exchange_lines(&run.stderr).is_empty(), "{}", run.stderr);
    assert!(
        run.stderr.contains("icaptap: stopped (SIGTERM received)"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("icaptap: listening"), "{}", run.stdout);

    // The same lines from an analysis of the run's own capture.
    let out = run.out.with_extension("analyzed");
    let o = Command::new(icaptap_binary())
        .arg("analyze")
        .arg(run.out.join("capture.pcapng"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let analyzed = String::from_utf8(o.stdout).unwrap();
    let records: Vec<ExchangeRecord> = read_jsonl(&out.join("exchanges.jsonl"));
    assert_eq!(
        shown(&exchange_lines(&analyzed)),
        expected(&records),
        "{analyzed}"
    );
    assert_eq!(
        shown(&exchange_lines(&analyzed)),
        shown(&exchange_lines(&run.stdout)),
        "{analyzed}"
    );

    // analyze --filter writes only what it selects, and shows just that.
    let out = run.out.with_extension("filtered");
    let o = Command::new(icaptap_binary())
        .arg("analyze")
        .arg(run.out.join("capture.pcapng"))
        .arg("--out")
        .arg(&out)
        .args(["--filter", "verdict=infected"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let analyzed = String::from_utf8(o.stdout).unwrap();
    let records: Vec<ExchangeRecord> = read_jsonl(&out.join("exchanges.jsonl"));
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(
        shown(&exchange_lines(&analyzed)),
        expected(&records),
        "{analyzed}"
    );
}

#[test]
fn quiet_prints_no_line_and_verbose_the_heads() {
    let sensor = Sensor::start();
    let quiet = run_proxy(&sensor, Console::Pipes, &["-q"]);
    assert!(quiet.records.len() >= 3, "{:#?}", quiet.records);
    assert!(exchange_lines(&quiet.stdout).is_empty(), "{}", quiet.stdout);
    assert!(quiet.stdout.contains("icaptap proxy: "), "{}", quiet.stdout);

    let verbose = run_proxy(&sensor, Console::Pipes, &["-v"]);
    one_line_per_exchange(&sensor, &verbose);
    let infected = verbose
        .stdout
        .split_once("http://origin.test/infected.txt threat=")
        .unwrap()
        .1;
    let heads: Vec<&str> = infected
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    let icap_start = |l: &&str| l.starts_with("    > RESPMOD icap://127.0.0.1");
    assert!(heads.first().is_some_and(icap_start), "{heads:#?}");
    for want in [
        "    > GET http://origin.test/infected.txt",
        "    < ICAP/1.0 200 OK",
    ] {
        assert!(heads.contains(&want), "{want}: {heads:#?}");
    }
    assert!(
        heads
            .iter()
            .any(|l| l.starts_with("    < X-Infection-Found: ") && l.contains(VIRUS_MARKER_NAME)),
        "{heads:#?}"
    );
    // Each line's heads follow it: as many ICAP request heads as lines.
    let starts = verbose
        .stdout
        .lines()
        .filter(|l| l.starts_with("    > ") && l.ends_with(" ICAP/1.0"))
        .count();
    assert_eq!(starts, verbose.records.len(), "{}", verbose.stdout);
}

#[test]
fn the_filter_picks_the_lines_and_every_exchange_is_recorded() {
    let sensor = Sensor::start();
    let run = run_proxy(
        &sensor,
        Console::Pipes,
        &["--filter", "verdict=infected or method=REQMOD"],
    );
    let lines = exchange_lines(&run.stdout);
    let urls: Vec<&str> = lines.iter().map(|l| l.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "http://origin.test/infected.txt",
            "http://www.blocked.example/x"
        ],
        "{}",
        run.stdout
    );
    assert!(run.records.len() > lines.len(), "{:#?}", run.records);
}

#[test]
fn a_bad_filter_stops_the_start_with_where_it_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(icaptap_binary())
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
        ])
        .arg("--out")
        .arg(tmp.path().join("never"))
        .args(["--filter", "verdict=infectd"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("infectd"), "{said}");
    assert!(!tmp.path().join("never").exists());
}

#[test]
fn the_demo_shows_a_line_per_exchange_instead_of_its_table() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = |out: &str, options: &[&str]| {
        let o = Command::new(icaptap_binary())
            .arg("demo")
            .arg("--out")
            .arg(tmp.path().join(out))
            .args(options)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let said = demo("lines", &[]);
    let records: Vec<ExchangeRecord> = read_jsonl(&tmp.path().join("lines/exchanges.jsonl"));
    assert_eq!(shown(&exchange_lines(&said)), expected(&records), "{said}");
    for verdict in [
        "options",
        "clean",
        "infected",
        "blocked",
        "error",
        "missing",
        "malformed",
    ] {
        assert!(
            exchange_lines(&said).iter().any(|l| l.verdict == verdict),
            "{verdict}: {said}"
        );
    }
    assert!(!said.contains("  exch  method"), "{said}");
    let quiet = demo("quiet", &["-q"]);
    assert!(exchange_lines(&quiet).is_empty(), "{quiet}");
    assert!(quiet.contains("  exch  method"), "{quiet}");
}
