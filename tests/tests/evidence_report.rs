//! The report answers "which request got which verdict", at 8 exchanges
//! and at 100,000: run directories are written record by record (what a
//! run leaves, docs/log-schema.md), `icaptap report` renders them, and
//! headless Chromium loads the page. The DOM must hold the exchange table
//! with problems first and their URLs, every in-page link must resolve,
//! value-axis ticks must be whole numbers drawn at their values, percentile
//! labels must sit above the bars, the timeline of a 50 ms run must have a
//! column per exchange rather than one block, a verdict nobody got has no
//! bar, and no catalogue backtick is left. Screenshots of both pages are
//! kept in target/test-artifacts. Generation at 100,000 exchanges is timed
//! and its size bounded.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use icaptap::evidence;
use icaptap::output::records::ExchangeRecord;
use icaptap::output::summary::SummaryBuilder;
use icaptap::output::writer::RecordSink;
use serde_json::json;

const T0: u64 = 1_790_000_000_000_000;

/// One exchange record as the observer writes it.
fn record(i: u64, ts_us: u64, verdict: &str, frames: bool) -> ExchangeRecord {
    let anomalies = match verdict {
        "missing" => json!([{"code": "server-closed-before-response", "side": "server",
            "severity": "error", "detail": "the sensor closed the connection", "offset": 812}]),
        "unobserved" => json!([{"code": "pairing-uncertain", "side": "client",
            "severity": "warn", "detail": "bytes lost before the request"}]),
        _ => json!([]),
    };
    let status = match verdict {
        "missing" | "unobserved" => json!(null),
        "infected" => json!(200),
        _ => json!(204),
    };
    let mut v = json!({
        "schema": icaptap::output::SCHEMA_VERSION,
        "ts": icaptap::output::rfc3339(ts_us), "ts_us": ts_us,
        "conn": i / 10 + 1, "seq": i % 10,
        "client": format!("10.1.{}.{}:{}", (i / 250) % 250, i % 250, 40_000 + i % 1000),
        "server": "127.0.0.1:1344",
        "method": "RESPMOD", "uri": "icap://127.0.0.1:1344/av/respmod", "service": "/av/respmod",
        "icap_status": status, "verdict": verdict,
        "threat": if verdict == "infected" { json!(format!("Eicar-Test-Signature-{i}")) } else { json!(null) },
        "anomalies": anomalies,
        "latency_us": if status.is_null() { json!(null) } else { json!(300 + (i * 7_919) % 40_000) },
        "http_method": "GET", "http_url": format!("http://downloads.example/file-{i}.bin"),
        "request_body_bytes": 0, "response_body_bytes": 4096,
        "identity": {}, "products": {"user_agent": "TestProxy/7.1"}, "timings": {},
        "decode_complete": verdict != "unobserved",
    });
    if frames {
        v["frames"] = json!({"request": 4 * i + 4, "response": 4 * i + 6});
    }
    serde_json::from_value(v).unwrap()
}

/// Writes a run directory holding `verdicts.len()` exchanges spread
/// evenly over `span_us`, with its summary.
fn write_run(dir: &Path, verdicts: &[&str], span_us: u64, frames: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(dir.join("exchanges.jsonl")).unwrap());
    let mut summary = SummaryBuilder::new();
    let n = verdicts.len() as u64;
    for (i, v) in verdicts.iter().enumerate() {
        let i = i as u64;
        let x = record(i, T0 + span_us * i / n.max(1), v, frames);
        serde_json::to_writer(&mut out, &x).unwrap();
        out.write_all(b"\n").unwrap();
        summary.exchange(&x);
    }
    out.flush().unwrap();
    let mut s = summary.snapshot();
    s.mode = if frames { "analyze" } else { "proxy" }.to_string();
    s.ended = Some(icaptap::output::rfc3339(T0 + span_us));
    s.command = vec!["icaptap".into(), "proxy".into()];
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec_pretty(&s).unwrap(),
    )
    .unwrap();
}

fn artifact_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// The page as Chromium built it, and a screenshot of it in `shot`.
fn chromium(html: &Path, shot: &Path) -> String {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is installed (Debian package chromium; .ci/run installs it)"
    );
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let dom = Command::new("/usr/bin/chromium")
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let _ = std::fs::remove_file(shot);
    let run = Command::new("/usr/bin/chromium")
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,5200")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let png = std::fs::read(shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    assert!(
        png.len() > 30_000,
        "the screenshot has content ({} bytes)",
        png.len()
    );
    String::from_utf8(dom.stdout).unwrap()
}

