//! The side-by-side results: the JSON written under `target/sidebyside/`,
//! the Markdown table (each figure as a value and its ratios to direct and
//! to HAProxy), and the check of the performance targets of issue 9.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::measure::ThroughputRun;
use crate::procstat::Scheduling;

/// The configuration every ratio is taken against: no proxy at all.
pub const DIRECT: &str = "direct";
/// The proxy a user would otherwise insert; the second ratio.
pub const HAPROXY: &str = "haproxy";
/// icaptap with pcap and logs.
pub const ICAPTAP_FULL: &str = "icaptap-full";

/// Picks one percentile of a configuration's results.
type Percentile = fn(&ConfigResults) -> Option<f64>;

/// Percentiles of one latency figure, in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyFigures {
    /// Round trips recorded.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Answers that were the server's `400` refusal (not timed).
    pub refused: u64,
    /// How often the proxy's threads were switched out and moved per round
    /// trip (none for `direct`; a child process that ended before the run
    /// did, socat's per connection, is not counted).
    pub per_round_trip: Option<PerRoundTrip>,
}

/// The proxy's scheduling per round trip of one latency figure: where the
/// time it adds beyond its own work goes on a machine whose wake-ups cost
/// more than the work (docs/performance.md, "Side by side").
#[derive(Clone, Debug, Default, Serialize)]
pub struct PerRoundTrip {
    /// Context switches of every thread, voluntary and preempted.
    pub switches: f64,
    /// Voluntary switches: each is a sleep that some event ended, a
    /// wake-up.
    pub wakeups: f64,
    /// Moves of a thread to another CPU.
    pub migrations: f64,
    /// Wake-ups of threads that do not forward (icaptap's side paths):
    /// zero for a proxy without any.
    pub side_path_wakeups: f64,
    /// Switches of each thread name.
    pub by_thread: BTreeMap<String, f64>,
}

/// Threads of icaptap that forward (the runtime's workers); every other
/// named thread of it is a side path or a helper.
pub const FORWARDING_THREAD: &str = "icaptap-forward";

impl PerRoundTrip {
    /// `sched` spread over `trips` round trips.
    pub fn of(sched: &Scheduling, trips: u64) -> Option<PerRoundTrip> {
        if trips == 0 {
            return None;
        }
        let n = trips as f64;
        let total = sched.total();
        let side_path_wakeups: u64 = sched
            .by_thread
            .iter()
            .filter(|(name, _)| name.starts_with("icaptap-") && name.as_str() != FORWARDING_THREAD)
            .map(|(_, s)| s.voluntary)
            .sum();
        Some(PerRoundTrip {
            switches: (total.voluntary + total.involuntary) as f64 / n,
            wakeups: total.voluntary as f64 / n,
            migrations: total.migrations as f64 / n,
            side_path_wakeups: side_path_wakeups as f64 / n,
            by_thread: sched
                .by_thread
                .iter()
                .filter(|(_, s)| s.voluntary + s.involuntary > 0)
                .map(|(name, s)| (name.clone(), (s.voluntary + s.involuntary) as f64 / n))
                .collect(),
        })
    }
}

impl LatencyFigures {
    /// Reads the percentiles of `hist`.
    pub fn of(hist: &Histogram<u64>) -> LatencyFigures {
        LatencyFigures {
            samples: hist.len(),
            p50_us: hist.value_at_quantile(0.50) as f64,
            p99_us: hist.value_at_quantile(0.99) as f64,
            p999_us: hist.value_at_quantile(0.999) as f64,
            refused: 0,
            per_round_trip: None,
        }
    }
}

/// Throughput over all rounds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ThroughputFigures {
    /// Bytes per second of each round.
    pub rounds_bytes_per_second: Vec<f64>,
    /// Median over rounds.
    pub bytes_per_second: f64,
    /// Median over rounds of the proxy's CPU seconds per GiB.
    pub cpu_seconds_per_gib: Option<f64>,
}

impl ThroughputFigures {
    /// Medians of `runs`.
    pub fn of(runs: &[ThroughputRun]) -> ThroughputFigures {
        let rates: Vec<f64> = runs.iter().map(ThroughputRun::bytes_per_second).collect();
        let cpu: Vec<f64> = runs
            .iter()
            .filter_map(ThroughputRun::cpu_seconds_per_gib)
            .collect();
        ThroughputFigures {
            bytes_per_second: median(&rates),
            rounds_bytes_per_second: rates,
            cpu_seconds_per_gib: (!cpu.is_empty()).then(|| median(&cpu)),
        }
    }
}

