//! Inline SVG charts for the HTML report: a latency histogram on a
//! logarithmic axis with its percentiles marked, and exchanges per second
//! stacked by verdict over the run. Plain SVG elements only, no scripts,
//! so the report stays one file that prints.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;

use super::escape;
use super::facts::VERDICT_ORDER;
use super::readable;

/// The colour of each verdict, shared by the charts and the tables.
pub fn verdict_colour(verdict: &str) -> &'static str {
    match verdict {
        "clean" => "#2f9e44",
        "modified" => "#1c7ed6",
        "blocked" => "#e8590c",
        "infected" => "#ae3ec9",
        "error" => "#e03131",
        "missing" => "#862e2e",
        "malformed" => "#c2255c",
        "options" => "#868e96",
        "unobserved" => "#adb5bd",
        _ => "#495057",
    }
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 190.0;
const LEFT: f64 = 46.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;

/// Bucket edges of the latency histogram in microseconds: 1-2-5 steps from
/// 10 µs to 100 s, with everything below and above folded into the ends.
fn latency_edges() -> Vec<u64> {
    let mut edges = vec![0];
    let mut decade = 10u64;
    while decade <= 100_000_000 {
        for m in [1, 2, 5] {
            edges.push(decade * m);
        }
        decade *= 10;
    }
    edges
}

/// A histogram of `h` (microseconds) with p50, p90 and p99 marked.
pub fn latency_histogram(h: &Histogram<u64>, title: &str) -> String {
    let edges = latency_edges();
    let mut counts = vec![0u64; edges.len()];
    for v in h.iter_recorded() {
        let value = v.value_iterated_to();
        let i = edges.iter().rposition(|e| *e <= value).unwrap_or(0);
        counts[i] += v.count_at_value();
    }
    // Show the buckets from the first to the last non-empty one, with a
    // little context either side.
    let first = counts
        .iter()
        .position(|c| *c > 0)
        .unwrap_or(0)
        .saturating_sub(1);
    let last = (counts.iter().rposition(|c| *c > 0).unwrap_or(0) + 2).min(counts.len());
    let shown = &counts[first..last];
    let max = shown.iter().copied().max().unwrap_or(1).max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let bar_w = plot_w / shown.len().max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape::html(title)
    );
    axes(&mut s, max);
    for (i, c) in shown.iter().enumerate() {
        let x = LEFT + i as f64 * bar_w;
        let bh = *c as f64 / max as f64 * plot_h;
        if *c > 0 {
            let _ = write!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4c6ef5"><title>{} – {}: {c}</title></rect>"##,
                x + 1.0,
                TOP + plot_h - bh,
                (bar_w - 2.0).max(1.0),
                bh.max(1.0),
                escape::html(&readable::micros(edges[first + i])),
                escape::html(
                    &edges
                        .get(first + i + 1)
                        .map_or("∞".to_string(), |e| readable::micros(*e))
                ),
            );
        }
        let edge = edges[first + i];
        if i % 3 == 0 || shown.len() <= 8 {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
                x,
                HEIGHT - BOTTOM + 14.0,
                escape::html(&readable::micros(edge))
            );
        }
    }
    // Percentile markers, placed by the bucket they fall in (log axis).
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let v = h.value_at_quantile(q);
        let i = edges.iter().rposition(|e| *e <= v).unwrap_or(0);
        if i < first || i >= last {
            continue;
        }
        let lo = edges[i] as f64;
        let hi = edges.get(i + 1).map_or(lo * 2.0, |e| *e as f64);
        let frac = if hi > lo && lo > 0.0 {
            ((v as f64).max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln())
        } else {
            0.5
        };
        let x = LEFT + ((i - first) as f64 + frac.clamp(0.0, 1.0)) * bar_w;
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" class="marker"/><text x="{:.1}" y="{:.1}" class="marker-label">{label} {}</text>"##,
            TOP + plot_h,
            x + 3.0,
            TOP + 10.0
                + if label == "p90" {
                    12.0
                } else if label == "p99" {
                    24.0
                } else {
                    0.0
                },
            escape::html(&readable::micros(v)),
        );
    }
    s.push_str("</svg>");
    s
}

