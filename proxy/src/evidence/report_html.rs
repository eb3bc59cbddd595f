//! `report.html`: one self-contained page (inline CSS and SVG, no script, no
//! network, no external asset) that reads well on a laptop and prints.
//! Problems come first: a headline, the verdicts, then anomalies by
//! severity with what the catalogue says to do, then the charts and the
//! tables a support engineer looks up. Every string from the wire goes
//! through [`escape::html`].

use std::collections::BTreeSet;
use std::fmt::Write;

use super::catalogue::Catalogue;
use super::escape::{html as esc, html_prose as prose};
use super::exchange_table::{anchor, Tier, JQ_ALL, JQ_PROBLEMS};
use super::facts::{
    evidence_warning, is_problem_verdict, unobserved_headline, AnomalyExample, Facts,
    SEVERITY_ORDER, VERDICT_ORDER,
};
use super::filtered::filter_note;
use super::readable;
use super::svg;
use crate::output::records::ExchangeRecord;

const STYLE: &str = r#"
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#ffffff;--panel:#f6f8fa;--accent:#4c6ef5;
--error:#e03131;--warn:#f08c00;--info:#1c7ed6;--ok:#2f9e44}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Ubuntu,sans-serif}
main{max-width:1100px;margin:0 auto;padding:28px 32px 64px}
header.top{display:flex;justify-content:space-between;align-items:flex-end;gap:24px;border-bottom:3px solid var(--fg);padding-bottom:12px}
header.top h1{margin:0;font-size:28px;letter-spacing:-.02em}
header.top .brand{font-weight:800;color:var(--accent)}
header.top .where{color:var(--muted);font-size:13px;text-align:right}
h2{font-size:19px;margin:36px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:16px;margin:18px 0 6px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:13px}
.verdict-line{margin:18px 0 6px;padding:14px 18px;border-radius:10px;font-size:18px;font-weight:600}
.verdict-line.bad{background:#fff0f0;border-left:6px solid var(--error)}
.verdict-line.warn{background:#fff8e6;border-left:6px solid var(--warn)}
.verdict-line.good{background:#ebfbee;border-left:6px solid var(--ok)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin:14px 0}
.card{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:10px 14px}
.card .n{font-size:24px;font-weight:700;font-variant-numeric:tabular-nums}
.card .l{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
table{border-collapse:collapse;width:100%;margin:8px 0 4px;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);background:var(--panel)}
td.num,th.num{text-align:right}
.chip{display:inline-block;padding:1px 9px;border-radius:999px;color:#fff;font-size:12px;font-weight:600}
.bar{height:10px;border-radius:5px;min-width:2px}
.sev{display:inline-block;padding:1px 8px;border-radius:4px;font-size:12px;font-weight:700;text-transform:uppercase;color:#fff}
.sev.error{background:var(--error)}.sev.warn{background:var(--warn)}.sev.info{background:var(--info)}
.anomaly{border:1px solid var(--line);border-radius:10px;padding:12px 16px;margin:10px 0;break-inside:avoid}
.anomaly.error{border-left:6px solid var(--error)}.anomaly.warn{border-left:6px solid var(--warn)}.anomaly.info{border-left:6px solid var(--info)}
.anomaly h3{margin:0 0 4px;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
.anomaly .meta{color:var(--muted);font-size:13px}
.anomaly dl{margin:6px 0;display:grid;grid-template-columns:110px 1fr;gap:2px 12px}
.anomaly dt{color:var(--muted);font-size:13px}
.anomaly dd{margin:0}
.examples td{font-size:13px}
.muted{color:var(--muted)}
.chart{width:100%;max-width:760px;height:auto;display:block;margin:6px 0 14px}
.chart .axis{stroke:#868e96;stroke-width:1}.chart .grid{stroke:#e9ecef;stroke-width:1}
.chart .tick{font:11px system-ui,sans-serif;fill:#59636e}
.chart .marker{stroke:#e03131;stroke-width:1.5;stroke-dasharray:4 3}
.chart .marker-label{font:11px system-ui,sans-serif;fill:#e03131;font-weight:600}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:13px;color:var(--muted)}
.legend span::before{content:"";display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;background:var(--c)}
.two{display:grid;grid-template-columns:1fr 1fr;gap:24px}
footer{margin-top:48px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:10px}
a{color:var(--accent)}
:target{background:#fff3bf}
table.exchanges th,table.exchanges td{font-size:12px;padding:4px 6px}
table.exchanges td.u{min-width:180px;word-break:break-all}
table.exchanges td.when{white-space:nowrap}
table.exchanges td.codes{min-width:110px;overflow-wrap:anywhere}
table.exchanges tr.problem td:first-child{box-shadow:inset 4px 0 var(--error)}
table.exchanges tr.notable td:first-child{box-shadow:inset 4px 0 var(--warn)}
@media (max-width:800px){.two{grid-template-columns:1fr}main{padding:16px}}
@media print{body{font-size:11pt}main{max-width:none;padding:0}h2{break-after:avoid}.anomaly,table,svg{break-inside:avoid}a{color:inherit;text-decoration:none}}
"#;

/// Renders the report page.
pub fn render(facts: &Facts, catalogue: &Catalogue, generated: &str) -> String {
    let mut page = String::with_capacity(64 * 1024);
    let title = format!(
        "icaptap report – {}",
        facts
            .files
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
<title>{}</title><style>{STYLE}</style></head><body><main>",
        esc(&title)
    );
    header(&mut page, facts);
    headline(&mut page, facts);
    verdicts(&mut page, facts);
    let anchors: BTreeSet<(u64, u64)> = facts.table.rows().map(|(_, x)| (x.conn, x.seq)).collect();
    anomalies(&mut page, facts, catalogue, &anchors);
    observed(&mut page, facts);
    latency(&mut page, facts);
    timeline(&mut page, facts);
    istag_history(&mut page, facts);
    clients(&mut page, facts);
    peers(&mut page, facts);
    if let Some(p) = &facts.peer {
        super::peer_section::html(&mut page, p);
    }
    exchange_table(&mut page, facts);
    let _ = writeln!(
        page,
        "<footer>Written by icaptap {} on {}. Anomaly texts come from the catalogue (docs/anomalies.md) of this build. \
Times are UTC.</footer></main></body></html>",
        esc(env!("CARGO_PKG_VERSION")),
        esc(generated)
    );
    page
}

fn header(page: &mut String, facts: &Facts) {
    let s = &facts.summary;
    let mode = if s.mode.is_empty() {
        "run"
    } else {
        s.mode.as_str()
    };
    let _ = write!(
        page,
        "<header class=\"top\"><h1><span class=\"brand\">icaptap</span> report</h1>\
<div class=\"where\"><div class=\"mono\">{}</div><div>{} · {} → {}</div></div></header>",
        esc(&facts.files.dir.display().to_string()),
        esc(mode),
        esc(s.started.as_deref().unwrap_or("?")),
        esc(s.ended.as_deref().unwrap_or("?")),
    );
}

fn headline(page: &mut String, facts: &Facts) {
    let errors = facts.severity_count("error");
    let warns = facts.severity_count("warn");
    let problem_exchanges: u64 = ["missing", "malformed", "error"]
        .iter()
        .map(|v| facts.verdicts.get(*v).copied().unwrap_or(0))
        .sum();
    let (class, text) = if facts.exchanges() == 0 && facts.summary.connections == 0 {
        (
            "warn",
            "No ICAP traffic was seen: check that the client points at icaptap (or that the capture holds the ICAP port).".to_string(),
        )
    } else if errors > 0 || problem_exchanges > 0 {
        (
            "bad",
            format!(
                "{problem_exchanges} of {} exchanges went wrong; {errors} error-level anomalies. Start with “Problems” below.",
                facts.exchanges()
            ),
        )
    } else if let Some(text) = unobserved_headline(facts, warns) {
        ("warn", text)
    } else if warns > 0 {
        (
            "warn",
            format!("Every exchange got a verdict; {warns} warnings are worth a look."),
        )
    } else {
        (
            "good",
            "Every exchange got a verdict and no protocol problem was found.".to_string(),
        )
    };
    if let Some(warning) = evidence_warning(&facts.summary) {
        let _ = write!(
            page,
            "<div class=\"verdict-line bad\">{}</div>",
            esc(&warning)
        );
    }
    if let Some(note) = filter_note(&facts.summary) {
        let _ = write!(
            page,
            "<div class=\"verdict-line warn\">{}</div>",
            esc(&note)
        );
    }
    let _ = write!(
        page,
        "<div class=\"verdict-line {class}\">{}</div>",
        esc(&text)
    );
    let s = &facts.summary;
    let cards = [
        (facts.exchanges().to_string(), "exchanges"),
        (s.connections.to_string(), "connections"),
        (readable::duration(facts.duration_s()), "duration"),
        (
            format!("{}/s", readable::rate(facts.exchanges_per_s())),
            "mean rate",
        ),
        (
            if s.latency_us.count > 0 {
                readable::micros(s.latency_us.p99)
            } else {
                "–".to_string()
            },
            "p99 latency",
        ),
        (errors.to_string(), "error anomalies"),
    ];
    page.push_str("<div class=\"cards\">");
    for (n, l) in cards {
        let _ = write!(
            page,
            "<div class=\"card\"><div class=\"n\">{}</div><div class=\"l\">{}</div></div>",
            esc(&n),
            esc(l)
        );
    }
    page.push_str("</div>");
}

fn chip(verdict: &str) -> String {
    format!(
        "<span class=\"chip\" style=\"background:{}\">{}</span>",
        svg::verdict_colour(verdict),
        esc(verdict)
    )
}

fn verdicts(page: &mut String, facts: &Facts) {
    let total = facts.exchanges();
    page.push_str("<h2 id=\"verdicts\">Verdicts</h2><table class=\"verdicts\"><thead><tr><th>verdict</th><th class=\"num\">exchanges</th><th class=\"num\">share</th><th style=\"width:40%\"></th></tr></thead><tbody>");
    let mut listed: Vec<&str> = VERDICT_ORDER.to_vec();
    for v in facts.verdicts.keys() {
        if !listed.contains(&v.as_str()) {
            listed.push(v);
        }
    }
    for v in listed {
        let n = facts.verdicts.get(v).copied().unwrap_or(0);
        if n == 0 && !matches!(v, "missing" | "malformed" | "error" | "clean") {
            continue;
        }
        let width = if total > 0 {
            n as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        // A verdict nobody got has no bar at all, not a sliver.
        let bar = if n > 0 {
            format!(
                "<div class=\"bar\" style=\"width:{width:.1}%;background:{}\"></div>",
                svg::verdict_colour(v)
            )
        } else {
            String::new()
        };
        // A verdict that went wrong links to its first exchange in the table.
        let count = match facts.table.first_with_verdict(v) {
            Some(x) if is_problem_verdict(v) || v == "unobserved" => {
                format!("<a href=\"#{}\">{n}</a>", anchor(x.conn, x.seq))
            }
            _ => n.to_string(),
        };
        let _ = write!(
            page,
            "<tr><td>{}</td><td class=\"num\">{count}</td><td class=\"num\">{}</td><td>{bar}</td></tr>",
            chip(v),
            esc(&readable::percent(n, total)),
        );
    }
    let _ = write!(
        page,
        "</tbody><tfoot><tr><th>total</th><th class=\"num\">{total}</th><th></th><th></th></tr></tfoot></table>"
    );
    page.push_str("<p class=\"muted\">A 204 is counted as clean: it means “not modified”, not “scanned”. Missing: the request got no answer (closed, reset, timed out).</p>");
}

/// An anomaly example's exchange, linked to its row of the exchange table;
/// a connection's anomaly links to the first row of that connection.
fn example_ref(e: &AnomalyExample, facts: &Facts, anchors: &BTreeSet<(u64, u64)>) -> String {
    match e.seq {
        Some(seq) if anchors.contains(&(e.conn, seq)) => {
            format!("<a href=\"#{}\">{}/{seq}</a>", anchor(e.conn, seq), e.conn)
        }
        Some(seq) => format!("{}/{seq}", e.conn),
        None => match facts.table.first_of_connection(e.conn) {
            Some(x) => format!("<a href=\"#{}\">conn {}</a>", anchor(x.conn, x.seq), e.conn),
            None => format!("conn {}", e.conn),
        },
    }
}

fn anomalies(
    page: &mut String,
    facts: &Facts,
    catalogue: &Catalogue,
    anchors: &BTreeSet<(u64, u64)>,
) {
    page.push_str("<h2 id=\"problems\">Problems: anomalies by severity</h2>");
    if facts.anomalies.is_empty() {
        page.push_str("<p>No anomaly was found.</p>");
        return;
    }
    page.push_str("<table><thead><tr><th>severity</th><th class=\"num\">kinds</th><th class=\"num\">occurrences</th></tr></thead><tbody>");
    for sev in SEVERITY_ORDER {
        let kinds = facts.anomalies_of(sev).len();
        let _ = write!(
            page,
            "<tr><td><span class=\"sev {sev}\">{sev}</span></td><td class=\"num\">{kinds}</td><td class=\"num\">{}</td></tr>",
            facts.severity_count(sev)
        );
    }
    page.push_str("</tbody></table>");
    for sev in SEVERITY_ORDER {
        for a in facts.anomalies_of(sev) {
            let entry = catalogue.get(&a.code);
            let _ = write!(
                page,
                "<section class=\"anomaly {sev}\" id=\"a-{}\"><h3><span class=\"sev {sev}\">{sev}</span><code>{}</code><span class=\"meta\">× {} · side {} · first {} · last {}</span></h3><dl>",
                esc(&a.code),
                esc(&a.code),
                a.count,
                esc(&a.sides.join(", ")),
                esc(a.first.as_deref().unwrap_or("?")),
                esc(a.last.as_deref().unwrap_or("?")),
            );
            match entry {
                Some(e) => {
                    let _ = write!(
                        page,
                        "<dt>Meaning</dt><dd>{}</dd><dt>What to do</dt><dd>{}</dd>",
                        prose(&e.meaning),
                        prose(&e.what_to_do)
                    );
                }
                None => page.push_str("<dt>Meaning</dt><dd class=\"muted\">not in this build's catalogue (a newer icaptap wrote it?)</dd>"),
            }
            page.push_str("</dl><table class=\"examples\"><thead><tr><th>exchange</th><th>when</th><th class=\"num\">offset</th><th>frames</th><th>detail</th></tr></thead><tbody>");
            for e in &a.examples {
                let frames = e.frames.as_ref().map_or(String::new(), |f| {
                    [
                        f.request.map(|n| format!("req #{n}")),
                        f.response.map(|n| format!("resp #{n}")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ")
                });
                let _ = write!(
                    page,
                    "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"num mono\">{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                    example_ref(e, facts, anchors),
                    esc(&e.ts),
                    e.offset.map_or(String::new(), |o| o.to_string()),
                    esc(&frames),
                    esc(&e.detail),
                );
            }
            page.push_str("</tbody></table></section>");
        }
    }
}

fn observed(page: &mut String, facts: &Facts) {
    let s = &facts.summary;
    let setting = facts.setting();
    page.push_str("<h2 id=\"observed\">What was observed</h2><table><tbody>");
    let mut row = |k: &str, v: String| {
        let _ = write!(
            page,
            "<tr><th style=\"width:200px\">{}</th><td>{}</td></tr>",
            esc(k),
            v
        );
    };
    row(
        "mode",
        esc(if s.mode.is_empty() {
            "unknown (no summary.json)"
        } else {
            &s.mode
        }),
    );
    row("icaptap version", esc(&s.icaptap_version));
    row(
        "started",
        format!(
            "<span class=\"mono\">{}</span>",
            esc(s.started.as_deref().unwrap_or("?"))
        ),
    );
    row(
        "ended",
        format!(
            "<span class=\"mono\">{}</span>",
            esc(s.ended.as_deref().unwrap_or("?"))
        ),
    );
    row("duration", esc(&readable::duration(facts.duration_s())));
    if let Some(l) = &setting.listen {
        row("listening on", format!("<code>{}</code>", esc(l)));
    }
    if let Some(u) = &setting.upstream {
        row("forwarding to", format!("<code>{}</code>", esc(u)));
    }
    if !setting.inputs.is_empty() {
        row(
            "captures analysed",
            setting
                .inputs
                .iter()
                .map(|i| format!("<code>{}</code>", esc(i)))
                .collect::<Vec<_>>()
                .join("<br>"),
        );
    }
    if !s.command.is_empty() {
        row(
            "command",
            format!("<code>{}</code>", esc(&s.command.join(" "))),
        );
    }
    let captures: Vec<String> = facts
        .files
        .captures
        .iter()
        .map(|p| {
            let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            format!(
                "<code>{}</code> <span class=\"muted\">({})</span>",
                esc(&p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()),
                esc(&readable::bytes(size))
            )
        })
        .collect();
    row(
        "capture files",
        if captures.is_empty() {
            "none".to_string()
        } else {
            captures.join("<br>")
        },
    );
    row(
        "traffic",
        esc(&format!(
            "{} exchanges/s mean, {} in the busiest second; {}/s ({} client→sensor, {} sensor→client)",
            readable::rate(facts.exchanges_per_s()),
            facts.peak_per_s(),
            readable::bytes(facts.bytes_per_s() as u64),
            readable::bytes(s.bytes_client_to_server),
            readable::bytes(s.bytes_server_to_client)
        )),
    );
    let d = &s.drops;
    if s.unobserved_bytes
        + d.observer_taps
        + d.recorder_taps
        + d.record_write_errors
        + s.incomplete_exchanges
        > 0
    {
        row(
            "not seen",
            esc(&format!(
                "{} bytes not decoded, {} incomplete exchanges, observer dropped {} taps, recorder dropped {} taps, {} record write errors (forwarding was not affected)",
                s.unobserved_bytes, s.incomplete_exchanges, d.observer_taps, d.recorder_taps, d.record_write_errors
            )),
        );
    }
    if facts.unreadable_lines > 0 {
        row("unreadable log lines", facts.unreadable_lines.to_string());
    }
    page.push_str("</tbody></table>");
}

fn latency(page: &mut String, facts: &Facts) {
    page.push_str("<h2 id=\"latency\">Latency per service and method</h2>");
    if facts.latency.is_empty() {
        page.push_str("<p>No latency was measured (no answered exchange).</p>");
        return;
    }
    page.push_str("<p class=\"muted\">From the request (or its preview) sent to the sensor’s response head.</p><table><thead><tr><th>method and service</th><th class=\"num\">count</th><th class=\"num\">p50</th><th class=\"num\">p90</th><th class=\"num\">p99</th><th class=\"num\">p99.9</th><th class=\"num\">max</th></tr></thead><tbody>");
    for l in &facts.latency {
        let h = &l.histogram;
        let _ = write!(
            page,
            "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&l.key),
            h.len(),
            esc(&readable::micros(h.value_at_quantile(0.5))),
            esc(&readable::micros(h.value_at_quantile(0.9))),
            esc(&readable::micros(h.value_at_quantile(0.99))),
            esc(&readable::micros(h.value_at_quantile(0.999))),
            esc(&readable::micros(h.max())),
        );
    }
    page.push_str("</tbody></table>");
    for l in facts
        .latency
        .iter()
        .filter(|l| !l.histogram.is_empty())
        .take(8)
    {
        let _ = write!(page, "<h3><code>{}</code></h3>", esc(&l.key));
        page.push_str(&svg::latency_histogram(&l.histogram, &l.key));
    }
}

fn timeline(page: &mut String, facts: &Facts) {
    page.push_str("<h2 id=\"timeline\">Exchanges over time by verdict</h2>");
    let (from, to) = (facts.first_us.unwrap_or(0), facts.last_us.unwrap_or(0));
    let Some(columns) = facts.timebins.columns(from, to, svg::MAX_COLUMNS) else {
        page.push_str("<p>No exchange to plot.</p>");
        return;
    };
    page.push_str(&svg::timeline(&columns));
    page.push_str("<div class=\"legend\">");
    for v in VERDICT_ORDER {
        if facts.verdicts.contains_key(v) {
            let _ = write!(
                page,
                "<span style=\"--c:{}\">{v}</span>",
                svg::verdict_colour(v)
            );
        }
    }
    page.push_str("</div>");
}

fn istag_history(page: &mut String, facts: &Facts) {
    page.push_str("<h2 id=\"istag\">OPTIONS and ISTag history</h2>");
    if facts.services.is_empty() {
        page.push_str("<p>No service was seen.</p>");
        return;
    }
    page.push_str("<p class=\"muted\">A new ISTag means the service changed: signatures updated, or a restart.</p><table><thead><tr><th>sensor</th><th>service</th><th class=\"num\">OPTIONS</th><th class=\"num\">other</th><th>last OPTIONS</th><th>ISTag (first seen, responses)</th></tr></thead><tbody>");
    for h in facts.services.values() {
        let mut tags: Vec<String> = h
            .changes
            .iter()
            .map(|c| {
                format!(
                    "<code>{}</code> <span class=\"muted\">{} · {}</span>",
                    esc(&c.istag),
                    esc(&c.ts),
                    c.responses
                )
            })
            .collect();
        if h.changes_dropped > 0 {
            tags.push(format!(
                "<span class=\"muted\">… {} more changes</span>",
                h.changes_dropped
            ));
        }
        let _ = write!(
            page,
            "<tr><td class=\"mono\">{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
            esc(&h.server),
            esc(&h.service),
            h.options_exchanges,
            h.other_exchanges,
            esc(h.last_options.as_deref().unwrap_or("never")),
            if tags.is_empty() { "none".to_string() } else { tags.join("<br>") },
        );
    }
    page.push_str("</tbody></table>");
}

fn clients(page: &mut String, facts: &Facts) {
    page.push_str("<h2 id=\"clients\">Connections per client</h2>");
    if facts.clients.is_empty() {
        page.push_str("<p>No client connected.</p>");
        return;
    }
    page.push_str("<table><thead><tr><th>client</th><th class=\"num\">connections</th><th class=\"num\">sensor unreachable</th><th class=\"num\">resets</th><th class=\"num\">exchanges</th><th class=\"num\">went wrong</th><th class=\"num\">sent</th><th class=\"num\">received</th></tr></thead><tbody>");
    for c in facts.clients.values() {
        let _ = write!(
            page,
            "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&c.client),
            c.connections,
            c.connect_failures,
            c.resets,
            c.exchanges,
            c.problem_exchanges,
            esc(&readable::bytes(c.bytes_up)),
            esc(&readable::bytes(c.bytes_down)),
        );
    }
    page.push_str("</tbody></table>");
}

fn value_list(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "<span class=\"muted\">not seen</span>".to_string();
    }
    map.iter()
        .map(|(v, n)| format!("<code>{}</code> <span class=\"muted\">× {n}</span>", esc(v)))
        .collect::<Vec<_>>()
        .join("<br>")
}

/// One `label: value` row of a facts table; `html` is already escaped.
fn fact_row(page: &mut String, label: &str, html: &str) {
    let _ = write!(page, "<tr><th>{label}</th><td>{html}</td></tr>");
}

/// Addresses, escaped, in a monospace list.
fn addresses<'a>(addrs: impl Iterator<Item = &'a String>) -> String {
    addrs
        .map(|a| format!("<span class=\"mono\">{}</span>", esc(a)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn peers(page: &mut String, facts: &Facts) {
    let p = &facts.summary.products;
    page.push_str("<h2 id=\"peers\">Clients and sensors seen</h2><div class=\"two\"><div><h3>ICAP clients</h3><table><tbody>");
    fact_row(page, "addresses", &addresses(facts.clients.keys()));
    fact_row(page, "User-Agent", &value_list(&p.user_agents));
    let methods: Vec<String> = facts
        .summary
        .by_method
        .iter()
        .map(|(m, n)| format!("<code>{}</code> × {n}", esc(m)))
        .collect();
    fact_row(page, "ICAP methods", &methods.join(", "));
    page.push_str("</tbody></table></div><div><h3>ICAP servers (sensors)</h3><table><tbody>");
    fact_row(page, "addresses", &addresses(facts.sensors.keys()));
    fact_row(page, "Server", &value_list(&p.servers));
    fact_row(page, "Service", &value_list(&p.services));
    let tags: BTreeSet<&str> = facts
        .services
        .values()
        .flat_map(|h| h.changes.iter().map(|c| c.istag.as_str()))
        .collect();
    let tags: Vec<String> = tags
        .iter()
        .map(|t| format!("<code>{}</code>", esc(t)))
        .collect();
    let tags = if tags.is_empty() {
        "none".to_string()
    } else {
        tags.join(" ")
    };
    fact_row(page, "ISTag", &tags);
    page.push_str("</tbody></table></div></div>");
}

/// Longest URL shown in full in a cell; longer ones are cut, the whole URL
/// is in the cell's tooltip.
const URL_CHARS: usize = 160;

fn frames_text(x: &ExchangeRecord) -> String {
    x.frames.as_ref().map_or(String::new(), |f| {
        format!(
            "{} / {}",
            f.request.map_or("-".to_string(), |n| n.to_string()),
            f.response.map_or("-".to_string(), |n| n.to_string())
        )
    })
}

fn url_cell(x: &ExchangeRecord) -> String {
    let (url, muted) = match (&x.http_url, &x.uri) {
        (Some(u), _) => (u.as_str(), false),
        (None, Some(u)) => (u.as_str(), true),
        (None, None) => return "<span class=\"muted\">–</span>".to_string(),
    };
    let shown: String = if url.chars().count() > URL_CHARS {
        url.chars().take(URL_CHARS).chain(['…']).collect()
    } else {
        url.to_string()
    };
    format!(
        "<span class=\"url{}\" title=\"{}\">{}</span>",
        if muted { " muted" } else { "" },
        esc(url),
        esc(&shown)
    )
}

/// The exchange table: which request got which verdict, problems first,
/// every row an anchor the problem mentions above link to.
fn exchange_table(page: &mut String, facts: &Facts) {
    let t = &facts.table;
    page.push_str("<h2 id=\"exchanges\">Exchanges: which request got which verdict</h2>");
    if t.total() == 0 {
        page.push_str("<p>No exchange was seen.</p>");
        return;
    }
    let _ = write!(page, "<p class=\"muted\">{}</p>", esc(&t.scope()));
    let with_frames = t.rows().any(|(_, x)| x.frames.is_some());
    let _ = write!(
        page,
        "<table class=\"exchanges\"><thead><tr><th>exchange</th><th>when</th><th>client</th><th>method</th><th>URL</th><th>verdict</th><th>threat</th><th class=\"num\">status</th><th class=\"num\">latency</th>{}<th>anomalies</th></tr></thead><tbody>",
        if with_frames { "<th>frames (req / resp)</th>" } else { "" }
    );
    for (tier, x) in t.rows() {
        let codes: Vec<String> = x
            .anomalies
            .iter()
            .map(|a| {
                format!(
                    "<a href=\"#a-{}\"><code>{}</code></a>",
                    esc(&a.code),
                    esc(&a.code)
                )
            })
            .collect();
        let status = match (x.icap_status, x.http_status_returned) {
            (Some(i), Some(h)) => format!("{i} <span class=\"muted\">HTTP {h}</span>"),
            (Some(i), None) => i.to_string(),
            (None, _) => "–".to_string(),
        };
        let class = match tier {
            Tier::Problem => "problem",
            Tier::Notable => "notable",
            Tier::Clean => "clean",
        };
        let _ = write!(
            page,
            "<tr id=\"{}\" class=\"{class}\"><td class=\"mono\">{}/{}</td><td class=\"mono when\" title=\"{}\">{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"u\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{status}</td><td class=\"num\">{}</td>",
            anchor(x.conn, x.seq),
            x.conn,
            x.seq,
            esc(&x.ts),
            // The day is in the page's header; the row shows the time.
            esc(x.ts.split_once('T').map_or(x.ts.as_str(), |(_, t)| t)),
            esc(&x.client),
            esc(x.method.as_deref().unwrap_or("–")),
            url_cell(x),
            chip(&x.verdict),
            esc(x.threat.as_deref().unwrap_or("")),
            x.latency_us.map_or("–".to_string(), readable::micros),
        );
        if with_frames {
            let _ = write!(page, "<td class=\"mono\">{}</td>", esc(&frames_text(x)));
        }
        let _ = write!(page, "<td class=\"codes\">{}</td></tr>", codes.join(" "));
    }
    page.push_str("</tbody></table>");
    if t.listed() < t.total() {
        let _ = write!(
            page,
            "<p class=\"muted\">List the problem exchanges with <code>{}</code>, and every exchange with its URL and verdict with <code>{}</code> (in the run directory).</p>",
            esc(JQ_PROBLEMS),
            esc(JQ_ALL)
        );
    }
}