/// The median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Resident memory of a proxy process, in bytes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryFigures {
    /// Right after start, before any connection.
    pub at_start: u64,
    /// With 1,000 idle connections.
    pub idle_1000: u64,
    /// Peak with 100 connections sending 1 MiB bodies back to back.
    pub active_100_1mib: u64,
    /// Peak with 100 connections sending 8 MiB bodies back to back.
    pub active_100_8mib: u64,
}

/// Everything measured for one configuration against one server.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConfigResults {
    /// `direct`, `icaptap-full`, `icaptap-no-pcap`, `haproxy`, `socat`.
    pub name: String,
    /// OPTIONS round trips.
    pub options: LatencyFigures,
    /// RESPMOD with a 4 KiB body, round trips.
    pub respmod_4k: LatencyFigures,
    /// OPTIONS round trips with the client, the server and the proxy all on
    /// one CPU (no cross-CPU wake-ups, which decide the free figures on a VM).
    pub options_one_cpu: Option<LatencyFigures>,
    /// RESPMOD 4 KiB round trips, all on one CPU.
    pub respmod_4k_one_cpu: Option<LatencyFigures>,
    /// RESPMOD with 1 MiB bodies over 8 connections.
    pub throughput: ThroughputFigures,
    /// Proxies only, bench echo server only.
    pub memory: Option<MemoryFigures>,
}

/// One latency run of a configuration: its request, where the processes
/// ran, and where its figures are kept.
#[derive(Clone, Copy)]
struct LatencyRun {
    figure: &'static str,
    one_cpu: bool,
    pick: fn(&ConfigResults) -> Option<&LatencyFigures>,
}

impl LatencyRun {
    /// `OPTIONS`, or `OPTIONS, one CPU` followed by `after` when pinned.
    fn label(&self, after: &str) -> String {
        if self.one_cpu {
            format!("{}, one CPU{after}", self.figure)
        } else {
            self.figure.to_owned()
        }
    }
}

/// Every latency run, in the order tables show them.
const LATENCY_RUNS: [LatencyRun; 4] = [
    LatencyRun {
        figure: "OPTIONS",
        one_cpu: false,
        pick: |c| Some(&c.options),
    },
    LatencyRun {
        figure: "RESPMOD 4 KiB",
        one_cpu: false,
        pick: |c| Some(&c.respmod_4k),
    },
    LatencyRun {
        figure: "OPTIONS",
        one_cpu: true,
        pick: |c| c.options_one_cpu.as_ref(),
    },
    LatencyRun {
        figure: "RESPMOD 4 KiB",
        one_cpu: true,
        pick: |c| c.respmod_4k_one_cpu.as_ref(),
    },
];

/// One server's table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerResults {
    /// `bench-echo` or `c-icap`.
    pub server: String,
    /// In the order they were run.
    pub configs: Vec<ConfigResults>,
}

/// One number from a criterion bench of another issue.
#[derive(Clone, Debug, Serialize)]
pub struct CriterionFigure {
    /// Criterion's id (`codec/respmod/...`).
    pub id: String,
    /// Bytes or elements per second at the median time.
    pub per_second: f64,
    /// `bytes` or `elements`.
    pub unit: String,
}

/// c-icap-stretch, the external load generator, through each path.
#[derive(Clone, Debug, Serialize)]
pub struct StretchFigure {
    /// The configuration.
    pub config: String,
    /// Requests it sent.
    pub requests: u64,
    /// Wall time.
    pub seconds: f64,
}

/// The machine and the conditions.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// `nproc`.
    pub nproc: usize,
    /// From /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// 1-minute load average before and after the run.
    pub load_before: f64,
    /// 1-minute load average after the run.
    pub load_after: f64,
}

/// A whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Results {
    /// UTC date and time of the start.
    pub date: String,
    /// Where.
    pub machine: Machine,
    /// The settings of the run, as `name=value`.
    pub settings: BTreeMap<String, String>,
    /// Per server.
    pub servers: Vec<ServerResults>,
    /// The codec and recorder benches, read from target/criterion.
    pub criterion: Vec<CriterionFigure>,
    /// The c-icap-stretch cross-check.
    pub stretch: Vec<StretchFigure>,
    /// Each target and whether it was met.
    pub targets: Vec<TargetCheck>,
    /// Servers whose measurement failed, and why.
    pub failures: Vec<String>,
}

