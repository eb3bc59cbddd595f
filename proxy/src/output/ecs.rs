//! The records again in Elastic Common Schema shape, for log shippers and
//! SIEMs (`--log-schema ecs`; docs/log-schema.md, "ECS output"): one ECS
//! event per exchange (`exchanges.ecs.jsonl`) and per connection
//! (`connections.ecs.jsonl`), written beside the native files, which stay
//! as they are and are what `report`, `bundle`, `check` and the flight
//! recorder read.
//!
//! A native field goes to its ECS field where ECS has one (`client.ip`,
//! `url.original`, `file.hash.sha256`...); every other native field is kept
//! under `icaptap.` with its native name and value, so nothing of a record
//! is lost and `icaptap.conn` still joins exchanges with connections.
//! Absent values are left out, as ECS events do.

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use super::records::{ConnectionRecord, ExchangeRecord};

/// The ECS version the events follow (`ecs.version`).
pub const ECS_VERSION: &str = "8.11.0";

/// The exchange events file of an ECS run.
pub const EXCHANGES_ECS_FILE: &str = "exchanges.ecs.jsonl";

/// The connection events file of an ECS run.
pub const CONNECTIONS_ECS_FILE: &str = "connections.ecs.jsonl";

/// Which record shapes a run writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogSchema {
    /// The native records only (docs/log-schema.md).
    #[default]
    Icaptap,
    /// The native records, and the same records as ECS events.
    Ecs,
}

/// Native exchange fields that have an ECS place, and so are not repeated
/// under `icaptap.`.
const EXCHANGE_MAPPED: &[&str] = &[
    "ts",
    "ts_us",
    "client",
    "server",
    "verdict",
    "threat",
    "block_reason",
    "http_method",
    "http_url",
    "request_body_sha256",
];

/// Native connection fields that have an ECS place.
const CONNECTION_MAPPED: &[&str] = &[
    "ts",
    "ts_us",
    "ts_close",
    "ts_close_us",
    "client",
    "server",
    "connect_error",
    "bytes_client_to_server",
    "bytes_server_to_client",
    "duration_us",
];

/// `event.outcome` of a verdict: the ICAP transaction's own success (a
/// block or an infection is a scan that worked), not the user's.
fn outcome(verdict: &str) -> &'static str {
    match verdict {
        "clean" | "modified" | "blocked" | "infected" | "options" => "success",
        "error" | "missing" | "malformed" => "failure",
        _ => "unknown",
    }
}

/// `event.type` of a verdict, from the types ECS expects of the
/// `network` category (`allowed`, `denied`, `protocol`...); a failed
/// exchange says so in `event.outcome`, as ECS asks.
fn event_types(verdict: &str) -> Vec<&'static str> {
    let mut types = vec!["protocol"];
    match verdict {
        "clean" | "modified" => types.push("allowed"),
        "blocked" => types.push("denied"),
        // `info` is the type ECS expects of the `malware` category.
        "infected" => types.extend(["denied", "info"]),
        _ => {}
    }
    types
}

/// `ip:port` as ECS endpoint fields (`ip`, `port`, `address`).
fn endpoint(text: &str) -> Value {
    match text.parse::<SocketAddr>() {
        Ok(addr) => json!({"ip": addr.ip().to_string(), "port": addr.port(), "address": text}),
        Err(_) => json!({ "address": text }),
    }
}

/// `network.type` of an `ip:port`.
fn network_type(text: &str) -> Option<&'static str> {
    text.parse::<SocketAddr>()
        .ok()
        .map(|a| if a.is_ipv4() { "ipv4" } else { "ipv6" })
}

/// ECS `url.*` of an encapsulated HTTP request target: `original` always;
/// `full`, `scheme`, `domain`, `port`, `path` and `query` of an absolute URL
/// (`http://host:port/path?query`); `domain` and `port` of a CONNECT
/// authority (`host:port`).
pub fn url_fields(target: &str) -> Value {
    let mut url = Map::new();
    url.insert("original".into(), target.into());
    let (scheme, rest) = match target.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() && !scheme.contains('/') => {
            url.insert("full".into(), target.into());
            url.insert("scheme".into(), scheme.to_ascii_lowercase().into());
            (Some(scheme), rest)
        }
        _ if target.starts_with('/') => {
            let (path, query) = split_query(target);
            url.insert("path".into(), path.into());
            if let Some(q) = query {
                url.insert("query".into(), q.into());
            }
            return Value::Object(url);
        }
        _ => (None, target),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (host_port, None),
        },
        None => match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    if !host.is_empty() {
        url.insert("domain".into(), host.to_ascii_lowercase().into());
    }
    if let Some(port) = port.and_then(|p| p.parse::<u16>().ok()) {
        url.insert("port".into(), port.into());
    }
    if scheme.is_some() {
        let tail = tail.split('#').next().unwrap_or_default();
        let (path, query) = split_query(tail);
        if !path.is_empty() {
            url.insert("path".into(), path.into());
        }
        if let Some(q) = query {
            url.insert("query".into(), q.into());
        }
    }
    Value::Object(url)
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    }
}

