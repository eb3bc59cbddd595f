//! The record types written to `exchanges.jsonl` and `connections.jsonl`
//! (docs/log-schema.md). Field names are part of the schema: change them
//! only with [`super::SCHEMA_VERSION`].

use serde::{Deserialize, Serialize};

pub use crate::tap::TlsFacts;

/// One anomaly in a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyRecord {
    /// Stable kebab-case code (docs/anomalies.md).
    pub code: String,
    /// `client` or `server`.
    pub side: String,
    /// `error`, `warn` or `info`.
    pub severity: String,
    /// What was seen.
    pub detail: String,
    /// Byte offset in the causing side's stream, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub offset: Option<u64>,
}

/// The preview facts of an exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewRecord {
    /// `Preview: n` as declared.
    pub size: u64,
    /// Body bytes sent in the preview.
    pub sent: u64,
    /// Whether the preview ended with `ieof`.
    pub ieof: bool,
    /// Whether the server answered `100 Continue`.
    pub continued: bool,
}

/// Identity headers the client sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// `X-Client-IP`.
    pub client_ip: Option<String>,
    /// `X-Server-IP`.
    pub server_ip: Option<String>,
    /// `X-Client-Username`.
    pub client_username: Option<String>,
    /// `X-Authenticated-User`, decoded from base64 when valid.
    pub authenticated_user: Option<String>,
    /// `X-Authenticated-Groups`, decoded from base64 when valid.
    pub authenticated_groups: Option<String>,
}

/// The products each side names in its ICAP heads (RFC 3507 section 4.3:
/// `User-Agent` on requests, `Server` on responses; `Service` in OPTIONS
/// answers, section 4.10.2), cut to [`MAX_PRODUCT_CHARS`] characters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductsRecord {
    /// `User-Agent` of the ICAP request: the ICAP client product.
    pub user_agent: Option<String>,
    /// `Server` of the final ICAP response: the sensor product.
    pub server: Option<String>,
    /// `Service` of the final ICAP response (OPTIONS answers): the
    /// sensor's description of the service.
    pub service: Option<String>,
}

/// Longest product value kept in a record, in characters.
pub const MAX_PRODUCT_CHARS: usize = 200;

/// `request_body_sha256_skipped` of a body whose hashing the observer
/// shed because it was behind on its input.
pub const SHA256_SHED: &str = "shed-under-load";

/// Times of an exchange's steps, in microseconds after the request started
/// (`ts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingsRecord {
    /// The ICAP request head was complete.
    pub request_head_us: Option<u64>,
    /// The request (or its preview) was sent.
    pub request_sent_us: Option<u64>,
    /// The whole request was sent.
    pub request_complete_us: Option<u64>,
    /// `100 Continue` arrived.
    pub continue_us: Option<u64>,
    /// The final response head arrived.
    pub response_head_us: Option<u64>,
    /// The final response ended.
    pub response_complete_us: Option<u64>,
}

/// Capture frames of an exchange (offline analysis only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FramesRecord {
    /// Frame carrying the request head.
    pub request: Option<u64>,
    /// Frame carrying the final response head.
    pub response: Option<u64>,
}