/// One target of issue 9.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    /// What.
    pub target: String,
    /// The measured value, in words.
    pub measured: String,
    /// Met or not.
    pub met: bool,
}

fn us(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn rate(v: f64) -> String {
    format!("{:.0} MiB/s", v / (1u64 << 20) as f64)
}

fn mib(v: u64) -> String {
    format!("{:.1} MiB", v as f64 / (1u64 << 20) as f64)
}

fn ratio(v: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 => format!("{:.2}", v / b),
        _ => "–".to_owned(),
    }
}

impl ServerResults {
    fn config(&self, name: &str) -> Option<&ConfigResults> {
        self.configs.iter().find(|c| c.name == name)
    }

    /// The Markdown table: a row per figure, a column per configuration,
    /// cells `value (÷direct ÷haproxy)`.
    pub fn markdown(&self) -> String {
        type Figure = (
            &'static str,
            fn(&ConfigResults) -> Option<f64>,
            fn(f64) -> String,
        );
        let direct = self.config(DIRECT);
        let mut t = String::new();
        let _ = write!(t, "| figure |");
        for c in &self.configs {
            let _ = write!(t, " {} |", c.name);
        }
        let _ = write!(t, "\n|---|");
        for _ in &self.configs {
            let _ = write!(t, "---|");
        }
        t.push('\n');
        let figures: [Figure; 18] = [
            ("OPTIONS p50", |c| Some(c.options.p50_us), us),
            ("OPTIONS p99", |c| Some(c.options.p99_us), us),
            ("OPTIONS p99.9", |c| Some(c.options.p999_us), us),
            ("RESPMOD 4 KiB p50", |c| Some(c.respmod_4k.p50_us), us),
            ("RESPMOD 4 KiB p99", |c| Some(c.respmod_4k.p99_us), us),
            ("RESPMOD 4 KiB p99.9", |c| Some(c.respmod_4k.p999_us), us),
            (
                "OPTIONS p50, one CPU",
                |c| c.options_one_cpu.as_ref().map(|l| l.p50_us),
                us,
            ),
            (
                "OPTIONS p99, one CPU",
                |c| c.options_one_cpu.as_ref().map(|l| l.p99_us),
                us,
            ),
            (
                "OPTIONS p99.9, one CPU",
                |c| c.options_one_cpu.as_ref().map(|l| l.p999_us),
                us,
            ),
            (
                "RESPMOD 4 KiB p50, one CPU",
                |c| c.respmod_4k_one_cpu.as_ref().map(|l| l.p50_us),
                us,
            ),
            (
                "RESPMOD 4 KiB p99, one CPU",
                |c| c.respmod_4k_one_cpu.as_ref().map(|l| l.p99_us),
                us,
            ),
            (
                "RESPMOD 4 KiB p99.9, one CPU",
                |c| c.respmod_4k_one_cpu.as_ref().map(|l| l.p999_us),
                us,
            ),
            (
                "RESPMOD 1 MiB x 8 conns, bytes/s",
                // Left out when not measured (c-icap over TLS).
                |c| {
                    (!c.throughput.rounds_bytes_per_second.is_empty())
                        .then_some(c.throughput.bytes_per_second)
                },
                rate,
            ),
            (
                "proxy CPU s per GiB",
                |c| c.throughput.cpu_seconds_per_gib,
                |v| format!("{v:.2} s"),
            ),
            (
                "RSS at start",
                |c| c.memory.as_ref().map(|m| m.at_start as f64),
                |v| mib(v as u64),
            ),
            (
                "RSS, 1,000 idle conns",
                |c| c.memory.as_ref().map(|m| m.idle_1000 as f64),
                |v| mib(v as u64),
            ),
            (
                "RSS, 100 x 1 MiB active",
                |c| c.memory.as_ref().map(|m| m.active_100_1mib as f64),
                |v| mib(v as u64),
            ),
            (
                "RSS, 100 x 8 MiB active",
                |c| c.memory.as_ref().map(|m| m.active_100_8mib as f64),
                |v| mib(v as u64),
            ),
        ];
        let haproxy = self.config(HAPROXY);
        for (label, get, show) in figures.iter() {
            if self.configs.iter().all(|c| get(c).is_none()) {
                continue;
            }
            let _ = write!(t, "| {label} |");
            let d = direct.and_then(get);
            let h = haproxy.and_then(get);
            for c in &self.configs {
                match get(c) {
                    Some(v) => {
                        let _ = write!(t, " {} ({} / {}) |", show(v), ratio(v, d), ratio(v, h));
                    }
                    None => {
                        let _ = write!(t, " – |");
                    }
                }
            }
            t.push('\n');
        }
        // Added latency: the configuration's percentile minus direct's; the
        // ratio is to HAProxy's added latency.
        let added: [(&str, Percentile); 8] = [
            ("added OPTIONS p50", |c| Some(c.options.p50_us)),
            ("added OPTIONS p99", |c| Some(c.options.p99_us)),
            ("added RESPMOD 4 KiB p50", |c| Some(c.respmod_4k.p50_us)),
            ("added RESPMOD 4 KiB p99", |c| Some(c.respmod_4k.p99_us)),
            ("added OPTIONS p50, one CPU", |c| {
                c.options_one_cpu.as_ref().map(|l| l.p50_us)
            }),
            ("added OPTIONS p99, one CPU", |c| {
                c.options_one_cpu.as_ref().map(|l| l.p99_us)
            }),
            ("added RESPMOD 4 KiB p50, one CPU", |c| {
                c.respmod_4k_one_cpu.as_ref().map(|l| l.p50_us)
            }),
            ("added RESPMOD 4 KiB p99, one CPU", |c| {
                c.respmod_4k_one_cpu.as_ref().map(|l| l.p99_us)
            }),
        ];
        for (label, get) in added {
            let Some(base) = direct.and_then(get) else {
                continue;
            };
            let _ = write!(t, "| {label} |");
            let h = haproxy.and_then(get).map(|h| h - base);
            for c in &self.configs {
                match get(c) {
                    _ if c.name == DIRECT => {
                        let _ = write!(t, " 0 |");
                    }
                    Some(v) => {
                        let v = v - base;
                        let _ = write!(t, " {} (– / {}) |", us(v), ratio(v, h));
                    }
                    None => {
                        let _ = write!(t, " – |");
                    }
                }
            }
            t.push('\n');
        }
        t.push_str(&self.scheduling_markdown());
        t
    }

