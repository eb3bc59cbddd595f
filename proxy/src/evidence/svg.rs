//! Inline SVG charts for the HTML report: a latency histogram on a
//! logarithmic axis with its percentiles marked above the bars, and
//! exchanges over time stacked by verdict, at a column width that fits the
//! run ([`super::timebins`]). Value axes have 1-2-5 ticks drawn at their
//! values, whole numbers for counts. Plain SVG elements only, no scripts,
//! so the report stays one file that prints.

use std::fmt::Write;

use hdrhistogram::Histogram;

use super::escape;
use super::readable;
use super::timebins::{coarser, kind_name, Columns};

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
/// Room above a histogram's bars for the percentile labels, so that no
/// label is drawn over a bar.
const LABEL_BAND: f64 = 46.0;

/// Tick values of a value axis from 0 to at least `max`: 1-2-5 steps, at
/// most about five ticks; whole numbers only when `whole` (counts). The
/// last tick is the axis' top, so every tick is drawn at its value.
pub fn value_ticks(max: f64, whole: bool) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw - 1e-12)
        .unwrap_or(10.0 * magnitude);
    if whole {
        step = step.max(1.0).round();
    }
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// A tick's label: as many decimals as its step needs, no more.
fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{value:.decimals$}")
}

/// The value axis: the baseline, grid lines and labels at each tick of
/// `ticks` (whose last is the top of the plot).
fn value_axis(s: &mut String, ticks: &[f64], plot_top: f64, plot_bottom: f64) {
    let top = ticks.last().copied().unwrap_or(1.0).max(f64::MIN_POSITIVE);
    let step = ticks.get(1).copied().unwrap_or(1.0);
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{plot_bottom:.1}" y2="{plot_bottom:.1}" class="axis"/>"##,
        WIDTH - RIGHT,
    );
    for t in ticks {
        let y = plot_bottom - t / top * (plot_bottom - plot_top);
        if *t > 0.0 {
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" class="grid"/>"##,
                WIDTH - RIGHT,
            );
        }
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" class="tick ytick" data-value="{t}" data-y="{y:.1}" text-anchor="end">{}</text>"##,
            LEFT - 4.0,
            y + 4.0,
            tick_label(*t, step),
        );
    }
}

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

/// A histogram of `h` (microseconds) with p50, p90 and p99 marked; the
/// percentile labels sit in a band above the bars.
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
    let ticks = value_ticks(max as f64, true);
    let top_value = ticks.last().copied().unwrap_or(1.0);
    let height = HEIGHT + LABEL_BAND;
    let plot_top = TOP + LABEL_BAND;
    let plot_bottom = height - BOTTOM;
    let plot_h = plot_bottom - plot_top;
    let plot_w = WIDTH - LEFT - RIGHT;
    let bar_w = plot_w / shown.len().max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart latency" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape::html(title)
    );
    value_axis(&mut s, &ticks, plot_top, plot_bottom);
    for (i, c) in shown.iter().enumerate() {
        let x = LEFT + i as f64 * bar_w;
        if *c > 0 {
            let bh = (*c as f64 / top_value * plot_h).max(1.0);
            let _ = write!(
                s,
                r##"<rect class="hbar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#4c6ef5"><title>{} – {}: {c}</title></rect>"##,
                x + 1.0,
                plot_bottom - bh,
                (bar_w - 2.0).max(1.0),
                bh,
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
                r##"<text x="{:.1}" y="{:.1}" class="tick xtick" text-anchor="middle">{}</text>"##,
                x,
                plot_bottom + 14.0,
                escape::html(&readable::micros(edge))
            );
        }
    }
    // Percentile markers, placed by the bucket they fall in (log axis);
    // each label on its own row of the band, turned left near the right
    // edge so it stays inside the chart.
    for (row, (label, q)) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]
        .into_iter()
        .enumerate()
    {
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
        let text_y = TOP + row as f64 * 15.0;
        let (text_x, anchor) = if x > WIDTH - RIGHT - 110.0 {
            (x - 3.0, "end")
        } else {
            (x + 3.0, "start")
        };
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{plot_bottom:.1}" class="marker"/><text x="{text_x:.1}" y="{text_y:.1}" class="marker-label" text-anchor="{anchor}">{label} {}</text>"##,
            text_y + 3.0,
            escape::html(&readable::micros(v)),
        );
    }
    s.push_str("</svg>");
    s
}

/// A span of time as an axis label, exact for the widths ticks use:
/// `20 ms`, `1.5 s`, `1 min 20 s`, `1 h 20 min`, `2 d 6 h`.
pub fn span_label(us: i64) -> String {
    let trim = |v: f64| {
        let t = format!("{v:.1}");
        t.strip_suffix(".0").map(str::to_string).unwrap_or(t)
    };
    let two = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big} {big_unit}")
        } else {
            format!("{big} {big_unit} {small} {small_unit}")
        }
    };
    const S: i64 = 1_000_000;
    if us < S {
        format!("{} ms", trim(us as f64 / 1e3))
    } else if us < 60 * S {
        format!("{} s", trim(us as f64 / 1e6))
    } else if us < 3_600 * S {
        two(us / (60 * S), "min", (us % (60 * S)) / S, "s")
    } else if us < 86_400 * S {
        two(us / (3_600 * S), "h", (us % (3_600 * S)) / (60 * S), "min")
    } else {
        two(
            us / (86_400 * S),
            "d",
            (us % (86_400 * S)) / (3_600 * S),
            "h",
        )
    }
}

