//! The ICAP client (`icaptap client`): sends one OPTIONS, REQMOD or RESPMOD
//! request (RFC 3507 sections 4.8 to 4.10) with a file or a built-in sample,
//! prints the ICAP and HTTP response heads the way `c-icap-client -v` does,
//! then a verdict line a person can read; or, in load mode, drives many
//! requests over keep-alive connections (see [`load`]). The verdict
//! is the observer's (`observe::verdict::classify` on the correlated
//! exchange), so the client and the proxy never disagree on what an answer
//! means.

mod exchange;
pub mod load;
mod request;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use icap_codec::{EntityKind, Headers, ResponseHead, Severity, Side};

pub use exchange::{Answer, ClientError, IcapConnection, MAX_KEPT_BODY};
pub use request::{build_request, BuiltRequest, IcapMethod, IcapTarget, RequestSpec, ICAP_PORT};

use load::{run_load, LoadConfig, LoadStop};

pub use crate::observe::verdict::Verdict;
use crate::observe::verdict::{block_reason, threat_names};
use crate::output::terminal::{notice, say, sayln};

use super::sample::Sample;
use crate::units::parse_duration;

/// Exit status when the sensor answered with an ICAP error.
pub const EXIT_ICAP_ERROR: u8 = 1;
/// Exit status when there was no answer (cannot connect, closed, reset,
/// silent) or the command line was wrong.
pub const EXIT_NO_ANSWER: u8 = 2;

/// `icaptap client`: one request, or load mode.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The service, e.g. icap://127.0.0.1:1344/av/respmod.
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
    let target = IcapTarget::parse(&args.uri).ok_or_else(|| {
        format!(
            "{:?} is not an ICAP URI like icap://127.0.0.1:1344/av/respmod",
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
    let load = args.concurrency.is_some() || args.count.is_some() || args.duration.is_some();
    runtime.block_on(async {
        if load {
            load_mode(&args, &spec).await
        } else {
            single(&args, &spec).await
        }
    })
}

async fn load_mode(args: &ClientArgs, spec: &RequestSpec) -> ExitCode {
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
    };
    sayln!(
        "load: {} {} to {} ({} body bytes, preview {}), concurrency {}, {}{}",
        spec.method.as_str(),
        spec.url,
        spec.target.uri(),
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

async fn single(args: &ClientArgs, spec: &RequestSpec) -> ExitCode {
    let req = build_request(spec);
    sayln!(
        "ICAP server: {}, service {}, method {}, body {} bytes{}{}",
        spec.target.authority(),
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
        let mut conn = IcapConnection::connect(addr, args.timeout).await?;
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
