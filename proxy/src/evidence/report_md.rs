//! `report.md`: the facts of report.html in Markdown, to paste into a
//! ticket. Charts become tables (percentiles, the busiest seconds); every
//! string from the wire goes through [`escape::markdown`] or
//! [`escape::markdown_code`].

use std::fmt::Write;

use super::catalogue::Catalogue;
use super::escape::{markdown as md, markdown_code as code};
use super::facts::{evidence_warning, unobserved_headline, Facts, SEVERITY_ORDER, VERDICT_ORDER};
use super::filtered::filter_note;
use super::readable;

/// Seconds listed in the "busiest seconds" table.
const BUSIEST_SECONDS: usize = 5;

/// Renders the Markdown report.
pub fn render(facts: &Facts, catalogue: &Catalogue, generated: &str) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let s = &facts.summary;
    let _ = writeln!(
        out,
        "# icaptap report: {}\n",
        md(&facts.files.dir.display().to_string())
    );
    if let Some(warning) = evidence_warning(s) {
        let _ = writeln!(out, "**{}**\n", md(&warning));
    }
    if let Some(note) = filter_note(s) {
        let _ = writeln!(out, "**{}**\n", md(&note));
    }
    let _ = writeln!(out, "{}\n", md(&headline(facts)));

    let _ = writeln!(out, "## What was observed\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| mode | {} |",
        md(if s.mode.is_empty() {
            "unknown (no summary.json)"
        } else {
            &s.mode
        })
    );
    let _ = writeln!(out, "| icaptap version | {} |", md(&s.icaptap_version));
    let _ = writeln!(
        out,
        "| started | {} |",
        md(s.started.as_deref().unwrap_or("?"))
    );
    let _ = writeln!(out, "| ended | {} |", md(s.ended.as_deref().unwrap_or("?")));
    let _ = writeln!(
        out,
        "| duration | {} |",
        readable::duration(facts.duration_s())
    );
    let setting = facts.setting();
    if let Some(l) = &setting.listen {
        let _ = writeln!(out, "| listening on | {} |", code(l));
    }
    if let Some(u) = &setting.upstream {
        let _ = writeln!(out, "| forwarding to | {} |", code(u));
    }
    for i in &setting.inputs {
        let _ = writeln!(out, "| capture analysed | {} |", code(i));
    }
    if !s.command.is_empty() {
        let _ = writeln!(out, "| command | {} |", code(&s.command.join(" ")));
    }
    for c in &facts.files.captures {
        let size = std::fs::metadata(c).map(|m| m.len()).unwrap_or(0);
        let name = c
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| capture file | {} ({}) |",
            code(&name),
            readable::bytes(size)
        );
    }
    let _ = writeln!(
        out,
        "| traffic | {} exchanges/s mean, {} in the busiest second, {}/s |",
        readable::rate(facts.exchanges_per_s()),
        facts.peak_per_s(),
        readable::bytes(facts.bytes_per_s() as u64)
    );
    let _ = writeln!(
        out,
        "| connections | {} ({} could not reach the sensor) |\n",
        s.connections, s.connect_failures
    );

    let total = facts.exchanges();
    let _ = writeln!(
        out,
        "## Verdicts\n\n| verdict | exchanges | share |\n|---|---:|---:|"
    );
    for v in VERDICT_ORDER {
        let n = facts.verdicts.get(v).copied().unwrap_or(0);
        if n > 0 || matches!(v, "missing" | "malformed" | "error" | "clean") {
            let _ = writeln!(out, "| {v} | {n} | {} |", readable::percent(n, total));
        }
    }
    for (v, n) in facts
        .verdicts
        .iter()
        .filter(|(v, _)| !VERDICT_ORDER.contains(&v.as_str()))
    {
        let _ = writeln!(
            out,
            "| {} | {n} | {} |",
            md(v),
            readable::percent(*n, total)
        );
    }
    let _ = writeln!(out, "| **total** | {total} | |\n");

    let _ = writeln!(out, "## Problems: anomalies by severity\n");
    if facts.anomalies.is_empty() {
        let _ = writeln!(out, "No anomaly was found.\n");
    }
    for sev in SEVERITY_ORDER {
        let list = facts.anomalies_of(sev);
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "### {sev} ({} occurrences)\n",
            facts.severity_count(sev)
        );
        for a in list {
            let _ = writeln!(
                out,
                "#### {} × {} (side {}; first {}, last {})\n",
                code(&a.code),
                a.count,
                md(&a.sides.join(", ")),
                md(a.first.as_deref().unwrap_or("?")),
                md(a.last.as_deref().unwrap_or("?"))
            );
            if let Some(e) = catalogue.get(&a.code) {
                // The catalogue is icaptap's own Markdown, not wire data:
                // its `code` spans stay code spans.
                let _ = writeln!(
                    out,
                    "- Meaning: {}\n- What to do: {}\n",
                    e.meaning, e.what_to_do
                );
            }
            let _ = writeln!(
                out,
                "| exchange | when | offset | frames | detail |\n|---|---|---:|---|---|"
            );
            for e in &a.examples {
                let id = e.seq.map_or(format!("conn {}", e.conn), |seq| {
                    format!("{}/{seq}", e.conn)
                });
                let frames = e.frames.as_ref().map_or(String::new(), |f| {
                    format!(
                        "{} / {}",
                        f.request.map_or("-".to_string(), |n| n.to_string()),
                        f.response.map_or("-".to_string(), |n| n.to_string())
                    )
                });
                let _ = writeln!(
                    out,
                    "| {id} | {} | {} | {frames} | {} |",
                    md(&e.ts),
                    e.offset.map_or(String::new(), |o| o.to_string()),
                    md(&e.detail)
                );
            }
            out.push('\n');
        }
    }

    let _ = writeln!(out, "## Latency per service and method\n");
    if facts.latency.is_empty() {
        let _ = writeln!(out, "No latency was measured.\n");
    } else {
        let _ = writeln!(out, "| method and service | count | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|---:|");
        for l in &facts.latency {
            let h = &l.histogram;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                code(&l.key),
                h.len(),
                readable::micros(h.value_at_quantile(0.5)),
                readable::micros(h.value_at_quantile(0.9)),
                readable::micros(h.value_at_quantile(0.99)),
                readable::micros(h.value_at_quantile(0.999)),
                readable::micros(h.max())
            );
        }
        out.push('\n');
    }

    let _ = writeln!(out, "## Busiest seconds\n");
    let mut seconds: Vec<(i64, u64)> = facts
        .per_second
        .iter()
        .map(|(s, m)| (*s, m.values().sum()))
        .collect();
    seconds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let _ = writeln!(out, "| second | exchanges | by verdict |\n|---|---:|---|");
    for (second, n) in seconds.iter().take(BUSIEST_SECONDS) {
        let by: Vec<String> = facts.per_second[second]
            .iter()
            .map(|(v, c)| format!("{} {c}", md(v)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {n} | {} |",
            crate::output::rfc3339((*second as u64) * 1_000_000),
            by.join(", ")
        );
    }
    out.push('\n');

    let _ = writeln!(out, "## OPTIONS and ISTag history\n\n| sensor | service | OPTIONS | other | last OPTIONS | ISTags (first seen) |\n|---|---|---:|---:|---|---|");
    for h in facts.services.values() {
        let tags: Vec<String> = h
            .changes
            .iter()
            .map(|c| format!("{} {}", code(&c.istag), md(&c.ts)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            md(&h.server),
            code(&h.service),
            h.options_exchanges,
            h.other_exchanges,
            md(h.last_options.as_deref().unwrap_or("never")),
            tags.join("; ")
        );
    }
    out.push('\n');

    let _ = writeln!(out, "## Connections per client\n\n| client | connections | sensor unreachable | resets | exchanges | went wrong | sent | received |\n|---|---:|---:|---:|---:|---:|---:|---:|");
    for c in facts.clients.values() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            md(&c.client),
            c.connections,
            c.connect_failures,
            c.resets,
            c.exchanges,
            c.problem_exchanges,
            readable::bytes(c.bytes_up),
            readable::bytes(c.bytes_down)
        );
    }
    out.push('\n');

    let p = &facts.summary.products;
    let list = |m: &std::collections::BTreeMap<String, u64>| -> String {
        if m.is_empty() {
            "not seen".to_string()
        } else {
            m.iter()
                .map(|(v, n)| format!("{} × {n}", code(v)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(out, "## Clients and sensors seen\n");
    let _ = writeln!(
        out,
        "- ICAP clients: {}",
        facts
            .clients
            .keys()
            .map(|c| md(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "- Client User-Agent: {}", list(&p.user_agents));
    let _ = writeln!(
        out,
        "- Sensors: {}",
        facts
            .sensors
            .keys()
            .map(|c| md(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "- Sensor Server: {}", list(&p.servers));
    let _ = writeln!(out, "- Sensor Service: {}", list(&p.services));
    if let Some(p) = &facts.peer {
        super::peer_section::markdown(&mut out, p);
    }
    exchanges(&mut out, facts);
    let _ = writeln!(
        out,
        "\n---\nWritten by icaptap {} on {} (times in UTC).",
        env!("CARGO_PKG_VERSION"),
        md(generated)
    );
    out
}

/// The one-sentence verdict on the run, shared with the HTML page's wording.
pub fn headline(facts: &Facts) -> String {
    let errors = facts.severity_count("error");
    let warns = facts.severity_count("warn");
    let wrong: u64 = ["missing", "malformed", "error"]
        .iter()
        .map(|v| facts.verdicts.get(*v).copied().unwrap_or(0))
        .sum();
    if facts.exchanges() == 0 && facts.summary.connections == 0 {
        "No ICAP traffic was seen.".to_string()
    } else if errors > 0 || wrong > 0 {
        format!(
            "{wrong} of {} exchanges went wrong; {errors} error-level anomalies.",
            facts.exchanges()
        )
    } else if let Some(text) = unobserved_headline(facts, warns) {
        text
    } else if warns > 0 {
        format!("Every exchange got a verdict; {warns} warnings are worth a look.")
    } else {
        "Every exchange got a verdict and no protocol problem was found.".to_string()
    }
}

/// The exchange table: which request got which verdict, problems first.
fn exchanges(out: &mut String, facts: &Facts) {
    let t = &facts.table;
    let _ = writeln!(out, "\n## Exchanges: which request got which verdict\n");
    if t.total() == 0 {
        let _ = writeln!(out, "No exchange was seen.");
        return;
    }
    let _ = writeln!(out, "{}\n", md(&t.scope()));
    let _ = writeln!(
        out,
        "| exchange | when | client | method | URL | verdict | threat | status | latency | frames | anomalies |\n|---|---|---|---|---|---|---|---:|---:|---|---|"
    );
    for (_, x) in t.rows() {
        let url = x.http_url.as_deref().or(x.uri.as_deref()).unwrap_or("-");
        let frames = x.frames.as_ref().map_or(String::new(), |f| {
            format!(
                "{} / {}",
                f.request.map_or("-".to_string(), |n| n.to_string()),
                f.response.map_or("-".to_string(), |n| n.to_string())
            )
        });
        let codes: Vec<String> = x.anomalies.iter().map(|a| code(&a.code)).collect();
        let _ = writeln!(
            out,
            "| {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {frames} | {} |",
            x.conn,
            x.seq,
            md(&x.ts),
            md(&x.client),
            md(x.method.as_deref().unwrap_or("-")),
            md(url),
            md(&x.verdict),
            md(x.threat.as_deref().unwrap_or("")),
            x.icap_status.map_or("-".to_string(), |s| s.to_string()),
            x.latency_us.map_or("-".to_string(), readable::micros),
            codes.join(" "),
        );
    }
    if t.listed() < t.total() {
        let _ = writeln!(
            out,
            "\nList the problem exchanges with\n\n```\n{}\n```\n\nand every exchange with its URL and verdict with\n\n```\n{}\n```",
            super::exchange_table::JQ_PROBLEMS,
            super::exchange_table::JQ_ALL
        );
    }
}
