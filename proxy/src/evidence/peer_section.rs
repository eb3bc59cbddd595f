//! The `--peer` comparison in the reports and the ticket: read back from
//! peer.json ([`crate::analyze::peer_file`]), it says over which time the
//! two captures were compared, what was lost on the way inside it, what
//! lay outside it and was not compared, verdicts that differ, and the
//! warnings (a capture that started late, ended early or was cut).

use std::fmt::Write;
use std::path::Path;

use crate::analyze::peer_file::{PeerExchange, PeerFile, PEER_FILE};

use super::escape::{html as esc, markdown as md};

/// Exchanges listed per kind; peer.json has them all.
const LISTED: usize = 20;

/// peer.json of `dir`, when the run compared two captures and the file
/// reads; a damaged file is left out of the report, not fatal.
pub fn load(dir: &Path) -> Option<PeerFile> {
    let text = std::fs::read_to_string(dir.join(PEER_FILE)).ok()?;
    match serde_json::from_str(&text) {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(
                "{}: {e}; the report leaves the peer comparison out",
                PEER_FILE
            );
            None
        }
    }
}

fn window_text(p: &PeerFile) -> String {
    match &p.window {
        Some(w) => format!("{} to {} (first capture's clock)", w.from, w.to),
        None => "none: the captures do not overlap in time".to_string(),
    }
}

/// The headline numbers in one sentence.
pub fn sentence(p: &PeerFile) -> String {
    format!(
        "Over the time both captures cover, {} exchanges matched, {} of the first capture never reached the peer capture (lost on the way), {} of the peer capture are not in the first, {} verdicts differ; {} exchanges of the first capture and {} of the peer capture were outside that time and not compared.",
        p.matched,
        p.client_side_only.len(),
        p.sensor_side_only.len(),
        p.verdict_differences.len(),
        p.outside_window.client_side.len(),
        p.outside_window.sensor_side.len()
    )
}

fn offsets(p: &PeerFile) -> String {
    match (p.clock_offset_us, p.network_delay_us) {
        (Some(o), Some(d)) => format!(
            "clock offset of the peer capture {o} µs, network delay between the capture points {d} µs"
        ),
        _ => match p.request_offset_us {
            Some(r) => format!("peer capture time minus first capture time for a request: {r} µs"),
            None => "no exchange matched: clock offset unknown".to_string(),
        },
    }
}

fn exchange_html(x: &PeerExchange) -> String {
    format!(
        "<tr><td><code>{}</code></td><td class=\"u\">{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td></tr>",
        esc(&x.method),
        esc(x.http_url.as_deref().unwrap_or("–")),
        esc(&x.verdict),
        esc(x.at.as_deref().unwrap_or("")),
        esc(&x.locator)
    )
}

fn list_html(page: &mut String, title: &str, list: &[PeerExchange]) {
    if list.is_empty() {
        return;
    }
    let _ = write!(
        page,
        "<h3>{} ({})</h3><table><thead><tr><th>method</th><th>URL</th><th>verdict</th><th>when</th><th>where</th></tr></thead><tbody>",
        esc(title),
        list.len()
    );
    for x in list.iter().take(LISTED) {
        page.push_str(&exchange_html(x));
    }
    page.push_str("</tbody></table>");
    if list.len() > LISTED {
        let _ = write!(
            page,
            "<p class=\"muted\">… and {} more in peer.json.</p>",
            list.len() - LISTED
        );
    }
}

/// The report.html section.
pub fn html(page: &mut String, p: &PeerFile) {
    page.push_str("<h2 id=\"peer\">Both sides compared (--peer)</h2>");
    for w in &p.warnings {
        let _ = write!(page, "<div class=\"verdict-line warn\">{}</div>", esc(w));
    }
    let _ = write!(page, "<p>{}</p><table><tbody>", esc(&sentence(p)));
    let rows = [
        ("compared over", window_text(p)),
        (
            "first capture",
            format!(
                "{} · {} to {} · {} exchanges",
                p.first_capture.files.join(", "),
                p.first_capture.first_packet.as_deref().unwrap_or("?"),
                p.first_capture.last_packet.as_deref().unwrap_or("?"),
                p.first_capture.exchanges
            ),
        ),
        (
            "peer capture",
            format!(
                "{} · {} to {} (its clock) · {} exchanges",
                p.peer_capture.files.join(", "),
                p.peer_capture.first_packet.as_deref().unwrap_or("?"),
                p.peer_capture.last_packet.as_deref().unwrap_or("?"),
                p.peer_capture.exchanges
            ),
        ),
        ("clocks", offsets(p)),
    ];
    for (k, v) in rows {
        let _ = write!(
            page,
            "<tr><th style=\"width:200px\">{k}</th><td>{}</td></tr>",
            esc(&v)
        );
    }
    page.push_str("</tbody></table>");
    list_html(
        page,
        "Lost on the way: in the first capture only",
        &p.client_side_only,
    );
    list_html(page, "In the peer capture only", &p.sensor_side_only);
    let differ: Vec<PeerExchange> = p
        .verdict_differences
        .iter()
        .filter_map(|d| {
            let (c, s) = (d.client_side.as_ref()?, d.sensor_side.as_ref()?);
            let mut x = c.clone();
            x.verdict = format!("{} (peer: {})", c.verdict, s.verdict);
            Some(x)
        })
        .collect();
    list_html(page, "Verdicts that differ", &differ);
    list_html(
        page,
        "Outside the compared time: first capture",
        &p.outside_window.client_side,
    );
    list_html(
        page,
        "Outside the compared time: peer capture",
        &p.outside_window.sensor_side,
    );
}

/// The report.md section.
pub fn markdown(out: &mut String, p: &PeerFile) {
    let _ = writeln!(out, "## Both sides compared (--peer)\n");
    for w in &p.warnings {
        let _ = writeln!(out, "**Warning: {}**\n", md(w));
    }
    let _ = writeln!(out, "{}\n", md(&sentence(p)));
    let _ = writeln!(out, "- Compared over: {}", md(&window_text(p)));
    let _ = writeln!(out, "- Clocks: {}\n", md(&offsets(p)));
    let lists = [
        ("Lost on the way (first capture only)", &p.client_side_only),
        ("Peer capture only", &p.sensor_side_only),
        (
            "Outside the compared time, first capture",
            &p.outside_window.client_side,
        ),
        (
            "Outside the compared time, peer capture",
            &p.outside_window.sensor_side,
        ),
    ];
    for (title, list) in lists {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "{title} ({}):\n\n| method | URL | verdict | when | where |\n|---|---|---|---|---|",
            list.len()
        );
        for x in list.iter().take(LISTED) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                md(&x.method),
                md(x.http_url.as_deref().unwrap_or("-")),
                md(&x.verdict),
                md(x.at.as_deref().unwrap_or("")),
                md(&x.locator)
            );
        }
        if list.len() > LISTED {
            let _ = writeln!(out, "\n… and {} more in peer.json.", list.len() - LISTED);
        }
        out.push('\n');
    }
}

/// The ticket's lines.
pub fn ticket(t: &mut String, p: &PeerFile) {
    let _ = writeln!(t, "## Captures of both sides compared\n");
    let _ = writeln!(t, "- {}", md(&sentence(p)));
    let _ = writeln!(t, "- Compared over: {}", md(&window_text(p)));
    let _ = writeln!(t, "- Clocks: {}", md(&offsets(p)));
    for w in &p.warnings {
        let _ = writeln!(t, "- Warning: {}", md(w));
    }
    t.push('\n');
}