/// Every value of attribute `name` in `text`, in order.
fn attrs<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let needle = format!(" {name}=\"");
    text.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &text[at + needle.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

/// The elements (start tag to `>`) of `text` that have `class="CLASS..."`.
fn tags_with_class<'a>(text: &'a str, class: &str) -> Vec<&'a str> {
    let needle = format!("class=\"{class}");
    text.match_indices(&needle)
        .map(|(at, _)| {
            let start = text[..at].rfind('<').unwrap();
            let end = at + text[at..].find('>').unwrap();
            &text[start..=end]
        })
        .collect()
}

fn attr(tag: &str, name: &str) -> f64 {
    attrs(tag, name)[0].parse().unwrap()
}

/// The checks both sizes share.
fn check_dom(dom: &str) {
    // Every in-page link lands on an element of the page.
    let ids: BTreeSet<&str> = attrs(dom, "id").into_iter().collect();
    let hrefs: Vec<&str> = attrs(dom, "href");
    assert!(!hrefs.is_empty());
    for h in &hrefs {
        let target = h
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external link {h}"));
        assert!(ids.contains(target), "link #{target} resolves to nothing");
    }
    // Value axes: whole numbers, each drawn at its value.
    for chart in dom.split("<svg").skip(1) {
        let chart = &chart[..chart.find("</svg>").unwrap()];
        let ticks: Vec<(f64, f64)> = tags_with_class(chart, "tick ytick")
            .iter()
            .map(|t| (attr(t, "data-value"), attr(t, "data-y")))
            .collect();
        assert!(ticks.len() >= 2, "a value axis has ticks: {chart:.300}");
        let (v0, y0) = ticks[0];
        assert_eq!(v0, 0.0);
        let (vn, yn) = ticks[ticks.len() - 1];
        let scale = (y0 - yn) / vn;
        for (v, y) in &ticks {
            assert_eq!(v.fract(), 0.0, "count tick {v} is not a whole number");
            assert!(
                ((y0 - y) - v * scale).abs() < 0.2,
                "tick {v} drawn at {y}, not at its value"
            );
        }
        // The label shows the value.
        for t in chart.split("class=\"tick ytick\"").skip(1) {
            let value = attrs(t, "data-value")[0];
            let text = &t[t.find('>').unwrap() + 1..t.find('<').unwrap()];
            assert_eq!(text, value);
        }
        // Percentile labels sit above every bar.
        let label_bottom = tags_with_class(chart, "marker-label")
            .iter()
            .map(|t| attr(t, "y"))
            .fold(0.0f64, f64::max);
        for bar in tags_with_class(chart, "hbar") {
            assert!(
                attr(bar, "y") > label_bottom,
                "a percentile label overlaps a bar"
            );
        }
    }
    // Catalogue Markdown is rendered, and each code gives its own advice.
    assert!(!dom.contains('`'), "a literal backtick in the page");
    assert!(!dom.contains("as above"));
    assert!(dom.contains("<code>missing</code>"));
    assert!(!dom.to_ascii_lowercase().contains("<script"));
}

/// Rows of the exchange table, in order: (id, class).
fn table_rows(dom: &str) -> Vec<(String, String)> {
    let table = &dom[dom
        .find("<table class=\"exchanges\">")
        .expect("the exchange table")..];
    let table = &table[..table.find("</table>").unwrap()];
    table
        .split("<tr id=\"")
        .skip(1)
        .map(|r| {
            let id = r[..r.find('"').unwrap()].to_string();
            let class = attrs(&r[..r.find('>').unwrap()], "class")[0].to_string();
            (id, class)
        })
        .collect()
}

