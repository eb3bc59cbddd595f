//! The ICAP client (`icaptap client`): sends one OPTIONS, REQMOD or RESPMOD
//! request (RFC 3507 sections 4.8 to 4.10) with a file or a built-in sample,
//! prints the ICAP and HTTP response heads the way `c-icap-client -v` does,
//! then a verdict line a person can read; or, in load mode, drives many
//! requests over keep-alive connections (see [`load`]). The verdict
//! is the observer's (`observe::verdict::classify` on the correlated
//! exchange), so the client and the proxy never disagree on what an answer
//! means. With `--tls` it speaks ICAP over TLS, verifying the sensor's
//! certificate with the proxy's own TLS client (`forward::tls`).

mod exchange;
pub mod load;
mod request;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use icap_codec::{EntityKind, Headers, ResponseHead, Severity, Side};

pub use exchange::{tls_code, Answer, ClientError, IcapConnection, MAX_KEPT_BODY};
pub use request::{build_request, BuiltRequest, IcapMethod, IcapTarget, RequestSpec, ICAP_PORT};

use load::{run_load, LoadConfig, LoadStop};

pub use crate::observe::verdict::Verdict;
use crate::observe::verdict::{block_reason, threat_names};
use crate::output::terminal::{notice, say, sayln};

use super::sample::Sample;
use crate::forward::tls::{tls_client, ClientFlags, TlsClientOptions, TlsUpstream};
use crate::tap::TlsLeg;
use crate::units::parse_duration;

/// Exit status when the sensor answered with an ICAP error.
pub const EXIT_ICAP_ERROR: u8 = 1;
/// Exit status when there was no answer (cannot connect, closed, reset,
/// silent) or the command line was wrong.
pub const EXIT_NO_ANSWER: u8 = 2;

/// `icaptap client`: one request, or load mode.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The service, e.g. icap://127.0.0.1:1344/av/respmod (icaps://HOST/...:
    /// ICAP over TLS, as --tls, port 11344 unless given).
    pub uri: String,
    /// The ICAP method.
    #[arg(long, value_enum, default_value_t = IcapMethod::Respmod)]
    pub method: IcapMethod,
    /// Send this file's content as the HTTP body.
    #[arg(long, conflicts_with = "sample")]
    pub file: Option<PathBuf>,
    /// Send a built-in body (RESPMOD sends `clean` when neither --file nor
    /// --sample is given; REQMOD then sends a GET without body).
    #[arg(long, value_enum)]
    pub sample: Option<Sample>,
    /// Preview size in bytes (the sensor's OPTIONS usually says 1024).
    #[arg(long)]
    pub preview: Option<usize>,
    /// Send `Allow: 204`.
    #[arg(long)]
    pub allow_204: bool,
    /// Send `X-Client-IP`.
    #[arg(long)]
    pub client_ip: Option<String>,
    /// Send `X-Authenticated-User` (base64 of NAME, e.g. WinNT://LAB/alice).
    #[arg(long)]
    pub user: Option<String>,
    /// The encapsulated HTTP URL.
    #[arg(long)]
    pub url: Option<String>,
    /// Time allowed for connecting and for each answer (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write the body of the answer to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Load mode: connections used at once.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Load mode: total requests to send (at least 1).
    #[arg(long, conflicts_with = "duration", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Load mode: how long to send (e.g. 30s, 2m; longer than zero).
    #[arg(long, value_parser = crate::units::parse_nonzero_duration)]
    pub duration: Option<Duration>,
    /// Load mode: requests per second over all connections (default: as
    /// fast as answers come).
    #[arg(long)]
    pub rate: Option<f64>,
    /// ICAP over TLS (ICAPS, usually port 11344): the sensor's certificate
    /// is verified against --tls-ca, or the system's trust store.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// The TLS options of `icaptap client`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// Speak ICAP over TLS to the sensor.
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) the sensor's certificate must chain to
    /// (default: the system's trust store); for a certificate icaptap
    /// generated, its PEM file.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The name to ask the sensor for (SNI) and to verify its certificate
    /// against (default: the host of the URI).
    #[arg(long, value_name = "NAME")]
    pub tls_name: Option<String>,
    /// Do not verify the sensor's certificate (a lab sensor); said on the
    /// console.
    #[arg(long)]
    pub tls_insecure: bool,
}

/// The client's flags, named in TLS errors.
pub const CLIENT_TLS_FLAGS: ClientFlags = ClientFlags {
    ca: "--tls-ca",
    name: "--tls-name",
    insecure: "--tls-insecure",
    identity: ("--tls-cert", "--tls-key"),
};