    /// The proxies' scheduling per round trip: a row per configuration, a
    /// column per latency figure, cells `switches (side-path wake-ups) /
    /// migrations`. Empty when nothing was counted.
    pub fn scheduling_markdown(&self) -> String {
        let counted = |c: &ConfigResults| {
            LATENCY_RUNS
                .iter()
                .any(|run| (run.pick)(c).is_some_and(|l| l.per_round_trip.is_some()))
        };
        if !self.configs.iter().any(counted) {
            return String::new();
        }
        let mut t = String::from(
            "\nPer round trip, the proxy's threads: context switches (of them, side-path \
             wake-ups) / moves to another CPU. A child process that ended before the run \
             did (socat's, one per connection) is not counted.\n\n| configuration |",
        );
        for run in &LATENCY_RUNS {
            let _ = write!(t, " {} |", run.label(""));
        }
        t.push_str("\n|---|");
        for _ in &LATENCY_RUNS {
            t.push_str("---|");
        }
        t.push('\n');
        for c in self.configs.iter().filter(|c| counted(c)) {
            let _ = write!(t, "| {} |", c.name);
            for run in &LATENCY_RUNS {
                match (run.pick)(c).and_then(|l| l.per_round_trip.as_ref()) {
                    Some(p) => {
                        let _ = write!(
                            t,
                            " {:.2} ({:.2}) / {:.2} |",
                            p.switches, p.side_path_wakeups, p.migrations
                        );
                    }
                    None => t.push_str(" – |"),
                }
            }
            t.push('\n');
        }
        t
    }

