//! `icaptap demo`: the first-run experience. Starts the mock sensor and the
//! proxy on loopback, sends a realistic mix through them (clean, EICAR, a
//! large file with preview and 100 Continue, a block, a sensor error, a
//! missing verdict, a malformed response), then prints what icaptap saw and
//! where the capture, logs and report are. Everything stays on 127.0.0.1.

use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;

use crate::forward::{ForwardConfig, ForwardError};
use crate::jobs::proxy::{start, ProxyError, ProxyPlan};
use crate::live::{LiveArgs, LiveFilterArg, LivePlan, Overflow};
use crate::observe::ObserverConfig;
use crate::output::console::summary_table;
use crate::output::directory::out_dir;
use crate::output::records::ExchangeRecord;
use crate::output::terminal::{notice, say, sayln};
use crate::toolkit::client::{send_once, IcapMethod, IcapTarget, RequestSpec};
use crate::toolkit::sample::{large_body, Sample};
use crate::toolkit::scenario::Scenario;
use crate::toolkit::Sensor;

/// The scenario the demo's sensor plays: the documented example, so what
/// the demo shows is what docs/toolkit.md explains.
const DEMO_SCENARIO: &str = include_str!("../../../docs/toolkit-scenario.toml");

/// How long a demo request may take before the client gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of `icaptap demo`.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Output directory, new or empty: one holding an earlier run is refused,
    /// never written over (default: ./icaptap-YYYYMMDD-HHMMSS).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The loopback port icaptap listens on (default: a free one), e.g.
    /// to point another ICAP client at the demo.
    #[arg(long)]
    pub port: Option<u16>,
    /// The line per exchange on standard output (-q, -v).
    #[command(flatten)]
    pub live: LiveArgs,
    /// Which exchanges get a line (--filter).
    #[command(flatten)]
    pub lines_filter: LiveFilterArg,
}

/// One request of the demo mix.
struct Step {
    what: &'static str,
    method: IcapMethod,
    service: &'static str,
    url: &'static str,
    body: Option<Bytes>,
    preview: Option<usize>,
}

fn mix() -> Vec<Step> {
    let page = Sample::Clean.body();
    vec![
        Step {
            what: "OPTIONS: what the sensor offers",
            method: IcapMethod::Options,
            service: "/av/respmod",
            url: "",
            body: None,
            preview: None,
        },
        Step {
            what: "a clean page (preview with ieof, 204)",
            method: IcapMethod::Respmod,
            service: "/av/respmod",
            url: "http://www.example.test/clean/index.html",
            body: Some(page.clone()),
            preview: Some(1024),
        },
        Step {
            what: "the EICAR test file",
            method: IcapMethod::Respmod,
            service: "/av/respmod",
            url: "http://files.example.test/downloads/eicar.com",
            body: Some(Sample::Eicar.body()),
            preview: Some(1024),
        },
        Step {
            what: "a 2 MiB download (preview, 100 Continue, echo)",
            method: IcapMethod::Respmod,
            service: "/echo",
            url: "http://files.example.test/echo/installer.iso",
            body: Some(large_body(2 * 1024 * 1024)),
            preview: Some(1024),
        },
        Step {
            what: "an upload the policy blocks (REQMOD)",
            method: IcapMethod::Reqmod,
            service: "/av/reqmod",
            url: "http://upload.example.test/upload/form",
            body: Some(page.clone()),
            preview: None,
        },
        Step {
            what: "the sensor is overloaded (503)",
            method: IcapMethod::Respmod,
            service: "/av/respmod",
            url: "http://www.example.test/error/503",
            body: Some(page.clone()),
            preview: None,
        },
        Step {
            what: "the sensor closes before its verdict",
            method: IcapMethod::Respmod,
            service: "/av/respmod",
            url: "http://www.example.test/close/file.zip",
            body: Some(page.clone()),
            preview: None,
        },
        Step {
            what: "a response with bad Encapsulated offsets",
            method: IcapMethod::Respmod,
            service: "/av/respmod",
            url: "http://www.example.test/malformed/bad-encapsulated-offsets",
            body: Some(page),
            preview: None,
        },
    ]
}

