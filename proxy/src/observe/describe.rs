//! Turns what the observer followed into records: a decoded exchange (and
//! the connection it came from) into its `exchanges.jsonl` record, with the
//! keys DESIGN.md requires plus the facts a support engineer needs
//! (encapsulated HTTP, bodies, preview, identity, the products named in
//! the heads, timings, frames); a finished connection into its
//! `connections.jsonl` record (docs/log-schema.md).

use icap_codec::{EntityKind, Exchange, Headers};

use super::conn::Conn;
use super::finding::Finding;
use super::rules::decode_identity;
use super::verdict::{block_reason, Verdict};
use crate::output::records::{
    AnomalyRecord, CloseRecord, ConnectionRecord, ExchangeRecord, FramesRecord, IdentityRecord,
    PreviewRecord, ProductsRecord, TimingsRecord, MAX_PRODUCT_CHARS, SHA256_SHED,
};
use crate::output::{hex, rfc3339, SCHEMA_VERSION};
use crate::tap::{ConnMeta, Direction, Micros};

/// Converts a finding into its record form.
pub fn anomaly_record(f: &Finding) -> AnomalyRecord {
    AnomalyRecord {
        code: f.code.to_string(),
        side: f.side.as_str().to_string(),
        severity: f.severity.as_str().to_string(),
        detail: f.detail.clone(),
        offset: f.offset,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn identity(headers: Option<&Headers>) -> IdentityRecord {
    let Some(h) = headers else {
        return IdentityRecord::default();
    };
    let plain = |name: &str| h.get(name).map(|v| text(v));
    let decoded = |name: &str| {
        h.get(name)
            .map(|v| decode_identity(v).unwrap_or_else(|| text(v)))
    };
    IdentityRecord {
        client_ip: plain("X-Client-IP"),
        server_ip: plain("X-Server-IP"),
        client_username: plain("X-Client-Username"),
        authenticated_user: decoded("X-Authenticated-User"),
        authenticated_groups: decoded("X-Authenticated-Groups"),
    }
}

/// The first value of header `name`, cut to [`MAX_PRODUCT_CHARS`].
fn product(headers: Option<&Headers>, name: &str) -> Option<String> {
    let value = headers?.get(name)?;
    Some(
        String::from_utf8_lossy(value)
            .chars()
            .take(MAX_PRODUCT_CHARS)
            .collect(),
    )
}

fn products(x: &Exchange) -> ProductsRecord {
    let request = x.request.as_ref().map(|r| &r.headers);
    let response = x.response.as_ref().map(|r| &r.headers);
    ProductsRecord {
        user_agent: product(request, "User-Agent"),
        server: product(response, "Server"),
        service: product(response, "Service"),
    }
}

/// The record of `x` on connection `meta`.
pub fn exchange_record(
    meta: &ConnMeta,
    x: &Exchange,
    verdict: Verdict,
    threat: Option<String>,
    findings: &[Finding],
) -> ExchangeRecord {
    let req = x.request.as_ref();
    let resp = x.response.as_ref();
    let start = x
        .timings
        .request_head
        .or(x.timings.response_head)
        .map_or(meta.opened, |s| s.at);
    let rel = |s: Option<icap_codec::Stamp>| s.map(|s| s.at.saturating_sub(start));
    let t = &x.timings;
    let sent = t.request_sent.or(t.request_complete);
    let latency_us = match (sent, t.response_head) {
        (Some(a), Some(b)) => Some(b.at.saturating_sub(a.at)),
        _ => None,
    };
    let req_hdr = x.request_http(EntityKind::ReqHdr);
    let original = x.request_http(EntityKind::ResHdr);
    let returned = x.response_http(EntityKind::ResHdr);
    let uri = req.map(|r| text(&r.uri));
    let frames = (t.request_head.and_then(|s| s.frame).is_some()
        || t.response_head.and_then(|s| s.frame).is_some())
    .then(|| FramesRecord {
        request: t.request_head.and_then(|s| s.frame),
        response: t.response_head.and_then(|s| s.frame),
    });
    ExchangeRecord {
        schema: SCHEMA_VERSION,
        ts: rfc3339(start),
        ts_us: start,
        conn: meta.id,
        seq: x.seq,
        client: meta.client.to_string(),
        server: meta.server.to_string(),
        method: req.map(|r| r.method.as_str().to_string()),
        service: uri.as_deref().map(super::services::service_path),
        uri,
        icap_status: resp.map(|r| r.status),
        verdict: verdict.as_str().to_string(),
        block_reason: match verdict {
            Verdict::Blocked | Verdict::Infected => resp.and_then(|r| block_reason(&r.headers)),
            _ => None,
        },
        squid_outcome: super::squid_outcome::squid_outcome(
            verdict,
            req.map(|r| r.method.as_str()),
            resp.map(|r| r.status),
            returned.is_some(),
        )
        .map(str::to_owned),
        threat,
        anomalies: findings.iter().map(anomaly_record).collect(),
        latency_us,
        istag: resp.and_then(|r| r.istag.as_ref()).map(|v| text(v)),
        http_method: req_hdr.and_then(|h| h.method.as_ref()).map(|v| text(v)),
        http_url: req_hdr.and_then(|h| h.target.as_ref()).map(|v| text(v)),
        http_status: original.and_then(|h| h.status),
        http_status_returned: returned.and_then(|h| h.status),
        request_body_bytes: x.request_body.bytes,
        response_body_bytes: x.response_body.bytes,
        request_body_sha256: x.request_body.sha256.map(|d| hex(&d)),
        request_body_sha256_skipped: sha256_skipped(x).map(str::to_owned),
        preview: x.preview.map(|p| PreviewRecord {
            size: p.declared,
            sent: p.sent,
            ieof: p.ieof,
            continued: x.continues > 0,
        }),
        identity: identity(req.map(|r| &r.headers)),
        products: products(x),
        timings: TimingsRecord {
            request_head_us: rel(t.request_head),
            request_sent_us: rel(t.request_sent),
            request_complete_us: rel(t.request_complete),
            continue_us: rel(t.continue_),
            response_head_us: rel(t.response_head),
            response_complete_us: rel(t.response_complete),
        },
        frames,
        decode_complete: !x.incomplete,
        // The connection's, put on by the observer.
        tls: None,
    }
}

/// The record of `conn`, over at `now`.
pub(super) fn connection_record(conn: &Conn, now: Micros) -> ConnectionRecord {
    let meta = &conn.meta;
    ConnectionRecord {
        schema: SCHEMA_VERSION,
        ts: rfc3339(meta.opened),
        ts_us: meta.opened,
        ts_close: rfc3339(now),
        ts_close_us: now,
        conn: meta.id,
        client: meta.client.to_string(),
        server: meta.server.to_string(),
        listen: meta.listen.to_string(),
        upstream_local: meta.upstream_local.map(|a| a.to_string()),
        connect_error: conn.connect_error.clone(),
        bytes_client_to_server: conn.request.expected,
        bytes_server_to_client: conn.response.expected,
        exchanges: conn.exchanges,
        close: CloseRecord {
            client: conn.request.closed.map(|c| c.as_str().to_string()),
            server: conn.response.closed.map(|c| c.as_str().to_string()),
        },
        duration_us: now.saturating_sub(meta.opened),
        unobserved_bytes: conn.unobserved,
        undelivered_client_to_server: conn.undelivered[Direction::Request.index()],
        undelivered_server_to_client: conn.undelivered[Direction::Response.index()],
        anomalies: conn.findings.iter().map(anomaly_record).collect(),
        tls: conn.tls.clone(),
    }
}

/// Why a request body with bytes has no SHA-256 (the record field
/// `request_body_sha256_skipped`), or `None` when it has one or no body.
pub fn sha256_skipped(x: &Exchange) -> Option<&'static str> {
    let body = &x.request_body;
    if body.sha256.is_some() || body.bytes == 0 {
        return None;
    }
    Some(if body.sha256_shed {
        SHA256_SHED
    } else {
        "body-incomplete"
    })
}