    /// Checks the targets of issue 9 against this server's figures.
    pub fn check_targets(&self) -> Vec<TargetCheck> {
        let mut out = Vec::new();
        let (Some(d), Some(h), Some(f)) = (
            self.config(DIRECT),
            self.config(HAPROXY),
            self.config(ICAPTAP_FULL),
        ) else {
            return out;
        };
        let s = &self.server;
        for run in LATENCY_RUNS {
            let what = run.label(",");
            let get = run.pick;
            let (Some(lf), Some(lh), Some(ld)) = (get(f), get(h), get(d)) else {
                continue;
            };
            let added = lf.p50_us - ld.p50_us;
            let h_added = lh.p50_us - ld.p50_us;
            out.push(TargetCheck {
                target: format!(
                    "{s}: {what} added p50 with full recording <= HAProxy's and < 30 µs"
                ),
                measured: format!("{} vs HAProxy {}", us(added), us(h_added)),
                met: added <= h_added.max(0.0) && added < 30.0,
            });
            let added99 = lf.p99_us - ld.p99_us;
            out.push(TargetCheck {
                target: format!("{s}: {what} added p99 with full recording < 150 µs"),
                measured: us(added99),
                met: added99 < 150.0,
            });
        }
        let (tf, th, td) = (
            f.throughput.bytes_per_second,
            h.throughput.bytes_per_second,
            d.throughput.bytes_per_second,
        );
        out.push(TargetCheck {
            target: format!(
                "{s}: throughput with full recording >= HAProxy's and >= 60% of direct"
            ),
            measured: format!(
                "{} = {:.2} x HAProxy, {:.2} x direct",
                rate(tf),
                tf / th.max(1.0),
                tf / td.max(1.0)
            ),
            met: tf >= th && tf >= 0.6 * td,
        });
        if let Some(m) = &f.memory {
            out.push(TargetCheck {
                target: format!("{s}: 1,000 idle connections in < 64 MiB resident"),
                measured: mib(m.idle_1000),
                met: m.idle_1000 < 64 << 20,
            });
            out.push(TargetCheck {
                target: format!("{s}: memory flat in body size (8 MiB bodies within 25% of 1 MiB)"),
                measured: format!("{} vs {}", mib(m.active_100_8mib), mib(m.active_100_1mib)),
                met: (m.active_100_8mib as f64) <= 1.25 * m.active_100_1mib as f64,
            });
        }
        out
    }
}

impl Results {
    /// The whole report in Markdown.
    pub fn markdown(&self) -> String {
        let mut t = String::new();
        let m = &self.machine;
        let _ = writeln!(
            t,
            "Run {} on {} CPUs ({}), Linux {}, load average {:.2} before, {:.2} after.\n",
            self.date, m.nproc, m.cpu_model, m.kernel, m.load_before, m.load_after
        );
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(t, "Settings: {}.\n", settings.join(", "));
        let _ = writeln!(
            t,
            "Cells: value (ratio to direct / ratio to HAProxy). Throughput counts request and answer bytes together.\n"
        );
        for s in &self.servers {
            let _ = writeln!(t, "### Server: {}\n", s.server);
            t.push_str(&s.markdown());
            t.push('\n');
        }
        if !self.stretch.is_empty() {
            let _ = writeln!(t, "### Cross-check: c-icap-stretch against c-icap\n");
            let _ = writeln!(
                t,
                "| path | requests | seconds | requests/s |\n|---|---|---|---|"
            );
            for s in &self.stretch {
                let _ = writeln!(
                    t,
                    "| {} | {} | {:.2} | {:.0} |",
                    s.config,
                    s.requests,
                    s.seconds,
                    s.requests as f64 / s.seconds.max(1e-9)
                );
            }
            t.push('\n');
        }
        if !self.criterion.is_empty() {
            let _ = writeln!(t, "### Codec and recorder benches (criterion, median)\n");
            let _ = writeln!(t, "| bench | throughput |\n|---|---|");
            for c in &self.criterion {
                let shown = if c.unit == "bytes" {
                    rate(c.per_second)
                } else {
                    format!("{:.0} elements/s", c.per_second)
                };
                let _ = writeln!(t, "| {} | {} |", c.id, shown);
            }
            t.push('\n');
        }
        for f in &self.failures {
            let _ = writeln!(t, "Left out: {f}\n");
        }
        let refusals: Vec<String> = self
            .servers
            .iter()
            .flat_map(|s| {
                s.configs.iter().filter_map(move |c| {
                    let n = c.options.refused + c.respmod_4k.refused;
                    (n > 0).then(|| format!("{} via {}: {n}", s.server, c.name))
                })
            })
            .collect();
        if !refusals.is_empty() {
            let _ = writeln!(
                t,
                "Server refusals (`400` + `Connection: close`, not timed, connection renewed): {}.\n",
                refusals.join(", ")
            );
        }
        // The TLS section checks no targets (issue 9's are for plain ICAP).
        if self.targets.is_empty() && self.settings.contains_key("mode") {
            return t;
        }
        let _ = writeln!(
            t,
            "### Targets\n\n| target | measured | met |\n|---|---|---|"
        );
        for c in &self.targets {
            let _ = writeln!(
                t,
                "| {} | {} | {} |",
                c.target,
                c.measured,
                if c.met { "yes" } else { "**no**" }
            );
        }
        t
    }

