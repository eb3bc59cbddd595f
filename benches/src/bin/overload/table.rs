//! The overload bench's report: a line per step while it runs, the highest
//! rate at which each figure was still 100%, the table of every rung, and
//! the findings (records false, or incomplete at a rate forwarding
//! sustained, with the command that reproduces them).

use std::fmt::Write as _;

use serde_json::Value;

use crate::{Args, DirectStep, IcaptapStep, Ladder, Results, Rung};

fn size_name(body: usize) -> &'static str {
    if body > 4096 {
        "1m"
    } else {
        "4k"
    }
}

fn size_label(body: usize) -> &'static str {
    if body > 4096 {
        "1 MiB"
    } else {
        "4 KiB"
    }
}

fn drop_count(summary: &Value, key: &str) -> u64 {
    summary
        .get("drops")
        .and_then(|d| d.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn evidence(summary: &Value) -> String {
    match summary
        .get("evidence")
        .and_then(|e| e.get("complete"))
        .and_then(Value::as_bool)
    {
        Some(true) => "complete".to_owned(),
        Some(false) => {
            let gaps = summary
                .get("evidence")
                .and_then(|e| e.get("gaps"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            format!("gaps ({gaps})")
        }
        None => "no summary".to_owned(),
    }
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".to_owned()
    } else if part == whole {
        "100%".to_owned()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// Whether icaptap's records were one per answered request and all true.
pub fn records_ok(rung: &Rung) -> bool {
    rung.icaptap.records.complete_and_true()
}

/// Whether every answered request got a true `clean` record.
pub fn records_clean(rung: &Rung) -> bool {
    rung.icaptap.records.all_clean(rung.icaptap.client.intact)
}

/// Whether icaptap's capture held every answered exchange whole.
pub fn icaptap_capture_full(rung: &Rung) -> bool {
    rung.icaptap.capture.complete == rung.icaptap.client.intact
}

/// Whether tcpdump's capture held every answered exchange whole.
pub fn tcpdump_capture_full(rung: &Rung) -> bool {
    rung.direct.capture.complete == rung.direct.client.intact
}

/// The highest rate up to which `ok` held at every rung ("none" when it
/// failed at the first); a later rung where it held again is named too.
fn highest(ladder: &Ladder, ok: impl Fn(&Rung) -> bool) -> String {
    let mut best = None;
    let mut broken = false;
    let mut again = Vec::new();
    for rung in &ladder.rungs {
        match (ok(rung), broken) {
            (true, false) => best = Some(rung.rate),
            (false, _) => broken = true,
            (true, true) => again.push(format!("{}", rung.rate)),
        }
    }
    let mut s = best.map_or_else(|| "none".to_owned(), |r| format!("{r}/s"));
    if best.is_some() && !broken {
        s.push_str(" (every rung)");
    }
    if !again.is_empty() {
        let _ = write!(s, "; again at {}", again.join(", "));
    }
    s
}

/// The step's line while the bench runs.
pub fn one_line(direct: &DirectStep, through: &IcaptapStep) -> String {
    format!(
        "direct {}/{} answered, tcpdump capture {} (kernel drops {:?}) | icaptap {}/{} answered, records {} clean {} unobserved {} false {} none {}, drops {}/{} taps, capture {}",
        direct.client.intact,
        direct.client.offered,
        pct(direct.capture.complete, direct.client.intact),
        direct.tcpdump.dropped_by_kernel,
        through.client.intact,
        through.client.offered,
        through.records.records,
        through.records.clean_true,
        through.records.unobserved,
        through.records.false_records,
        through.records.answered_without_record,
        drop_count(&through.summary, "observer_taps"),
        drop_count(&through.summary, "recorder_taps"),
        pct(through.capture.complete, through.client.intact),
    )
}

/// The command that reproduces one rung.
fn reproduce(ladder: &Ladder, rung: &Rung, args: &Args) -> String {
    let size = size_name(ladder.body);
    format!(
        "cargo run --release -p icaptap-benches --bin overload -- --servers {} --sizes {size} --rates-{size} {} --seconds {} --connections {} --keep",
        ladder.server, rung.rate, args.seconds, args.connections
    )
}

/// Records false at any rate, or incomplete at a rate forwarding
/// sustained; a capture complete less far than tcpdump's.
pub fn findings(ladder: &Ladder, args: &Args) -> Vec<String> {
    let mut out = Vec::new();
    for rung in &ladder.rungs {
        let r = &rung.icaptap.records;
        let c = &rung.icaptap.client;
        let at = format!(
            "{} {} at {}/s",
            ladder.server,
            size_label(ladder.body),
            rung.rate
        );
        if r.false_records > 0 {
            out.push(format!(
                "FALSE RECORDS: {at}: {} false records (e.g. {:?}); reproduce: `{}`",
                r.false_records,
                r.false_examples,
                reproduce(ladder, rung, args)
            ));
        }
        if c.intact == c.offered && r.answered_without_record > 0 {
            out.push(format!(
                "RECORDS INCOMPLETE where forwarding answered every request: {at}: {} of {} answered requests have no record; reproduce: `{}`",
                r.answered_without_record,
                c.intact,
                reproduce(ladder, rung, args)
            ));
        }
    }
    let first_fail = |ok: &dyn Fn(&Rung) -> bool| ladder.rungs.iter().position(|r| !ok(r));
    let ours = first_fail(&icaptap_capture_full);
    let theirs = first_fail(&tcpdump_capture_full);
    let shorter = match (ours, theirs) {
        (Some(o), Some(t)) => o < t,
        (Some(_), None) => true,
        _ => false,
    };
    if shorter {
        out.push(format!(
            "CAPTURE: {} {}: icaptap's capture was complete to {}, tcpdump's to {}",
            ladder.server,
            size_label(ladder.body),
            highest(ladder, icaptap_capture_full),
            highest(ladder, tcpdump_capture_full)
        ));
    }
    out
}

/// The whole report.
pub fn markdown(results: &Results) -> String {
    let mut s = String::new();
    let m = &results.machine;
    let _ = writeln!(
        s,
        "## Overload run {}\n\n{} CPUs ({}), kernel {}, 1-minute load average {:.2} before, {:.2} after.\n\nCommand: `{}`\n\nReference capture on the direct path: `{}`\n\nEach step starts requests for {} s on a pool of {} keep-alive connections (open loop), then waits for the last answers.\n",
        results.date, m.nproc, m.cpu_model, m.kernel, m.load_before, m.load_after,
        results.command, results.tcpdump, results.seconds, results.connections
    );
    let _ = writeln!(s, "### Highest rate at which each is 100%\n");
    let _ = writeln!(s, "| server | body | every request answered intact: direct / icaptap | and p99 from schedule <= 250 ms: direct / icaptap | icaptap records complete and true | icaptap records all `clean` | icaptap capture complete | tcpdump capture complete | false records |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for l in &results.ladders {
        let falses: u64 = l
            .rungs
            .iter()
            .map(|r| r.icaptap.records.false_records)
            .sum();
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} | {} / {} | {} | {} | {} | {} | {} |",
            l.server,
            size_label(l.body),
            highest(l, |r| r.direct.client.intact == r.direct.client.offered),
            highest(l, |r| r.icaptap.client.intact == r.icaptap.client.offered),
            highest(l, |r| r.direct.client.sustained),
            highest(l, |r| r.icaptap.client.sustained),
            highest(l, records_ok),
            highest(l, records_clean),
            highest(l, icaptap_capture_full),
            highest(l, tcpdump_capture_full),
            falses
        );
    }
    for l in &results.ladders {
        let _ = writeln!(s, "\n### {}, {} bodies\n", l.server, size_label(l.body));
        let _ = writeln!(s, "| offered/s | load | direct answered | direct p99 | tcpdump capture complete | tcpdump kernel drops | icaptap answered | icaptap p99 | records | clean and true | unobserved | false | answered, no record | drops: observer / recorder taps | evidence | icaptap capture complete |");
        let _ = writeln!(
            s,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &l.rungs {
            let (d, i) = (&r.direct, &r.icaptap);
            let _ = writeln!(
                s,
                "| {} | {:.1} | {}/{} | {} | {} ({}) | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} ({}) |",
                r.rate,
                r.load,
                d.client.intact,
                d.client.offered,
                ms(d.client.p99_us),
                pct(d.capture.complete, d.client.intact),
                d.capture.complete,
                d.tcpdump
                    .dropped_by_kernel
                    .map_or_else(|| "?".to_owned(), |n| n.to_string()),
                i.client.intact,
                i.client.offered,
                ms(i.client.p99_us),
                i.records.records,
                i.records.clean_true,
                i.records.unobserved,
                i.records.false_records,
                i.records.answered_without_record,
                drop_count(&i.summary, "observer_taps"),
                drop_count(&i.summary, "recorder_taps"),
                evidence(&i.summary),
                pct(i.capture.complete, i.client.intact),
                i.capture.complete,
            );
        }
    }
    let _ = writeln!(s, "\n### Findings\n");
    if results.findings.is_empty() {
        let _ = writeln!(s, "None: no false record at any rate, no answered request without a record at a rate forwarding sustained, icaptap's capture complete at least as far as tcpdump's.");
    }
    for f in &results.findings {
        let _ = writeln!(s, "- **{f}**");
    }
    s
}