#[test]
fn report_of_eight_exchanges_names_each_request_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run-8");
    let verdicts = [
        "clean",
        "clean",
        "missing",
        "clean",
        "infected",
        "unobserved",
        "clean",
        "clean",
    ];
    // The whole run lasts 50 ms.
    write_run(&dir, &verdicts, 50_000, true);
    let paths = evidence::write_report(&dir).unwrap();
    let dom = chromium(&paths.html, &artifact_dir().join("report-8.png"));
    std::fs::copy(&paths.html, artifact_dir().join("report-8.html")).unwrap();
    check_dom(&dom);
    let rows = table_rows(&dom);
    assert_eq!(rows.len(), 8, "{rows:?}");
    assert_eq!(rows[0], ("x-1-2".to_string(), "problem".to_string()));
    assert_eq!(rows[1].1, "notable");
    assert_eq!(rows[2].1, "notable");
    assert!(rows[3..].iter().all(|(_, c)| c == "clean"));
    for i in 0..8 {
        assert!(
            dom.contains(&format!("http://downloads.example/file-{i}.bin")),
            "URL {i}"
        );
    }
    assert!(dom.contains("Eicar-Test-Signature-4"));
    // The frames of the capture, and the missing exchange linked from its
    // anomaly and from the verdict table.
    assert!(dom.contains("12 / 14"), "frames of exchange 2");
    assert!(dom.contains("href=\"#x-1-2\">1/2</a>"));
    assert!(
        dom.contains("href=\"#x-1-2\">1</a>"),
        "verdict count links to the row"
    );
    // 50 ms in millisecond columns, one per exchange: not one block.
    let timeline = &dom[dom.find("class=\"chart timeline\"").unwrap()..];
    let timeline = &timeline[..timeline.find("</svg>").unwrap()];
    assert!(timeline.contains("one column = 1 ms"), "{timeline:.400}");
    assert_eq!(tags_with_class(timeline, "col").len(), 8);
    assert!(timeline.contains(">+20 ms<"));
    // Verdicts nobody got (malformed, error) have no bar.
    let verdict_table = &dom[dom.find("<table class=\"verdicts\">").unwrap()..];
    let verdict_table = &verdict_table[..verdict_table.find("</table>").unwrap()];
    assert_eq!(
        verdict_table.matches("class=\"bar\"").count(),
        4,
        "missing, infected, clean, unobserved"
    );
    assert!(!dom.contains("not listed here"), "all 8 are listed");
}

#[test]
fn report_of_100000_exchanges_stays_bounded_fast_and_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run-100000");
    let n = 100_000usize;
    let verdicts: Vec<&str> = (0..n)
        .map(|i| match i {
            i if i % 211 == 5 => "missing",
            i if i % 89 == 3 => "infected",
            i if i % 1000 == 999 => "unobserved",
            _ => "clean",
        })
        .collect();
    let missing = verdicts.iter().filter(|v| **v == "missing").count();
    // Two hours of traffic.
    write_run(&dir, &verdicts, 7_200_000_000, false);
    let started = Instant::now();
    let paths = evidence::write_report(&dir).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let html_bytes = std::fs::metadata(&paths.html).unwrap().len();
    let md_bytes = std::fs::metadata(&paths.markdown).unwrap().len();
    let jsonl = std::fs::metadata(dir.join("exchanges.jsonl"))
        .unwrap()
        .len();
    eprintln!(
        "report of {n} exchanges ({jsonl} bytes of exchanges.jsonl): {seconds:.2} s, report.html {html_bytes} bytes, report.md {md_bytes} bytes"
    );
    assert!(seconds < 30.0, "report took {seconds:.1} s");
    assert!(html_bytes < 2_000_000, "report.html is {html_bytes} bytes");
    assert!(md_bytes < 1_000_000, "report.md is {md_bytes} bytes");
    let dom = chromium(&paths.html, &artifact_dir().join("report-100000.png"));
    std::fs::copy(&paths.html, artifact_dir().join("report-100000.html")).unwrap();
    check_dom(&dom);
    let rows = table_rows(&dom);
    let problems = rows.iter().take_while(|(_, c)| c == "problem").count();
    assert_eq!(problems, missing, "every missing exchange is listed, first");
    assert!(rows.len() <= 1_300, "{} rows", rows.len());
    assert!(rows.iter().skip(problems).all(|(_, c)| c != "problem"));
    for (i, v) in verdicts.iter().enumerate() {
        if *v == "missing" {
            assert!(
                dom.contains(&format!("http://downloads.example/file-{i}.bin<")),
                "URL of {i}"
            );
        }
    }
    assert!(dom.contains("not listed here"));
    assert!(dom.contains("jq -c"), "says how to list the rest");
    let timeline = &dom[dom.find("class=\"chart timeline\"").unwrap()..];
    let timeline = &timeline[..timeline.find("</svg>").unwrap()];
    let columns = tags_with_class(timeline, "col").len();
    assert!((50..=240 * 4).contains(&columns), "{columns} rects");
    assert!(timeline.contains("one column = 1 min"), "{timeline:.300}");
}