/// One ICAP exchange: a request and its response (`exchanges.jsonl`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    /// Schema version.
    pub schema: u32,
    /// When the request started (RFC 3339).
    pub ts: String,
    /// The same time in microseconds since the UNIX epoch, for programs
    /// (0 in records written before this field existed).
    #[serde(default)]
    pub ts_us: u64,
    /// Connection id.
    pub conn: u64,
    /// Exchange index on the connection, from 0.
    pub seq: u64,
    /// ICAP client `ip:port`.
    pub client: String,
    /// ICAP server `ip:port`.
    pub server: String,
    /// `OPTIONS`, `REQMOD`, `RESPMOD`, another token, or null for a
    /// response without a request.
    pub method: Option<String>,
    /// The ICAP request URI.
    pub uri: Option<String>,
    /// The service: the URI's path, e.g. `/av/respmod`.
    pub service: Option<String>,
    /// Final ICAP status, or null.
    pub icap_status: Option<u16>,
    /// One of clean, modified, blocked, infected, error, missing, malformed,
    /// options, unobserved.
    pub verdict: String,
    /// Threat name(s) the sensor gave, or null.
    pub threat: Option<String>,
    /// The sensor's reason for a block its headers announced
    /// (X-Blocked-Reason, X-Response-Desc), or null (absent in records
    /// written before this field existed).
    #[serde(default)]
    pub block_reason: Option<String>,
    /// The transaction outcome Squid's icap_log gives this exchange
    /// (`%icap::to`: `ICAP_ECHO`, `ICAP_MOD`...), when icaptap can tell it
    /// exactly; null otherwise (absent in records written before this
    /// field existed).
    #[serde(default)]
    pub squid_outcome: Option<String>,
    /// Every anomaly of this exchange.
    pub anomalies: Vec<AnomalyRecord>,
    /// Request complete (or preview sent) to response head, microseconds.
    pub latency_us: Option<u64>,
    /// The ICAP response's ISTag.
    pub istag: Option<String>,
    /// Encapsulated HTTP request method.
    pub http_method: Option<String>,
    /// Encapsulated HTTP request URL.
    pub http_url: Option<String>,
    /// Status of the original encapsulated HTTP response (RESPMOD).
    pub http_status: Option<u16>,
    /// Status of the HTTP response the sensor returned, when it returned one.
    pub http_status_returned: Option<u16>,
    /// De-chunked body bytes the client sent.
    pub request_body_bytes: u64,
    /// De-chunked body bytes the server returned.
    pub response_body_bytes: u64,
    /// SHA-256 (hex) of the de-chunked body the client sent, when seen whole.
    pub request_body_sha256: Option<String>,
    /// Why `request_body_sha256` is null although the request had a body:
    /// `shed-under-load` (the observer was behind on its input and shed
    /// the hashing, the body itself was decoded) or `body-incomplete` (the
    /// body was not seen to its end: bytes lost, or the client sent only a
    /// preview or stopped); null otherwise (absent in records
    /// written before this field existed).
    #[serde(default)]
    pub request_body_sha256_skipped: Option<String>,
    /// Preview facts, when the request declared a preview.
    pub preview: Option<PreviewRecord>,
    /// Identity headers the client sent.
    pub identity: IdentityRecord,
    /// Products named in the ICAP heads (absent in records written before
    /// this field existed).
    #[serde(default)]
    pub products: ProductsRecord,
    /// Step times.
    pub timings: TimingsRecord,
    /// Capture frames (offline analysis).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub frames: Option<FramesRecord>,
    /// False when bytes of this exchange were not seen (observer drop or
    /// capture gap).
    pub decode_complete: bool,
    /// ICAP over TLS: the TLS of the connection's legs (absent on plain
    /// connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFacts>,
}

/// How each side of a connection ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRecord {
    /// How the client's stream ended: fin, reset, timeout, shutdown, or null.
    pub client: Option<String>,
    /// How the server's stream ended: fin, reset, timeout, shutdown, or null.
    pub server: Option<String>,
}

/// One TCP connection, written when it closes (`connections.jsonl`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// Schema version.
    pub schema: u32,
    /// When it opened (RFC 3339).
    pub ts: String,
    /// The same time in microseconds since the UNIX epoch (0 in records
    /// written before this field existed).
    #[serde(default)]
    pub ts_us: u64,
    /// When it ended (RFC 3339).
    pub ts_close: String,
    /// The same time in microseconds since the UNIX epoch (0 in records
    /// written before this field existed).
    #[serde(default)]
    pub ts_close_us: u64,
    /// Connection id.
    pub conn: u64,
    /// ICAP client `ip:port`.
    pub client: String,
    /// ICAP server `ip:port`.
    pub server: String,
    /// The address the client connected to.
    pub listen: String,
    /// icaptap's own address on the sensor leg, when it connected.
    pub upstream_local: Option<String>,
    /// Why the sensor could not be reached, when it could not.
    pub connect_error: Option<String>,
    /// Bytes from client to server.
    pub bytes_client_to_server: u64,
    /// Bytes from server to client.
    pub bytes_server_to_client: u64,
    /// Exchanges on this connection.
    pub exchanges: u64,
    /// How each side ended.
    pub close: CloseRecord,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// Bytes the observer did not see (forwarded all the same).
    pub unobserved_bytes: u64,
    /// Bytes icaptap read from the client (counted in
    /// `bytes_client_to_server`) but could not write to the sensor, which
    /// went away while they were on their way (0 in records written before
    /// this field existed).
    #[serde(default)]
    pub undelivered_client_to_server: u64,
    /// Bytes icaptap read from the sensor (counted in
    /// `bytes_server_to_client`) but could not write to the client, which
    /// went away while they were on their way.
    #[serde(default)]
    pub undelivered_server_to_client: u64,
    /// Anomalies that belong to the connection rather than an exchange.
    pub anomalies: Vec<AnomalyRecord>,
    /// ICAP over TLS: what each leg's handshake settled (absent on plain
    /// connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFacts>,
}
