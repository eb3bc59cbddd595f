//! Helpers shared by the ops tests: a mock sensor playing the example
//! scenario, requests through icaptap, a tiny HTTP/1.1 GET for the metrics
//! endpoint, and a strict parser of the Prometheus text format.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use icaptap::toolkit::client::{send_once, IcapMethod, IcapTarget, RequestSpec};
use icaptap::toolkit::scenario::Scenario;
use icaptap::toolkit::{Sensor, SensorHandle};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn sensor() -> SensorHandle {
    let text = include_str!("../../../docs/toolkit-scenario.toml");
    let scenario = Scenario::from_toml(text, "docs/toolkit-scenario.toml").unwrap();
    Sensor::bind("127.0.0.1:0".parse().unwrap(), scenario)
        .await
        .unwrap()
        .spawn()
}

/// Sends one request of `method` for `url` through `to`; the answer does not
/// matter (some scenarios answer nothing).
pub async fn request(to: SocketAddr, method: IcapMethod, service: &str, url: &str) {
    let target = IcapTarget {
        host: to.ip().to_string(),
        port: to.port(),
        service: service.to_string(),
    };
    let spec = RequestSpec {
        method,
        url: url.to_string(),
        body: (method != IcapMethod::Options).then(|| Bytes::from_static(b"<html>hello</html>")),
        allow_204: true,
        ..RequestSpec::respmod(target, Bytes::new())
    };
    let _ = send_once(&spec, TIMEOUT).await;
}

/// `GET path` over HTTP/1.1; returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    // The endpoint sends a Content-Length body (no chunking) for these paths.
    assert!(
        head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    (status, body.to_string())
}

/// One sample: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: each family's type, and every sample.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The sum of `name`'s samples whose labels include `with`.
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                with.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    // text starts after '{'
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let key = &rest[..eq];
        if !valid_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v
            .parse::<f64>()
            .map_err(|e| format!("bad value {v:?}: {e}")),
    }
}

/// Parses the text format strictly: HELP/TYPE at most once per family and
/// before its samples, known types, valid names and labels, every sample in
/// a declared family, no duplicate series, and a final newline.
pub fn parse_prometheus(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut e = Exposition::default();
    let mut helped = BTreeSet::new();
    let mut sampled_families = BTreeSet::new();
    let mut series = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts
                .next()
                .ok_or_else(|| at("comment without a name".into()))?;
            let arg = parts
                .next()
                .ok_or_else(|| at("comment without text".into()))?;
            if !valid_name(name) {
                return Err(at(format!("bad metric name {name}")));
            }
            if sampled_families.contains(name) {
                return Err(at("HELP/TYPE after the family's samples".into()));
            }
            match kind {
                "HELP" if !helped.insert(name.to_string()) => {
                    return Err(at("second HELP".into()));
                }
                "HELP" => {}
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(at(format!("unknown type {arg}")));
                    }
                    if e.types.insert(name.to_string(), arg.to_string()).is_some() {
                        return Err(at("second TYPE".into()));
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(at(format!("bad metric name {name}")));
        }
        let (labels, rest) = if let Some(r) = line[name_end..].strip_prefix('{') {
            parse_labels(r).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp".into()))?;
        }
        let family = if e.types.contains_key(name) {
            name.to_string()
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|f| {
                    e.types
                        .get(*f)
                        .is_some_and(|t| t == "histogram" || t == "summary")
                })
                .map(str::to_string)
                .ok_or_else(|| at("sample before its TYPE line".into()))?
        };
        sampled_families.insert(family);
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("duplicate series".into()));
        }
        e.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(e)
}

/// The standard process families every Prometheus client exposes, which
/// keep their own names.
pub const PROCESS_FAMILIES: [&str; 6] = [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

/// icaptap's naming rules on top of the format: the `icaptap_` prefix
/// (but for the standard [`PROCESS_FAMILIES`]),
/// `_total` counters, `_seconds` histograms, cumulative buckets ending in
/// `+Inf` equal to `_count`.
pub fn check_icaptap_naming(e: &Exposition) -> Result<(), String> {
    for (name, kind) in &e.types {
        if !name.starts_with("icaptap_") && !PROCESS_FAMILIES.contains(&name.as_str()) {
            return Err(format!("{name} lacks the icaptap_ prefix"));
        }
        if kind == "counter" && !name.ends_with("_total") {
            return Err(format!("counter {name} does not end in _total"));
        }
        if kind == "histogram" && !name.ends_with("_seconds") {
            return Err(format!("histogram {name} does not end in _seconds"));
        }
        if kind != "counter" && name.ends_with("_total") {
            return Err(format!("{kind} {name} ends in _total"));
        }
        if kind == "histogram" {
            let mut by_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for s in e
                .samples
                .iter()
                .filter(|s| s.name == format!("{name}_bucket"))
            {
                let le = parse_value(s.labels.get("le").ok_or("bucket without le")?)?;
                let mut rest = s.labels.clone();
                rest.remove("le");
                by_series
                    .entry(format!("{rest:?}"))
                    .or_default()
                    .push((le, s.value));
            }
            for (labels, buckets) in by_series {
                let mut last = (f64::NEG_INFINITY, 0.0);
                for b in &buckets {
                    if b.0 <= last.0 || b.1 < last.1 {
                        return Err(format!("{name}{labels}: buckets not increasing"));
                    }
                    last = *b;
                }
                if last.0 != f64::INFINITY {
                    return Err(format!("{name}{labels}: no +Inf bucket"));
                }
                let count = e
                    .samples
                    .iter()
                    .find(|s| {
                        s.name == format!("{name}_count") && format!("{:?}", s.labels) == labels
                    })
                    .ok_or_else(|| format!("{name}{labels}: no _count"))?;
                if count.value != last.1 {
                    return Err(format!("{name}{labels}: +Inf bucket differs from _count"));
                }
            }
        }
    }
    Ok(())
}

/// Lines of a JSON Lines file, parsed.
pub fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls `cond` every 50 ms until it holds or `TIMEOUT` passes.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