fn axes(s: &mut String, max: u64) {
    let plot_h = HEIGHT - TOP - BOTTOM;
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" class="axis"/>"##,
        WIDTH - RIGHT,
        TOP + plot_h,
        TOP + plot_h
    );
    for frac in [0.5, 1.0] {
        if frac < 1.0 && max < 2 {
            continue;
        }
        let y = TOP + plot_h - frac * plot_h;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            y + 4.0,
            (max as f64 * frac).round() as u64
        );
    }
}

/// Columns the timeline is drawn with at most.
const MAX_COLUMNS: usize = 240;

/// Exchanges per second stacked by verdict; seconds are grouped into
/// columns when the run is longer than [`MAX_COLUMNS`] seconds (the column
/// then shows the mean per second).
pub fn timeline(per_second: &BTreeMap<i64, BTreeMap<String, u64>>) -> String {
    let (Some(first), Some(last)) = (per_second.keys().next(), per_second.keys().next_back())
    else {
        return String::new();
    };
    let span = (last - first + 1).max(1) as usize;
    let group = span.div_ceil(MAX_COLUMNS).max(1);
    let columns = span.div_ceil(group);
    let mut stacks: Vec<BTreeMap<&str, f64>> = vec![BTreeMap::new(); columns];
    for (second, verdicts) in per_second {
        let col = ((second - first) as usize) / group;
        if let Some(stack) = stacks.get_mut(col) {
            for (v, n) in verdicts {
                let key = VERDICT_ORDER
                    .iter()
                    .find(|x| **x == v.as_str())
                    .copied()
                    .unwrap_or("other");
                *stack.entry(key).or_default() += *n as f64 / group as f64;
            }
        }
    }
    let max = stacks
        .iter()
        .map(|s| s.values().sum::<f64>())
        .fold(0.0f64, f64::max)
        .max(1.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let col_w = plot_w / columns as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="exchanges per second by verdict" xmlns="http://www.w3.org/2000/svg">"#
    );
    axes(&mut s, max.ceil() as u64);
    for (i, stack) in stacks.iter().enumerate() {
        let x = LEFT + i as f64 * col_w;
        let mut y = TOP + plot_h;
        // Problems at the bottom of the stack, where the eye lands first.
        for verdict in VERDICT_ORDER.iter().chain(["other"].iter()) {
            let Some(n) = stack.get(verdict) else {
                continue;
            };
            let h = n / max * plot_h;
            y -= h;
            let _ = write!(
                s,
                r##"<rect x="{x:.2}" y="{y:.2}" width="{:.2}" height="{h:.2}" fill="{}"><title>+{}s {verdict}: {}</title></rect>"##,
                (col_w - 0.5).max(0.5),
                verdict_colour(verdict),
                i * group,
                readable::rate(*n),
            );
        }
    }
    let _ = write!(
        s,
        r##"<text x="{LEFT}" y="{:.1}" class="tick">0 s</text><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
        HEIGHT - BOTTOM + 14.0,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM + 14.0,
        escape::html(&readable::duration(span as f64)),
    );
    if group > 1 {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">one column = {group} s (mean per second)</text>"##,
            LEFT + plot_w / 2.0,
            HEIGHT - 4.0
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_has_bars_and_markers() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in [100, 150, 220, 5_000, 90_000] {
            h.record(v).unwrap();
        }
        let svg = latency_histogram(&h, "RESPMOD </svg><script>");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("<rect"));
        assert!(svg.contains("p99"));
        assert!(!svg.contains("<script>"));
    }

    #[test]
    fn timeline_groups_long_runs() {
        let mut m = BTreeMap::new();
        for s in 0..1000i64 {
            m.insert(s, BTreeMap::from([("clean".to_string(), 2u64)]));
        }
        let svg = timeline(&m);
        assert!(svg.contains("one column = 5 s"));
        assert!(svg.matches("<rect").count() <= MAX_COLUMNS);
    }
}
