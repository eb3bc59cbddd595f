//! What a person sees in the terminal: a status line while a run goes on,
//! and a summary table at the end (verdicts, anomalies, latency, where the
//! files are).

use std::fmt::Write;
use std::path::Path;

use super::summary::Summary;

/// The one-line status shown every few seconds during a live run.
pub fn status_line(s: &Summary, open: u64, exchanges_per_s: f64) -> String {
    let verdicts: Vec<String> = s
        .by_verdict
        .iter()
        .map(|(v, n)| format!("{v} {n}"))
        .collect();
    let anomalies: u64 = s.by_anomaly.values().sum();
    format!(
        "conns {open} open / {} total | exchanges {} ({exchanges_per_s:.1}/s) | {} | anomalies {anomalies}",
        s.connections,
        s.exchanges,
        if verdicts.is_empty() { "no verdicts yet".to_string() } else { verdicts.join(", ") },
    )
}

/// The end-of-run summary table.
pub fn summary_table(s: &Summary, dir: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "icaptap {}: {} exchanges on {} connections",
        s.mode, s.exchanges, s.connections
    );
    if let Some(evidence) = s.evidence.as_ref().filter(|e| !e.complete) {
        let _ = writeln!(
            out,
            "\n  EVIDENCE INCOMPLETE (forwarding was not affected):"
        );
        for gap in &evidence.gaps {
            let _ = writeln!(out, "    - {gap}");
        }
    }
    let _ = writeln!(out, "\n  verdict      count");
    for (verdict, n) in &s.by_verdict {
        let _ = writeln!(out, "  {verdict:<12} {n:>5}");
    }
    if s.by_anomaly.is_empty() {
        let _ = writeln!(out, "\n  no anomalies");
    } else {
        let _ = writeln!(out, "\n  anomaly                          count");
        let mut rows: Vec<(&String, &u64)> = s.by_anomaly.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (code, n) in rows {
            let _ = writeln!(out, "  {code:<32} {n:>5}");
        }
    }
    if s.latency_us.count > 0 {
        let l = &s.latency_us;
        let _ = writeln!(
            out,
            "\n  latency (request sent to verdict): p50 {} us, p90 {} us, p99 {} us, max {} us",
            l.p50, l.p90, l.p99, l.max
        );
    }
    let d = &s.drops;
    if d.observer_taps + d.recorder_taps + d.record_write_errors > 0 {
        let _ = writeln!(
            out,
            "\n  side paths fell behind: observer dropped {} taps ({} bytes), recorder {} taps ({} bytes); \
             forwarding was not affected",
            d.observer_taps, d.observer_bytes, d.recorder_taps, d.recorder_bytes
        );
    }
    let _ = writeln!(out, "\n  output: {}", dir.display());
    for log in super::logset::Log::BOTH {
        let files = super::logset::list(dir, log);
        if let Some(first) = files.first() {
            let shown = match files.len() {
                1 => first.display().to_string(),
                _ => format!(
                    "{}: {}",
                    dir.join(format!("{}-*.jsonl", log.stem())).display(),
                    super::logset::describe(&files)
                ),
            };
            let _ = writeln!(out, "    {shown}");
        }
    }
    for name in ["summary.json", "capture.pcapng", "report.html"] {
        if dir.join(name).exists() {
            let _ = writeln!(out, "    {}", dir.join(name).display());
        }
    }
    out
}