impl ClientTlsArgs {
    /// The TLS client for `host` (the URI's), or `None` for plain ICAP; an
    /// error names the flag to change.
    pub fn connector(&self, host: &str) -> Result<Option<Arc<TlsUpstream>>, String> {
        if !self.tls {
            for (given, flag) in [
                (self.tls_ca.is_some(), "--tls-ca"),
                (self.tls_name.is_some(), "--tls-name"),
                (self.tls_insecure, "--tls-insecure"),
            ] {
                if given {
                    return Err(format!(
                        "{flag} is given but --tls is not: add --tls, or leave {flag} out"
                    ));
                }
            }
            return Ok(None);
        }
        let options = TlsClientOptions {
            ca: self.tls_ca.as_deref(),
            name: self.tls_name.clone().unwrap_or_else(|| host.to_owned()),
            insecure: self.tls_insecure,
            identity: None,
            keylog: None,
            flags: CLIENT_TLS_FLAGS,
        };
        tls_client(options)
            .map(|c| Some(Arc::new(c)))
            .map_err(|e| e.to_string())
    }
}

/// A TLS leg in one line: version, cipher, and the sensor's certificate.
pub fn tls_line(leg: &TlsLeg) -> String {
    let mut s = format!("TLS: {} {}", leg.version, leg.cipher);
    if let Some(subject) = &leg.peer_subject {
        s.push_str(&format!(", certificate {subject}"));
    }
    if let Some(issuer) = &leg.peer_issuer {
        s.push_str(&format!(" issued by {issuer}"));
    }
    if let Some(until) = &leg.peer_not_after {
        s.push_str(&format!(" until {until}"));
    }
    s.push_str(if leg.verified {
        ", verified"
    } else {
        ", NOT verified (--tls-insecure)"
    });
    s
}

/// Resolves the target to a socket address.
pub async fn resolve(target: &IcapTarget) -> Result<SocketAddr, ClientError> {
    let authority = target.authority();
    let first = tokio::net::lookup_host(authority.as_str())
        .await
        .map_err(|source| ClientError::Connect {
            addr: authority.clone(),
            source,
        })?
        .next();
    first.ok_or_else(|| ClientError::Connect {
        addr: authority,
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address"),
    })
}

/// Sends one request on a new connection and returns its answer.
pub async fn send_once(spec: &RequestSpec, timeout: Duration) -> Result<Answer, ClientError> {
    let addr = resolve(&spec.target).await?;
    let mut conn = IcapConnection::connect(addr, timeout).await?;
    conn.send(&build_request(spec), timeout).await
}