/// Runs `icaptap demo`.
pub fn demo_main(args: DemoArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            notice!(Error, "icaptap demo: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let out = out_dir(args.out.as_deref());
    let live = args.live.plan(
        args.lines_filter.filter.as_ref(),
        Overflow::Drop,
        Some(crate::tap::now_micros()),
    );
    match runtime.block_on(run(out, args.port.unwrap_or(0), live)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            notice!(Error, "icaptap demo: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(out: PathBuf, port: u16, live: Option<LivePlan>) -> Result<(), String> {
    let lines_shown = live.is_some();
    let scenario = Scenario::from_toml(DEMO_SCENARIO, "docs/toolkit-scenario.toml")
        .map_err(|e| e.to_string())?;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let sensor = Sensor::bind(loopback, scenario)
        .await
        .map_err(|e| e.to_string())?
        .spawn();
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut forward = ForwardConfig::new(listen, sensor.addr());
    forward.drain = Duration::from_secs(2);
    let plan = ProxyPlan {
        // Short timers so a stuck exchange shows within the demo.
        observer: ObserverConfig {
            verdict_timeout: Duration::from_secs(3),
            stall_timeout: Duration::from_secs(2),
            eof_wait: Duration::from_secs(5),
            max_pipeline: icap_codec::MAX_OPEN_EXCHANGES,
        },
        mode: "demo",
        live,
        ..ProxyPlan::new(forward, out.clone())
    };
    let proxy = start(plan).await.map_err(|e| match e {
        ProxyError::Bind(ForwardError::AddrInUse { addr }) => format!(
            "cannot listen on {addr}: the port is already in use; stop the other program on it or choose another --port"
        ),
        e => e.to_string(),
    })?;
    sayln!(
        "icaptap demo: mock sensor on {}, icaptap on {} forwarding to it",
        sensor.addr(),
        proxy.listen
    );
    sayln!("sending a mix of requests through icaptap:\n");
    for step in mix() {
        let target = IcapTarget {
            host: proxy.listen.ip().to_string(),
            port: proxy.listen.port(),
            service: step.service.to_string(),
        };
        let spec = RequestSpec {
            method: step.method,
            body: step.body.clone(),
            url: step.url.to_string(),
            preview: step.preview,
            allow_204: true,
            client_ip: Some("192.0.2.10".to_string()),
            user: Some("WinNT://EXAMPLE/alice".to_string()),
            ..RequestSpec::respmod(target, Bytes::new())
        };
        let answer = match send_once(&spec, REQUEST_TIMEOUT).await {
            Ok(a) => format!(
                "ICAP {} {}",
                a.head.status,
                String::from_utf8_lossy(&a.head.reason)
            ),
            Err(e) => format!("no answer ({e})"),
        };
        sayln!("  {:<50} -> {answer}", step.what);
    }
    let summary = proxy.stop().await.map_err(|e| e.to_string())?;
    sensor.shutdown().await;
    if let Err(e) = crate::evidence::write_report(&out) {
        notice!(Warn, "icaptap demo: the report could not be written: {e}");
    }
    // The lines showed each exchange as it ended; with -q the table does.
    if !lines_shown {
        sayln!("\n{}", exchange_table(&out));
    }
    say!("{}", summary_table(&summary, &out));
    sayln!(
        "\nNext: open {}/report.html in a browser, {}/capture.pcapng in Wireshark\n\
         (filter `pkt_comment` for icaptap's notes), read {}/exchanges.jsonl (docs/log-schema.md),\n\
         and pack it all for a ticket with `icaptap bundle {} --redact`.",
        out.display(),
        out.display(),
        out.display(),
        out.display()
    );
    Ok(())
}

/// One line per exchange, as the demo's reader would want to see it.
fn exchange_table(out: &std::path::Path) -> String {
    let text = std::fs::read_to_string(out.join("exchanges.jsonl")).unwrap_or_default();
    let mut table = String::from("  exch  method   verdict    status  url / threat / anomalies\n");
    for line in text.lines() {
        let Ok(x) = serde_json::from_str::<ExchangeRecord>(line) else {
            continue;
        };
        let codes: Vec<&str> = x.anomalies.iter().map(|a| a.code.as_str()).collect();
        let what = x.http_url.clone().or(x.uri.clone()).unwrap_or_default();
        let _ = write!(
            table,
            "  {:<5} {:<8} {:<10} {:<7} {what}",
            format!("{}/{}", x.conn, x.seq),
            x.method.as_deref().unwrap_or("-"),
            x.verdict,
            x.icap_status.map_or("-".to_string(), |s| s.to_string()),
        );
        if let Some(t) = &x.threat {
            let _ = write!(table, "  threat: {t}");
        }
        if !codes.is_empty() {
            let _ = write!(table, "  [{}]", codes.join(", "));
        }
        table.push('\n');
    }
    table
}