/// Columns the timeline is drawn with at most.
pub const MAX_COLUMNS: usize = 240;

/// Exchanges over time, stacked by verdict, one column per
/// [`Columns::width_us`] (chosen from the run's length: milliseconds for a
/// short run, minutes for a long one); a column's height is the exchanges
/// that started in it.
pub fn timeline(columns: &Columns) -> String {
    let counts = &columns.counts;
    let n = counts.len().max(1);
    let max = counts
        .iter()
        .map(|c| c.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let ticks = value_ticks(max as f64, true);
    let top_value = ticks.last().copied().unwrap_or(1.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_bottom = HEIGHT - BOTTOM;
    let plot_h = plot_bottom - TOP;
    let col_w = plot_w / n as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart timeline" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="exchanges over time by verdict" xmlns="http://www.w3.org/2000/svg">"#
    );
    value_axis(&mut s, &ticks, TOP, plot_bottom);
    let gap = if col_w > 3.0 { 0.5 } else { 0.0 };
    for (i, stack) in counts.iter().enumerate() {
        let x = LEFT + i as f64 * col_w;
        let mut y = plot_bottom;
        // Problems at the bottom of the stack, where the eye lands first.
        for (kind, count) in stack.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            let h = *count as f64 / top_value * plot_h;
            y -= h;
            let verdict = kind_name(kind);
            let _ = write!(
                s,
                r##"<rect class="col" x="{x:.2}" y="{y:.2}" width="{:.2}" height="{h:.2}" fill="{}"><title>+{}: {count} {verdict}</title></rect>"##,
                (col_w - gap).max(0.3),
                verdict_colour(verdict),
                escape::html(&span_label(i as i64 * columns.width_us)),
            );
        }
    }
    // Time ticks: at most six, on whole multiples of a nice width.
    let total_us = n as i64 * columns.width_us;
    let mut step = columns.width_us;
    while total_us / step > 6 {
        step = coarser(step);
    }
    let mut t = 0;
    while t <= total_us {
        let x = LEFT + t as f64 / total_us as f64 * plot_w;
        let anchor = if t == 0 {
            "start"
        } else if t + step > total_us && x > WIDTH - RIGHT - 30.0 {
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{plot_bottom:.1}" y2="{:.1}" class="axis"/><text x="{x:.1}" y="{:.1}" class="tick xtick" text-anchor="{anchor}">{}</text>"##,
            plot_bottom + 4.0,
            plot_bottom + 15.0,
            if t == 0 {
                "0".to_string()
            } else {
                format!("+{}", span_label(t))
            },
        );
        t += step;
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">one column = {}; height = exchanges that started in it</text>"##,
        LEFT + plot_w / 2.0,
        HEIGHT - 4.0,
        escape::html(&span_label(columns.width_us)),
    );
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
    fn value_ticks_are_placed_at_their_values() {
        assert_eq!(value_ticks(3.0, true), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(value_ticks(1.0, true), vec![0.0, 1.0]);
        assert_eq!(value_ticks(7.0, true), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(value_ticks(41_000.0, true).last(), Some(&60_000.0));
        let fractional = value_ticks(0.3, false);
        assert_eq!(tick_label(fractional[1], fractional[1]), "0.1");
        let mut svg = String::new();
        value_axis(&mut svg, &value_ticks(3.0, true), 0.0, 300.0);
        assert!(svg.contains(r#"data-value="2" data-y="100.0""#), "{svg}");
    }

    #[test]
    fn timeline_adapts_to_short_and_long_runs() {
        let mut short = crate::evidence::timebins::TimeBins::default();
        for i in 0..8 {
            short.add(1_000_000_000 + i * 6_000, "clean");
        }
        let c = short
            .columns(1_000_000_000, 1_000_050_000, MAX_COLUMNS)
            .unwrap();
        let svg = timeline(&c);
        assert!(svg.contains("one column = 1 ms"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 8);
        assert!(svg.contains(">+20 ms<"), "{svg}");
        assert_eq!(span_label(80 * 60_000_000), "1 h 20 min");
        assert_eq!(span_label(80_000_000), "1 min 20 s");
        assert_eq!(span_label(1_500_000), "1.5 s");
        let mut long = crate::evidence::timebins::TimeBins::default();
        for s in 0..1000i64 {
            long.add(s * 1_000_000, "clean");
            long.add(s * 1_000_000 + 1, "clean");
        }
        let c = long.columns(0, 1_000_000_000, MAX_COLUMNS).unwrap();
        let svg = timeline(&c);
        assert!(svg.contains("one column = 10 s"), "{svg}");
        assert!(svg.matches("<rect").count() <= MAX_COLUMNS);
    }
}