fn spec_from_args(args: &ClientArgs) -> Result<RequestSpec, String> {
    let target = parse_target(&args.uri).ok_or_else(|| {
        format!(
            "{:?} is not an ICAP URI like icap://127.0.0.1:1344/av/respmod \
             (or icaps://127.0.0.1:11344/av/respmod for ICAP over TLS)",
            args.uri
        )
    })?;
    let sample = match (&args.file, args.sample, args.method) {
        (None, None, IcapMethod::Respmod) => Some(Sample::Clean),
        (_, s, _) => s,
    };
    let (body, content_type, file_name) = match (&args.file, sample) {
        (Some(path), _) => {
            let data = std::fs::read(path)
                .map_err(|e| format!("cannot read --file {}: {e}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".to_owned());
            (Some(Bytes::from(data)), "application/octet-stream", name)
        }
        (None, Some(s)) => (Some(s.body()), s.content_type(), s.file_name().to_owned()),
        (None, None) => (None, "application/octet-stream", String::new()),
    };
    let body = match args.method {
        IcapMethod::Options => None,
        _ => body,
    };
    Ok(RequestSpec {
        method: args.method,
        target,
        body,
        content_type: content_type.to_owned(),
        url: args
            .url
            .clone()
            .unwrap_or_else(|| format!("http://origin.test/{file_name}")),
        preview: args.preview,
        allow_204: args.allow_204,
        client_ip: args.client_ip.clone(),
        user: args.user.clone(),
    })
}

/// The default port of ICAP over TLS (`icaps://` without a port).
pub const ICAPS_PORT: u16 = 11344;

/// `icap://...`, or `icaps://...` (ICAP over TLS, port 11344 unless given).
fn parse_target(uri: &str) -> Option<IcapTarget> {
    let Some(rest) = uri.strip_prefix("icaps://") else {
        return IcapTarget::parse(uri);
    };
    let mut target = IcapTarget::parse(&format!("icap://{rest}"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let has_port = if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.contains(':')
    };
    if !has_port {
        target.port = ICAPS_PORT;
    }
    Some(target)
}

/// Runs `icaptap client`.
pub fn client_main(args: ClientArgs) -> ExitCode {
    let spec = match spec_from_args(&args) {
        Ok(s) => s,
        Err(e) => {
            notice!(Error, "icaptap client: {e}");
            return ExitCode::from(EXIT_NO_ANSWER);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            notice!(Error, "icaptap client: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_NO_ANSWER);
        }
    };
    let mut tls_args = args.tls.clone();
    // An icaps:// URI is ICAP over TLS without saying --tls.
    tls_args.tls |= args.uri.starts_with("icaps://");
    let tls = match tls_args.connector(&spec.target.host) {
        Ok(t) => t,
        Err(e) => {
            notice!(Error, "icaptap client: {e}");
            return ExitCode::from(EXIT_NO_ANSWER);
        }
    };
    if tls.as_ref().is_some_and(|t| !t.verify) {
        notice!(
            Warn,
            "icaptap client: the sensor's TLS certificate is NOT verified (--tls-insecure)"
        );
    }
    let load = args.concurrency.is_some() || args.count.is_some() || args.duration.is_some();
    runtime.block_on(async {
        if load {
            load_mode(&args, &spec, tls).await
        } else {
            single(&args, &spec, tls.as_deref()).await
        }
    })
}

async fn load_mode(
    args: &ClientArgs,
    spec: &RequestSpec,
    tls: Option<Arc<TlsUpstream>>,
) -> ExitCode {
    let target = match resolve(&spec.target).await {
        Ok(a) => a,
        Err(e) => {
            notice!(Error, "icaptap client: {e}");
            return ExitCode::from(EXIT_NO_ANSWER);
        }
    };
    let stop = match (args.count, args.duration) {
        (_, Some(d)) => LoadStop::Duration(d),
        (Some(n), None) => LoadStop::Count(n),
        (None, None) => LoadStop::Count(1000),
    };
    let config = LoadConfig {
        target,
        request: build_request(spec),
        concurrency: args.concurrency.unwrap_or(1).max(1),
        stop,
        rate: args.rate,
        timeout: args.timeout,
        tls,
    };
    sayln!(
        "load: {} {} to {}{} ({} body bytes, preview {}), concurrency {}, {}{}",
        spec.method.as_str(),
        spec.url,
        spec.target.uri(),
        if config.tls.is_some() {
            " over TLS"
        } else {
            ""
        },
        config.request.body_len,
        spec.preview.map_or("none".to_owned(), |n| n.to_string()),
        config.concurrency,
        match stop {
            LoadStop::Count(n) => format!("{n} requests"),
            LoadStop::Duration(d) => format!("for {d:?}"),
        },
        args.rate
            .map_or(String::new(), |r| format!(", at {r} req/s")),
    );
    let report = match run_load(config).await {
        Ok(r) => r,
        Err(e) => {
            notice!(Error, "icaptap client: {e}");
            return ExitCode::from(EXIT_NO_ANSWER);
        }
    };
    say!("{report}");
    if report.completed == 0 {
        ExitCode::from(EXIT_NO_ANSWER)
    } else if report.error_count() > 0 {
        ExitCode::from(EXIT_ICAP_ERROR)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_head(out: &mut impl Write, first_line: &str, headers: &Headers) -> std::io::Result<()> {
    writeln!(out, "\t{first_line}")?;
    for h in headers.iter() {
        writeln!(
            out,
            "\t{}: {}",
            String::from_utf8_lossy(&h.name),
            String::from_utf8_lossy(&h.value)
        )?;
    }
    Ok(())
}

fn status_line(head: &ResponseHead) -> String {
    format!(
        "{} {} {}",
        String::from_utf8_lossy(&head.version),
        head.status,
        String::from_utf8_lossy(&head.reason)
    )
}

/// The threat the sensor named in its vendor headers, if any.
pub fn threat_of(answer: &Answer) -> Option<String> {
    threat_names(&answer.head.headers)
}

/// Server-side protocol violations worth flagging next to the verdict: what
/// the decoder and the correlator found (100 after `ieof`, 204 without
/// `Allow: 204`, bad framing...), and a response cut short.
pub fn violations(answer: &Answer) -> Vec<String> {
    let mut out: Vec<String> = answer
        .exchange
        .anomalies
        .iter()
        .filter(|a| a.side == Side::Server && a.severity() >= Severity::Warn)
        .map(|a| format!("{} at byte {}", a.code.as_str(), a.offset))
        .collect();
    if !answer.complete {
        out.push("response cut short by connection close".to_owned());
    }
    out
}

/// `KIND (DETAIL)`: the verdict with what a person needs to trust it.
fn verdict_line(verdict: Verdict, threat: Option<&str>, answer: &Answer) -> String {
    let kind = verdict.as_str();
    let page = answer
        .http
        .iter()
        .find(|h| h.entity == EntityKind::ResHdr)
        .and_then(|h| h.status);
    let detail = match verdict {
        Verdict::Options => "service answered OPTIONS".to_owned(),
        Verdict::Clean if answer.head.status == 204 => "204 No Content: not modified".to_owned(),
        Verdict::Clean => "200 echo: body unchanged".to_owned(),
        Verdict::Modified => "the sensor changed the message".to_owned(),
        Verdict::Blocked => match (block_reason(&answer.head.headers), page) {
            (Some(reason), _) => reason,
            (None, Some(status)) => format!("HTTP {status} page"),
            (None, None) => "the request was answered with a response".to_owned(),
        },
        Verdict::Infected => threat.unwrap_or("threat not named").to_owned(),
        Verdict::Error => format!(
            "ICAP {} {}",
            answer.head.status,
            String::from_utf8_lossy(&answer.head.reason)
        ),
        Verdict::Missing => "no final answer".to_owned(),
        Verdict::Malformed => format!(
            "ICAP {}; the answer breaks the protocol",
            answer.head.status
        ),
        Verdict::Unobserved => "part of the answer was not read".to_owned(),
    };
    format!("{kind} ({detail})")
}

/// Prints an answer like `c-icap-client -v`, then the verdict line.
pub fn print_answer(out: &mut impl Write, answer: &Answer) -> std::io::Result<Verdict> {
    if let Some(interim) = &answer.interim {
        writeln!(out, "ICAP INTERIM:\n\t{}", status_line(interim))?;
    }
    writeln!(out, "ICAP HEADERS:")?;
    print_head(out, &status_line(&answer.head), &answer.head.headers)?;
    for h in &answer.http {
        let first = match (h.status, &h.method, &h.target) {
            (Some(s), _, _) => format!(
                "HTTP/1.1 {s} {}",
                h.reason
                    .as_ref()
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .unwrap_or_default()
            ),
            (None, Some(m), Some(t)) => format!(
                "{} {} HTTP/1.1",
                String::from_utf8_lossy(m),
                String::from_utf8_lossy(t)
            ),
            _ => String::new(),
        };
        let title = match h.entity {
            icap_codec::EntityKind::ReqHdr => "REQMOD HEADERS:",
            _ => "RESPMOD HEADERS:",
        };
        writeln!(out, "{title}")?;
        print_head(out, &first, &h.headers)?;
    }
    if answer.body_len > 0 {
        writeln!(out, "BODY: {} bytes", answer.body_len)?;
    }
    let (verdict, threat) = answer.verdict();
    let problems = violations(answer);
    let ms = answer.latency.as_secs_f64() * 1000.0;
    let said = verdict_line(verdict, threat.as_deref(), answer);
    if problems.is_empty() {
        writeln!(out, "VERDICT: {said} in {ms:.1} ms")?;
    } else {
        writeln!(
            out,
            "VERDICT: {said} in {ms:.1} ms; PROTOCOL VIOLATIONS: {}",
            problems.join("; ")
        )?;
    }
    Ok(verdict)
}

async fn single(args: &ClientArgs, spec: &RequestSpec, tls: Option<&TlsUpstream>) -> ExitCode {
    let req = build_request(spec);
    sayln!(
        "ICAP server: {}{}, service {}, method {}, body {} bytes{}{}",
        spec.target.authority(),
        if tls.is_some() { " (TLS)" } else { "" },
        spec.target.service,
        spec.method.as_str(),
        req.body_len,
        spec.preview
            .map_or(String::new(), |n| format!(", preview {n}")),
        if spec.allow_204 { ", Allow: 204" } else { "" },
    );
    let started = std::time::Instant::now();
    let result = async {
        let addr = resolve(&spec.target).await?;
        let mut conn = IcapConnection::connect_over(addr, tls, args.timeout).await?;
        if let Some(leg) = conn.tls() {
            sayln!("{}", tls_line(leg));
        }
        conn.send(&req, args.timeout).await
    }
    .await;
    let answer = match result {
        Ok(a) => a,
        Err(e) => {
            sayln!(
                "VERDICT: missing ({e}) after {:.1} ms",
                started.elapsed().as_secs_f64() * 1000.0
            );
            return ExitCode::from(EXIT_NO_ANSWER);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let verdict = match print_answer(&mut stdout, &answer) {
        Ok(v) => v,
        Err(e) => {
            notice!(
                Error,
                "icaptap client: cannot write to standard output: {e}"
            );
            return ExitCode::from(EXIT_NO_ANSWER);
        }
    };
    if let Some(path) = &args.output {
        if let Err(e) = std::fs::write(path, &answer.body) {
            notice!(
                Warn,
                "icaptap client: cannot write --output {}: {e}",
                path.display()
            );
        }
    }
    if answer.head.status >= 400 || verdict == Verdict::Error {
        ExitCode::from(EXIT_ICAP_ERROR)
    } else {
        ExitCode::SUCCESS
    }
}