    /// Writes `results.json` and `results.md` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("results.json"), json)?;
        std::fs::write(dir.join("results.md"), self.markdown())
    }
}

/// Reads the codec and recorder benches' latest criterion results from
/// `criterion_dir` (`target/criterion`).
pub fn read_criterion(criterion_dir: &Path) -> Vec<CriterionFigure> {
    let mut out = Vec::new();
    let Ok(groups) = std::fs::read_dir(criterion_dir) else {
        return out;
    };
    let mut dirs: Vec<_> = groups.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    for group in dirs {
        let name = group.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("codec") || name.starts_with("recorder")) {
            continue;
        }
        let Ok(benches) = std::fs::read_dir(&group) else {
            continue;
        };
        let mut benches: Vec<_> = benches.filter_map(|e| e.ok().map(|e| e.path())).collect();
        benches.sort();
        for bench in benches {
            if let Some(fig) = read_one(&bench.join("new")) {
                out.push(fig);
            }
        }
    }
    out
}

fn read_one(dir: &Path) -> Option<CriterionFigure> {
    let bench: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("benchmark.json")).ok()?).ok()?;
    let est: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("estimates.json")).ok()?).ok()?;
    let ns = est.get("median")?.get("point_estimate")?.as_f64()?;
    let thr = bench.get("throughput")?;
    let (unit, per_iter) = if let Some(b) = thr.get("Bytes") {
        ("bytes", b.as_f64()?)
    } else {
        ("elements", thr.get("Elements")?.as_f64()?)
    };
    Some(CriterionFigure {
        id: bench.get("full_id")?.as_str()?.to_owned(),
        per_second: per_iter / (ns / 1e9),
        unit: unit.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procstat::Switches;

    fn counts(voluntary: u64, involuntary: u64, migrations: u64) -> Switches {
        Switches {
            voluntary,
            involuntary,
            migrations,
        }
    }

    #[test]
    fn switches_are_spread_over_round_trips_and_side_paths_told_apart() {
        let mut sched = Scheduling::default();
        sched
            .by_thread
            .insert(FORWARDING_THREAD.into(), counts(400, 20, 100));
        sched
            .by_thread
            .insert("icaptap-recorder".into(), counts(150, 10, 30));
        sched
            .by_thread
            .insert("icaptap-observer".into(), counts(50, 0, 10));
        sched
            .by_thread
            .insert("icaptap-lines".into(), counts(0, 0, 0));
        let p = PerRoundTrip::of(&sched, 100).unwrap();
        assert_eq!(p.switches, 6.3);
        assert_eq!(p.wakeups, 6.0);
        assert_eq!(p.migrations, 1.4);
        assert_eq!(p.side_path_wakeups, 2.0);
        assert_eq!(p.by_thread["icaptap-recorder"], 1.6);
        assert!(!p.by_thread.contains_key("icaptap-lines"));
        assert!(PerRoundTrip::of(&sched, 0).is_none());
    }

    #[test]
    fn the_scheduling_table_has_a_row_per_counted_proxy_only() {
        let mut sched = Scheduling::default();
        sched.by_thread.insert("haproxy".into(), counts(300, 0, 50));
        let counted = LatencyFigures {
            per_round_trip: PerRoundTrip::of(&sched, 100),
            ..LatencyFigures::default()
        };
        let server = ServerResults {
            server: "bench-echo".into(),
            configs: vec![
                ConfigResults {
                    name: DIRECT.into(),
                    ..ConfigResults::default()
                },
                ConfigResults {
                    name: HAPROXY.into(),
                    options: counted.clone(),
                    options_one_cpu: Some(counted),
                    ..ConfigResults::default()
                },
            ],
        };
        let table = server.scheduling_markdown();
        assert!(
            table.contains("| haproxy | 3.00 (0.00) / 0.50 | – | 3.00 (0.00) / 0.50 | – |"),
            "{table}"
        );
        assert!(!table.contains("| direct |"), "{table}");
        let none = ServerResults {
            configs: vec![ConfigResults::default()],
            ..ServerResults::default()
        };
        assert_eq!(none.scheduling_markdown(), "");
    }
}
