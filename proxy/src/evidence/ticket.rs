//! `ticket.md`: the support ticket pre-filled with what support asks for
//! (the field guide's list): hardware, traffic level measured, integration
//! type and the products seen in headers, software versions, when each
//! problem occurred, and places for the description and the steps to
//! reproduce. What icaptap cannot know is left as a marked blank.

use std::fmt::Write;

use super::escape::{markdown as md, markdown_code as code};
use super::facts::{Facts, SEVERITY_ORDER};
use super::hostinfo::HostInfo;
use super::readable;

const BLANK: &str = "_(to fill in)_";

/// Renders the ticket.
pub fn render(facts: &Facts, host: &HostInfo, bundle_name: &str) -> String {
    let mut t = String::with_capacity(8 * 1024);
    let s = &facts.summary;
    let _ = writeln!(t, "# Support ticket: ICAP integration\n");
    let _ = writeln!(
        t,
        "Evidence attached: {} (captures of both legs, exchange and connection logs, report.html, manifest.json with SHA-256 of every file).\n",
        code(bundle_name)
    );
    let _ = writeln!(t, "## Problem description\n\n{BLANK}\n");
    let _ = writeln!(t, "## Steps to reproduce\n\n1. {BLANK}\n2. {BLANK}\n");
    let _ = writeln!(t, "## Expected and actual result\n\n{BLANK}\n");

    let _ = writeln!(t, "## Hardware and system (where icaptap ran)\n");
    let opt = |v: &Option<String>| v.as_deref().map_or("unknown".to_string(), md);
    let _ = writeln!(t, "- Hardware model: {}", opt(&host.hardware));
    let _ = writeln!(
        t,
        "- CPU: {} × {}",
        host.cpu_count.map_or("?".to_string(), |n| n.to_string()),
        opt(&host.cpu_model)
    );
    let _ = writeln!(
        t,
        "- Memory: {}",
        host.memory_bytes
            .map_or("unknown".to_string(), readable::bytes)
    );
    let _ = writeln!(t, "- OS: {}", opt(&host.os));
    let _ = writeln!(t, "- Kernel: {}", opt(&host.kernel));
    let _ = writeln!(t, "- Sensor hardware model and specification: {BLANK}\n");

    let _ = writeln!(t, "## Traffic level (measured by icaptap)\n");
    let _ = writeln!(
        t,
        "- Period: {} to {} ({})",
        md(s.started.as_deref().unwrap_or("?")),
        md(s.ended.as_deref().unwrap_or("?")),
        readable::duration(facts.duration_s())
    );
    let _ = writeln!(
        t,
        "- Exchanges: {} ({} per second on average, {} in the busiest second)",
        facts.exchanges(),
        readable::rate(facts.exchanges_per_s()),
        facts.peak_per_s()
    );
    let _ = writeln!(
        t,
        "- Bytes: {} per second on average ({} client→sensor, {} sensor→client in total)",
        readable::bytes(facts.bytes_per_s() as u64),
        readable::bytes(s.bytes_client_to_server),
        readable::bytes(s.bytes_server_to_client)
    );
    let _ = writeln!(
        t,
        "- Connections: {} ({} could not reach the sensor)\n",
        s.connections, s.connect_failures
    );

    let _ = writeln!(t, "## Integration type\n");
    let methods: Vec<String> = s
        .by_method
        .iter()
        .map(|(m, n)| format!("{} × {n}", md(m)))
        .collect();
    let kind = match (
        s.by_method.contains_key("REQMOD"),
        s.by_method.contains_key("RESPMOD"),
    ) {
        (true, true) => "REQMOD and RESPMOD",
        (true, false) => "REQMOD only",
        (false, true) => "RESPMOD only",
        (false, false) => "neither REQMOD nor RESPMOD was seen",
    };
    let _ = writeln!(t, "- Vectoring points: {kind} ({})", methods.join(", "));
    let services: Vec<String> = facts
        .services
        .values()
        .map(|h| format!("{} on {}", code(&h.service), md(&h.server)))
        .collect();
    let _ = writeln!(t, "- Services used: {}", services.join(", "));
    let list = |m: &std::collections::BTreeMap<String, u64>| -> String {
        if m.is_empty() {
            "not seen".to_string()
        } else {
            m.keys().map(|v| code(v)).collect::<Vec<_>>().join(", ")
        }
    };
    let _ = writeln!(
        t,
        "- ICAP client product (User-Agent): {}",
        list(&facts.summary.products.user_agents)
    );
    let _ = writeln!(
        t,
        "- ICAP server product (Server): {}",
        list(&facts.summary.products.servers)
    );
    let _ = writeln!(
        t,
        "- Sensor service (OPTIONS Service): {}",
        list(&facts.summary.products.services)
    );
    let _ = writeln!(
        t,
        "- ICAP client product and version (if not above): {BLANK}\n"
    );

    let _ = writeln!(t, "## Software versions seen\n");
    let _ = writeln!(
        t,
        "- icaptap: {} (run), {} (bundle)",
        md(&s.icaptap_version),
        env!("CARGO_PKG_VERSION")
    );
    let mut tags: Vec<String> = Vec::new();
    for h in facts.services.values() {
        for c in &h.changes {
            tags.push(format!(
                "{} {} from {}",
                code(&h.service),
                code(&c.istag),
                md(&c.ts)
            ));
        }
    }
    let _ = writeln!(
        t,
        "- Sensor ISTag (service version, changes on signature updates): {}",
        if tags.is_empty() {
            "none seen".to_string()
        } else {
            tags.join("; ")
        }
    );
    let _ = writeln!(t, "- Sensor software and signature versions: {BLANK}\n");

    let _ = writeln!(t, "## When the problems occurred (UTC)\n");
    if facts.anomalies.is_empty() {
        let _ = writeln!(t, "icaptap found no protocol anomaly in this run.\n");
    } else {
        let _ = writeln!(
            t,
            "| anomaly | severity | count | first | last |\n|---|---|---:|---|---|"
        );
        for sev in SEVERITY_ORDER {
            for a in facts.anomalies_of(sev) {
                let _ = writeln!(
                    t,
                    "| {} | {sev} | {} | {} | {} |",
                    code(&a.code),
                    a.count,
                    md(a.first.as_deref().unwrap_or("?")),
                    md(a.last.as_deref().unwrap_or("?"))
                );
            }
        }
        out_verdicts(&mut t, facts);
    }
    if let Some(p) = &facts.peer {
        super::peer_section::ticket(&mut t, p);
    }
    let _ = writeln!(t, "## Vendor logs attached\n\n- Sensor log archive: {BLANK}\n- ICAP client (proxy) logs: {BLANK}");
    t
}

fn out_verdicts(t: &mut String, facts: &Facts) {
    let wrong: Vec<String> = ["missing", "malformed", "error"]
        .iter()
        .filter_map(|v| facts.verdicts.get(*v).map(|n| format!("{v} {n}")))
        .collect();
    let _ = writeln!(
        t,
        "\nVerdicts that went wrong: {}.\n",
        if wrong.is_empty() {
            "none".to_string()
        } else {
            wrong.join(", ")
        }
    );
}