/// The native record as a JSON object without the fields `mapped` moved
/// to ECS: what goes under `icaptap.`.
fn native_rest<T: serde::Serialize>(record: &T, mapped: &[&str]) -> Value {
    let mut object = match serde_json::to_value(record) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    for key in mapped {
        object.remove(*key);
    }
    Value::Object(object)
}

/// Removes nulls, empty objects and empty arrays from ECS objects (not
/// from `icaptap.`, which keeps the native record's nulls).
fn prune(value: &mut Value) {
    if let Value::Object(map) = value {
        for (key, v) in map.iter_mut() {
            if key != "icaptap" {
                prune(v);
            }
        }
        map.retain(|key, v| {
            key == "icaptap"
                || !(v.is_null()
                    || v.as_object().is_some_and(Map::is_empty)
                    || v.as_array().is_some_and(Vec::is_empty))
        });
    }
}

/// Distinct non-empty values, in order.
fn related(values: impl IntoIterator<Item = Option<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values.into_iter().flatten() {
        if !v.is_empty() && !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn ip_of(text: &str) -> Option<String> {
    text.parse::<SocketAddr>().ok().map(|a| a.ip().to_string())
}

fn observer() -> Value {
    json!({"product": "icaptap", "vendor": "icaptap", "version": env!("CARGO_PKG_VERSION")})
}

/// One exchange record as an ECS event.
pub fn exchange_event(r: &ExchangeRecord) -> Value {
    let duration_us = r.timings.response_complete_us;
    let threats: Vec<String> = r
        .threat
        .iter()
        .flat_map(|t| t.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    let mut categories = vec!["network"];
    if !threats.is_empty() {
        categories.push("malware");
    }
    let user = r
        .identity
        .authenticated_user
        .clone()
        .or_else(|| r.identity.client_username.clone());
    let message = [
        r.method.as_deref(),
        r.service.as_deref(),
        Some(r.verdict.as_str()),
        r.threat.as_deref(),
        r.http_url.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    let mut event = json!({
        "@timestamp": r.ts,
        "message": message,
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "event",
            "module": "icaptap",
            "dataset": "icaptap.exchanges",
            "category": categories,
            "type": event_types(&r.verdict),
            "action": r.verdict,
            "outcome": outcome(&r.verdict),
            "start": r.ts,
            "end": duration_us.map(|d| super::rfc3339(r.ts_us.saturating_add(d))),
            "duration": duration_us.map(|d| d.saturating_mul(1000)),
            "reason": r.block_reason,
        },
        "client": endpoint(&r.client),
        "server": endpoint(&r.server),
        "source": endpoint(&r.client),
        "destination": endpoint(&r.server),
        "network": {"transport": "tcp", "protocol": "icap", "type": network_type(&r.client)},
        "observer": observer(),
        "url": r.http_url.as_deref().map(url_fields),
        "http": {
            "request": {"method": r.http_method},
            "response": {"status_code": r.http_status_returned.or(r.http_status)},
        },
        "file": r.request_body_sha256.as_ref().map(|sha256| json!({
            "hash": {"sha256": sha256},
            "size": r.request_body_bytes,
        })),
        "threat": (!threats.is_empty()).then(|| json!({
            "software": {"name": threats, "type": "Malware"},
        })),
        "user": {"name": user},
        "user_agent": {"original": r.products.user_agent},
        "related": {
            "ip": related([ip_of(&r.client), ip_of(&r.server), r.identity.client_ip.clone()]),
            "user": related([user.clone()]),
            "hash": related([r.request_body_sha256.clone()]),
        },
        "icaptap": native_rest(r, EXCHANGE_MAPPED),
    });
    prune(&mut event);
    event
}

/// One connection record as an ECS event.
pub fn connection_event(r: &ConnectionRecord) -> Value {
    let failed = r.connect_error.is_some();
    let with_bytes = |text: &str, bytes: u64| {
        let mut e = endpoint(text);
        if let Some(o) = e.as_object_mut() {
            o.insert("bytes".into(), bytes.into());
        }
        e
    };
    let mut event = json!({
        "@timestamp": r.ts,
        "message": format!("ICAP connection {} {} -> {}", r.conn, r.client, r.server),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "event",
            "module": "icaptap",
            "dataset": "icaptap.connections",
            "category": ["network"],
            "type": ["connection", "end"],
            "action": if failed { "connect-failed" } else { "connection-closed" },
            "outcome": if failed { "failure" } else { "success" },
            "start": r.ts,
            "end": r.ts_close,
            "duration": r.duration_us.saturating_mul(1000),
        },
        "error": r.connect_error.as_ref().map(|m| json!({"message": m})),
        "client": with_bytes(&r.client, r.bytes_client_to_server),
        "server": with_bytes(&r.server, r.bytes_server_to_client),
        "source": with_bytes(&r.client, r.bytes_client_to_server),
        "destination": with_bytes(&r.server, r.bytes_server_to_client),
        "network": {
            "transport": "tcp",
            "protocol": "icap",
            "type": network_type(&r.client),
            "bytes": r.bytes_client_to_server.saturating_add(r.bytes_server_to_client),
        },
        "observer": observer(),
        "related": {"ip": related([ip_of(&r.client), ip_of(&r.server)])},
        "icaptap": native_rest(r, CONNECTION_MAPPED),
    });
    prune(&mut event);
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The EICAR exchange of docs/log-schema.md.
    const EICAR: &str = r#"{"schema":1,"ts":"2026-11-28T11:25:49.884082Z","ts_us":1795865149884082,"conn":3,"seq":0,"client":"127.0.0.1:48514","server":"127.0.0.1:37165","method":"RESPMOD","uri":"icap://127.0.0.1:37149/av/respmod","service":"/av/respmod","icap_status":200,"verdict":"infected","threat":"EICAR-Test-File","block_reason":null,"squid_outcome":"ICAP_MOD","anomalies":[],"latency_us":297,"istag":"\"EXAMPLE-2024-01\"","http_method":"GET","http_url":"http://files.example.test/downloads/eicar.com","http_status":200,"http_status_returned":403,"request_body_bytes":68,"response_body_bytes":245,"request_body_sha256":"275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f","preview":{"size":1024,"sent":68,"ieof":true,"continued":false},"identity":{"client_ip":"192.0.2.10","server_ip":null,"client_username":null,"authenticated_user":"WinNT://EXAMPLE/alice","authenticated_groups":null},"products":{"user_agent":"icaptap-client/0.1.0","server":"icaptap-sensor","service":null},"timings":{"request_head_us":0,"request_sent_us":0,"request_complete_us":0,"continue_us":null,"response_head_us":297,"response_complete_us":297},"decode_complete":true}"#;

    /// A connection of docs/log-schema.md, with a connect error added.
    const CONNECTION: &str = r#"{"schema":1,"ts":"2026-11-28T11:25:49.872165Z","ts_us":1795865149872165,"ts_close":"2026-11-28T11:25:49.881628Z","ts_close_us":1795865149881628,"conn":1,"client":"[2001:db8::1]:48494","server":"127.0.0.1:37165","listen":"127.0.0.1:37149","upstream_local":null,"connect_error":"connection refused","bytes_client_to_server":200,"bytes_server_to_client":331,"exchanges":1,"close":{"client":"fin","server":null},"duration_us":9463,"unobserved_bytes":0,"anomalies":[]}"#;

    fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
        path.split('.').fold(v, |v, k| &v[k])
    }

    #[test]
    fn an_infected_exchange_maps_to_ecs_fields() {
        let record: ExchangeRecord = serde_json::from_str(EICAR).unwrap();
        let e = exchange_event(&record);
        let want: &[(&str, Value)] = &[
            ("ecs.version", json!(ECS_VERSION)),
            ("event.kind", json!("event")),
            ("event.dataset", json!("icaptap.exchanges")),
            ("event.category", json!(["network", "malware"])),
            ("event.type", json!(["protocol", "denied", "info"])),
            ("event.action", json!("infected")),
            ("event.outcome", json!("success")),
            ("event.start", json!("2026-11-28T11:25:49.884082Z")),
            ("event.end", json!("2026-11-28T11:25:49.884379Z")),
            ("event.duration", json!(297_000)),
            ("client.ip", json!("127.0.0.1")),
            ("client.port", json!(48514)),
            ("server.ip", json!("127.0.0.1")),
            ("server.port", json!(37165)),
            ("source.port", json!(48514)),
            ("destination.port", json!(37165)),
            ("network.protocol", json!("icap")),
            ("network.type", json!("ipv4")),
            (
                "url.full",
                json!("http://files.example.test/downloads/eicar.com"),
            ),
            ("url.domain", json!("files.example.test")),
            ("url.path", json!("/downloads/eicar.com")),
            ("http.request.method", json!("GET")),
            ("http.response.status_code", json!(403)),
            (
                "file.hash.sha256",
                json!("275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"),
            ),
            ("file.size", json!(68)),
            ("threat.software.name", json!(["EICAR-Test-File"])),
            ("threat.software.type", json!("Malware")),
            ("user.name", json!("WinNT://EXAMPLE/alice")),
            ("user_agent.original", json!("icaptap-client/0.1.0")),
            ("related.ip", json!(["127.0.0.1", "192.0.2.10"])),
            ("observer.product", json!("icaptap")),
            ("icaptap.method", json!("RESPMOD")),
            ("icaptap.icap_status", json!(200)),
            ("icaptap.squid_outcome", json!("ICAP_MOD")),
            ("icaptap.http_status", json!(200)),
            ("icaptap.http_status_returned", json!(403)),
            ("icaptap.conn", json!(3)),
            ("icaptap.identity.server_ip", Value::Null),
        ];
        for (path, value) in want {
            assert_eq!(at(&e, path), value, "{path} in {e}");
        }
        assert_eq!(e["@timestamp"], "2026-11-28T11:25:49.884082Z");
        // Absent ECS values are left out, not null.
        assert!(e["event"].get("reason").is_none(), "{e}");
    }

    #[test]
    fn every_native_field_is_kept_once() {
        let exchange: ExchangeRecord = serde_json::from_str(EICAR).unwrap();
        let connection: ConnectionRecord = serde_json::from_str(CONNECTION).unwrap();
        let cases = [
            (
                serde_json::to_value(&exchange).unwrap(),
                exchange_event(&exchange),
                EXCHANGE_MAPPED,
            ),
            (
                serde_json::to_value(&connection).unwrap(),
                connection_event(&connection),
                CONNECTION_MAPPED,
            ),
        ];
        for (native, ecs, mapped) in cases {
            let kept = ecs["icaptap"].as_object().unwrap();
            for (key, value) in native.as_object().unwrap() {
                if mapped.contains(&key.as_str()) {
                    assert!(!kept.contains_key(key), "{key} is mapped and kept");
                } else {
                    assert_eq!(kept.get(key), Some(value), "{key} lost");
                }
            }
        }
    }

    #[test]
    fn a_failed_connection_maps_to_ecs_fields() {
        let record: ConnectionRecord = serde_json::from_str(CONNECTION).unwrap();
        let e = connection_event(&record);
        let want: &[(&str, Value)] = &[
            ("event.dataset", json!("icaptap.connections")),
            ("event.type", json!(["connection", "end"])),
            ("event.outcome", json!("failure")),
            ("event.duration", json!(9_463_000)),
            ("event.end", json!("2026-11-28T11:25:49.881628Z")),
            ("error.message", json!("connection refused")),
            ("client.ip", json!("2001:db8::1")),
            ("client.port", json!(48494)),
            ("client.bytes", json!(200)),
            ("server.bytes", json!(331)),
            ("network.bytes", json!(531)),
            ("network.type", json!("ipv6")),
            ("icaptap.listen", json!("127.0.0.1:37149")),
            ("icaptap.close.server", Value::Null),
        ];
        for (path, value) in want {
            assert_eq!(at(&e, path), value, "{path} in {e}");
        }
    }

    #[test]
    fn verdicts_map_to_outcomes() {
        for (verdict, outcome_, kind) in [
            ("clean", "success", Some("allowed")),
            ("modified", "success", Some("allowed")),
            ("blocked", "success", Some("denied")),
            ("options", "success", None),
            ("infected", "success", Some("denied")),
            ("error", "failure", None),
            ("missing", "failure", None),
            ("malformed", "failure", None),
            ("unobserved", "unknown", None),
        ] {
            assert_eq!(outcome(verdict), outcome_, "{verdict}");
            assert_eq!(event_types(verdict).get(1).copied(), kind, "{verdict}");
        }
    }

    #[test]
    fn request_targets_map_to_url_fields() {
        let u = url_fields("HTTP://User@Example.TEST:8080/a/b?x=1#frag");
        assert_eq!(u["full"], "HTTP://User@Example.TEST:8080/a/b?x=1#frag");
        assert_eq!(u["scheme"], "http");
        assert_eq!(u["domain"], "example.test");
        assert_eq!(u["port"], 8080);
        assert_eq!(u["path"], "/a/b");
        assert_eq!(u["query"], "x=1");
        let connect = url_fields("upload.example.test:443");
        assert_eq!(connect["domain"], "upload.example.test");
        assert_eq!(connect["port"], 443);
        assert!(connect.get("full").is_none());
        let origin_form = url_fields("/only/path?q");
        assert_eq!(origin_form["path"], "/only/path");
        assert_eq!(origin_form["query"], "q");
        assert!(origin_form.get("domain").is_none());
        let v6 = url_fields("http://[2001:db8::2]:81/");
        assert_eq!(v6["domain"], "2001:db8::2");
        assert_eq!(v6["port"], 81);
    }
}
