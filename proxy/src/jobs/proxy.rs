//! `icaptap proxy`: the main job. Wires the forwarding path to its side
//! paths (observer, recorder) and the run's output directory, handles
//! SIGINT/SIGTERM/SIGHUP (stop accepting, drain, flush, write summary.json),
//! prints a line per exchange on standard output (`live/`), and shows a
//! status line on a terminal (standard error).
//!
//! Start-up checks happen before anything listens: every option's value is
//! usable, the output directory holds no earlier run, the sensor's name
//! resolves, the ports are free; the output directory is created only once
//! those passed, and removed again if a later step of the start fails.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::capture::annotate::ANNOTATION_QUEUE_CAPACITY;
use crate::capture::{
    self, annotation_channel, RecordArgs, RecordOptions, RecorderHandle, RingHold,
};
use crate::forward::{
    self, CancellationToken, ForwardArgs, ForwardConfig, ForwardCounters, ForwardStats, RouteError,
};
use crate::live::{LinePrinter, LiveArgs, LiveFilterArg, LivePlan, Overflow};
use crate::observe::{self, LiveObserver, ObserveArgs, Observer, ObserverConfig, ObserverMode};
use crate::ops::endpoint::{self, MetricsError};
use crate::ops::metrics::{IncidentCounters, ListenerCounters, LiveSources, RecordMetrics};
use crate::ops::stop::StopWatch;
use crate::ops::{flight, OpsArgs, OpsPlan};
use crate::output::console::{status_line, summary_table};
use crate::output::directory::{out_dir, watch_directory};
use crate::output::ecs::LogSchema;
use crate::output::run::{RunOutput, SharedSummary};
use crate::output::summary::{CaptureStopped, Drops, Forwarded, Summary, SummaryTls};
use crate::output::terminal::{json_notices, notice, say};
use crate::output::writer::{RecordSink, SinkFanout};
use crate::tap::{SidePathThread, TapQueue, TapSinks, DEFAULT_QUEUE_BYTES};
use tokio::task::JoinHandle;

/// Taps the observer's queue holds before the forwarding path starts
/// dropping them (for the observer only).
pub const DEFAULT_OBSERVER_QUEUE: usize = 16 * 1024;

/// Taps the recorder's queue holds before the forwarding path starts
/// dropping them (for the capture only).
pub const DEFAULT_RECORDER_QUEUE: usize = 16 * 1024;

/// Options of `icaptap proxy`.
#[derive(Clone, Debug, clap::Args)]
pub struct ProxyArgs {
    /// Forwarding options.
    #[command(flatten)]
    pub forward: ForwardArgs,
    /// ICAP over TLS on either leg.
    #[command(flatten)]
    pub tls: forward::tls::TlsArgs,
    /// Observer options.
    #[command(flatten)]
    pub observe: ObserveArgs,
    /// Recording options.
    #[command(flatten)]
    pub record: RecordArgs,
    /// Metrics, stop conditions, flight recorder, transparent mode, routes.
    #[command(flatten)]
    pub ops: OpsArgs,
    /// The line per exchange on standard output (-q, -v).
    #[command(flatten)]
    pub live: LiveArgs,
    /// Which exchanges get a line (--filter).
    #[command(flatten)]
    pub lines_filter: LiveFilterArg,
    /// Options from a TOML file.
    #[command(flatten)]
    pub config: crate::config::ConfigFileArg,
    /// Output directory, new or empty: one holding an earlier run is refused,
    /// never written over (default: ./icaptap-YYYYMMDD-HHMMSS). `{time}` in
    /// it is replaced by the start time (YYYYMMDD-HHMMSS), so that every
    /// start of a service gets a directory of its own.
    #[arg(long, env = "ICAPTAP_OUT", value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Record shapes to write: `icaptap` (the native records) or `ecs`
    /// (the native records, and the same as Elastic Common Schema events
    /// in exchanges.ecs.jsonl and connections.ecs.jsonl).
    #[arg(long, env = "ICAPTAP_LOG_SCHEMA", value_enum, default_value_t = LogSchema::Icaptap)]
    pub log_schema: LogSchema,
    /// Taps the observer may fall behind by before it loses some (it never
    /// slows forwarding); at least 64.
    #[arg(long, env = "ICAPTAP_OBSERVER_QUEUE", default_value_t = DEFAULT_OBSERVER_QUEUE, value_name = "TAPS",
          value_parser = parse_queue_taps)]
    pub observer_queue: usize,
    /// Taps the recorder may fall behind by before it loses some (it never
    /// slows forwarding); at least 64.
    #[arg(long, env = "ICAPTAP_RECORDER_QUEUE", default_value_t = DEFAULT_RECORDER_QUEUE, value_name = "TAPS",
          value_parser = parse_queue_taps)]
    pub recorder_queue: usize,
    /// Payload bytes each side path's queue may hold before it loses taps
    /// (bounds memory when a side path falls behind; accepts K, M, G).
    #[arg(long, env = "ICAPTAP_QUEUE_BYTES", default_value = "64M", value_parser = crate::units::parse_size)]
    pub queue_bytes: u64,
    /// Seconds between status lines on a terminal (0: none).
    #[arg(long, env = "ICAPTAP_STATUS_EVERY", default_value = "5s", value_parser = crate::units::parse_duration)]
    pub status_every: Duration,
    /// Stop by itself after this long (e.g. 30m, 2h; longer than zero).
    #[arg(long, env = "ICAPTAP_DURATION", value_name = "DURATION",
          value_parser = crate::units::parse_nonzero_duration)]
    pub duration: Option<Duration>,
}

/// The smallest `--observer-queue` / `--recorder-queue`: a shorter queue
/// loses taps whenever its side path is busy for a moment, and with them
/// most records or most of the capture.
pub const MIN_QUEUE_TAPS: usize = 64;

/// Parses a side path's queue length (at least [`MIN_QUEUE_TAPS`]).
fn parse_queue_taps(text: &str) -> Result<usize, String> {
    let taps: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("`{}` is not a number of taps, e.g. 16384", text.trim()))?;
    if taps < MIN_QUEUE_TAPS {
        return Err(format!(
            "`{taps}` is too short: a queue this short loses taps whenever its side path is busy for a \
             moment; give at least {MIN_QUEUE_TAPS} (default 16384)"
        ));
    }
    Ok(taps)
}

/// Why the proxy could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A forwarding option is unusable.
    #[error(transparent)]
    Config(#[from] forward::ConfigError),
    /// The listening socket could not be opened.
    #[error(transparent)]
    Bind(#[from] forward::ForwardError),
    /// The output directory could not be used.
    #[error(transparent)]
    Output(#[from] crate::output::run::OutputError),
    /// The runtime or a worker thread could not start.
    #[error("cannot start icaptap's workers: {0}")]
    Runtime(#[source] std::io::Error),
    /// The recorder could not start.
    #[error(transparent)]
    Record(#[from] capture::RecordError),
    /// A `--route` is unusable.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// `--log-schema ecs` with rotating or bounded record logs: the ECS
    /// files do not rotate, so they would grow past the bound.
    #[error("--log-schema ecs cannot be combined with --log-rotate-size, --log-rotate-time, --log-keep or --log-ring yet: the ECS files do not rotate and would grow past the bound; bound the native records only (leave --log-schema out and map them when shipping), or leave the log rotation out")]
    EcsWithLogRotation,
    /// A TLS option is unusable.
    #[error(transparent)]
    Tls(#[from] forward::tls::TlsSetupError),
    /// The generated TLS certificate could not be written.
    #[error("cannot write icaptap's TLS certificate to {path}: {source}")]
    TlsCertificate {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A proxy that runs in-process (demo, tests): everything `icaptap proxy`
/// does, started on an existing runtime.
#[derive(Debug)]
pub struct RunningProxy {
    /// The address clients connect to.
    pub listen: SocketAddr,
    /// Every listening address: `listen`, then one per `--route`.
    pub listens: Vec<SocketAddr>,
    /// The metrics endpoint's address, when serving one.
    pub metrics: Option<SocketAddr>,
    /// The output directory.
    pub out: PathBuf,
    /// How to make Wireshark decode ICAP on this run's ports, when one is
    /// not 1344 and the run is recorded (also the capture's comment).
    pub decode_as_hint: Option<String>,
    shutdown: CancellationToken,
    stop_reason: Arc<Mutex<Option<String>>>,
    task: JoinHandle<Result<Summary, ProxyError>>,
}

impl RunningProxy {
    /// Stops accepting, drains, writes every record and summary.json.
    pub async fn stop(self) -> Result<Summary, ProxyError> {
        self.shutdown.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ProxyError::Runtime(std::io::Error::other(e))),
        }
    }

    /// The token that stops this proxy (also cancelled when a stop
    /// condition such as `--max-exchanges` is met).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Why the proxy stopped by itself, if it did (`--max-exchanges`,
    /// `--stop-on`).
    pub fn stop_reason(&self) -> Option<String> {
        self.stop_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Everything a proxy run needs besides the forwarding configuration.
#[derive(Clone, Debug)]
pub struct ProxyPlan {
    /// Forwarding.
    pub forward: ForwardConfig,
    /// Observer timers.
    pub observer: ObserverConfig,
    /// Output directory.
    pub out: PathBuf,
    /// The record shapes written (`--log-schema`).
    pub log_schema: LogSchema,
    /// Observer queue capacity.
    pub observer_queue: usize,
    /// Recording, unless `None` (`--no-pcap`).
    pub record: Option<RecordOptions>,
    /// Recorder queue capacity.
    pub recorder_queue: usize,
    /// Payload bytes each side path's queue may hold.
    pub queue_bytes: u64,
    /// Status line period on a terminal, if any.
    pub status_every: Option<Duration>,
    /// Metrics, stop conditions, flight recorder, transparent mode, routes.
    pub ops: OpsPlan,
    /// One forwarding configuration per `--route` (extra listeners).
    pub routes: Vec<ForwardConfig>,
    /// What the run is called in summary.json and the report (`proxy`, or
    /// `demo` for the demo).
    pub mode: &'static str,
    /// The line per exchange on standard output, unless `None` (`-q`, and
    /// the default of a proxy run in process).
    pub live: Option<LivePlan>,
}

impl ProxyPlan {
    /// A plan with the defaults of `icaptap proxy` (recording on, no status
    /// line, no lines per exchange: a proxy in process prints nothing)
    /// forwarding as `forward` says and writing into `out`.
    pub fn new(forward: ForwardConfig, out: PathBuf) -> ProxyPlan {
        ProxyPlan {
            forward,
            observer: ObserverConfig::default(),
            out,
            log_schema: LogSchema::Icaptap,
            observer_queue: DEFAULT_OBSERVER_QUEUE,
            record: Some(RecordOptions::default()),
            recorder_queue: DEFAULT_RECORDER_QUEUE,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            status_every: None,
            ops: OpsPlan::default(),
            routes: Vec::new(),
            mode: "proxy",
            live: None,
        }
    }
}

/// Starts a proxy on the current runtime; start-up errors are returned
/// before anything listens.
pub async fn start(plan: ProxyPlan) -> Result<RunningProxy, ProxyError> {
    // Refuse an earlier run's directory before anything else, then take
    // the sockets, and only then create the output directory: a start
    // that fails leaves no half-made run behind.
    RunOutput::check(&plan.out)?;
    if matches!(plan.log_schema, LogSchema::Ecs) && plan.ops.logs.enabled() {
        return Err(ProxyError::EcsWithLogRotation);
    }
    let forward_config = plan.forward.clone();
    let listener = forward::bind(&forward_config).await?;
    let listen = listener.local_addr();
    let counters = listener.counters();
    let mut routes = Vec::with_capacity(plan.routes.len());
    for route in &plan.routes {
        let mut route = route.clone();
        route.transparent = forward_config.transparent;
        let bound = forward::bind(&route).await?.sharing_ids_with(&listener);
        routes.push((bound, route));
    }
    let listens: Vec<SocketAddr> = std::iter::once(listen)
        .chain(routes.iter().map(|(l, _)| l.local_addr()))
        .collect();
    let metrics_listener = match plan.ops.metrics {
        Some(addr) => Some(endpoint::bind(addr).await?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let mut output = RunOutput::create_with(&plan.out, plan.ops.logs, plan.log_schema)?;
    let tls = &forward_config.tls;
    if tls.any() {
        let generated = tls.listen.as_ref().and_then(|l| l.generated.as_ref());
        if let Some(cert) = generated {
            let path = plan.out.join(forward::tls::self_signed::CERT_FILE);
            if let Err(source) = std::fs::write(&path, &cert.pem) {
                output.discard();
                return Err(ProxyError::TlsCertificate { path, source });
            }
        }
        output
            .summary()
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tls(SummaryTls {
                client_leg: tls.listen.is_some(),
                sensor_leg: tls.upstream.is_some(),
                sensor_certificate_verified: tls.upstream.as_ref().is_some_and(|u| u.verify),
                generated_certificate_sha256: generated.map(|c| c.sha256.clone()),
            });
    }

    let shutdown = CancellationToken::new();
    let stop_reason = Arc::new(Mutex::new(None));
    let record_metrics = RecordMetrics::default();
    let incidents = Arc::new(IncidentCounters::default());
    let mut sinks_of_records: Vec<Box<dyn RecordSink>> =
        vec![output.take_sink(), Box::new(record_metrics.clone())];
    // The lines are written where the records are, never on the way of a
    // forwarded byte.
    let lines = match plan.live.clone().map(LivePlan::start).transpose() {
        Ok(lines) => lines.map(|(sink, printer)| {
            sinks_of_records.push(Box::new(sink));
            printer
        }),
        Err(e) => {
            output.discard();
            return Err(ProxyError::Runtime(e));
        }
    };
    if plan.ops.stop.any() {
        sinks_of_records.push(Box::new(StopWatch::new(
            plan.ops.stop.clone(),
            stop_reason.clone(),
            shutdown.clone(),
        )));
    }
    // The flight recorder holds the ring's files while an incident's
    // window is open.
    let ring_hold = RingHold::default();
    let incident_writer = plan.ops.flight.clone().map(|options| {
        let (sink, writer) =
            flight::flight_recorder(options, &plan.out, incidents.clone(), ring_hold.clone());
        sinks_of_records.push(Box::new(sink));
        writer
    });

    let (observer_queue, observer_rx) =
        TapQueue::with_budget(plan.observer_queue, plan.queue_bytes);
    let mut observer = Observer::new(
        ObserverMode::Live,
        plan.observer,
        Box::new(SinkFanout(sinks_of_records)),
    );
    let mut recorder = None;
    // The sensors' ports and the listening ones, as bound.
    let icap_ports: Vec<u16> = std::iter::once(forward_config.upstream.port())
        .chain(plan.routes.iter().map(|route| route.upstream.port()))
        .chain(listens.iter().map(SocketAddr::port))
        .collect();
    let decode_as = plan
        .record
        .as_ref()
        .and_then(|_| decode_as_hint(&icap_ports));
    if let Some(mut options) = plan.record.clone() {
        let notes: Vec<String> = [decode_as.clone(), forward_config.tls.describe()]
            .into_iter()
            .flatten()
            .collect();
        options.section_comment = (!notes.is_empty()).then(|| notes.join("\n"));
        if let Some(size) = plan.ops.ring {
            options.rotation = flight::ring_rotation(size);
        }
        if plan.ops.flight.is_some() {
            options.ring_hold = Some(ring_hold.clone());
        }
        let (queue, taps) = TapQueue::with_budget(plan.recorder_queue, plan.queue_bytes);
        let (notes, annotations) = annotation_channel(ANNOTATION_QUEUE_CAPACITY);
        let epoch = Some(output.directory_epoch());
        let handle = match capture::spawn(&plan.out, options, taps, annotations, epoch) {
            Ok(handle) => handle,
            Err(e) => {
                output.discard();
                return Err(e.into());
            }
        };
        observer = observer.with_annotations(Box::new(move |note| {
            notes.try_send(note);
        }));
        recorder = Some((queue, handle));
    }
    let observer_thread = match observe::spawn_live(observer, observer_rx) {
        Ok(thread) => thread,
        Err(e) => {
            // The recorder may have begun its file: let it end, then
            // remove everything this run created.
            if let Some((queue, handle)) = recorder {
                drop(queue);
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
            output.discard();
            return Err(ProxyError::Runtime(e));
        }
    };
    let sinks = TapSinks {
        observer: Some(observer_queue.clone()),
        recorder: recorder.as_ref().map(|(queue, _)| queue.clone()),
    };
    let summary = output.summary();
    tokio::spawn(watch_directory(
        plan.out.clone(),
        output.directory_epoch(),
        shutdown.clone(),
    ));

    // The side paths' figures, read at scrape time.
    let metrics_over = CancellationToken::new();
    let metrics = metrics_listener.map(|socket| {
        let sources = Arc::new(LiveSources {
            forward: std::iter::once((&listener, &forward_config))
                .chain(routes.iter().map(|(l, c)| (l, c)))
                .map(|(l, c)| ListenerCounters {
                    listener: l.local_addr().to_string(),
                    // Transparent mode forwards each connection to where
                    // it was going: no one sensor to name.
                    upstream: match c.transparent {
                        Some(_) => "original-destination".to_string(),
                        None => c.upstream_name.clone(),
                    },
                    counters: l.counters(),
                })
                .collect(),
            observer_drops: observer_queue.drops().clone(),
            recorder_drops: recorder.as_ref().map(|(q, _)| q.drops().clone()),
            recorder: recorder.as_ref().map(|(_, h)| h.counters()),
            records: record_metrics.clone(),
            summary: summary.clone(),
            incidents: incidents.clone(),
            stop_reason: stop_reason.clone(),
            stopping: shutdown.clone(),
            started: Instant::now(),
        });
        tokio::spawn(endpoint::serve(socket, sources, metrics_over.clone()))
    });
    let run_over = CancellationToken::new();
    let incident_task = incident_writer.map(|w| tokio::spawn(w.run(run_over.clone())));

    let status = plan
        .status_every
        .map(|every| spawn_status_line(every, summary, counters.clone(), shutdown.clone()));
    let route_tasks = routes
        .into_iter()
        .map(|(listener, config)| {
            let sinks = sinks.clone();
            let token = shutdown.clone();
            tokio::spawn(async move { forward::serve(listener, &config, sinks, token).await })
        })
        .collect();
    let token = shutdown.clone();
    let forwarding =
        tokio::spawn(async move { forward::serve(listener, &forward_config, sinks, token).await });
    let lifecycle = Lifecycle {
        forwarding,
        routes: route_tasks,
        status,
        observer: (observer_queue, observer_thread),
        recorder,
        incidents: (run_over, incident_task),
        output,
        mode: plan.mode,
        lines,
        metrics: (metrics_over, metrics),
    };
    let out = plan.out.clone();
    let task = tokio::spawn(lifecycle.close());
    Ok(RunningProxy {
        listen,
        listens,
        metrics: metrics_addr,
        out,
        decode_as_hint: decode_as,
        shutdown,
        stop_reason,
        task,
    })
}

/// Prints a status line every `every` until `shutdown`.
fn spawn_status_line(
    every: Duration,
    summary: SharedSummary,
    counters: Arc<ForwardCounters>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0u64;
        let mut interval = tokio::time::interval(every);
        interval.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {
                    let s = summary.snapshot();
                    let rate = (s.exchanges - last) as f64 / every.as_secs_f64();
                    last = s.exchanges;
                    let open = counters.connections_open.load(Ordering::Relaxed);
                    // The terminal may be gone (SIGHUP): never panic on it.
                    use std::io::Write;
                    let _ = writeln!(std::io::stderr(), "{}", status_line(&s, open, rate));
                }
            }
        }
    })
}

/// Everything a running proxy has started, and the one order it stops in
/// ([`Lifecycle::close`]).
struct Lifecycle {
    /// Forwarding on the main listener; it ends once the shutdown token is
    /// cancelled and the open connections are drained.
    forwarding: JoinHandle<ForwardStats>,
    /// Forwarding on each `--route` listener.
    routes: Vec<JoinHandle<ForwardStats>>,
    /// The status line on a terminal.
    status: Option<JoinHandle<()>>,
    /// The observer's queue and thread.
    observer: (TapQueue, SidePathThread<LiveObserver>),
    /// The recorder's queue and thread, unless `--no-pcap`.
    recorder: Option<(TapQueue, RecorderHandle)>,
    /// Ends the flight recorder's incident writer, and that writer.
    incidents: (CancellationToken, Option<JoinHandle<()>>),
    /// The run's output directory.
    output: RunOutput,
    /// What the run is called in summary.json.
    mode: &'static str,
    /// The printer of the lines per exchange.
    lines: Option<LinePrinter>,
    /// Ends the metrics endpoint, and that endpoint.
    metrics: (CancellationToken, Option<JoinHandle<()>>),
}

impl Lifecycle {
    /// Waits for forwarding to stop (the shutdown token is cancelled, the
    /// open connections drained), then stops everything else, each only
    /// once what feeds it is over:
    ///
    /// 1. the observer drains its queue, finishes every connection and its
    ///    records are flushed; its last packet comments are now queued;
    /// 2. the recorder drains its queue and those comments, and closes the
    ///    capture;
    /// 3. the flight recorder writes an incident still in its window, from
    ///    the whole capture;
    /// 4. summary.json is written, with the drop counts of both side paths;
    /// 5. the last lines per exchange are printed (after summary.json: a
    ///    console that does not read cannot keep the run from its summary);
    /// 6. the metrics endpoint, which serves until the summary is final,
    ///    stops.
    async fn close(self) -> Result<Summary, ProxyError> {
        let Lifecycle {
            forwarding,
            routes,
            status,
            observer: (observer_queue, observer_thread),
            recorder,
            incidents: (run_over, incident_task),
            output,
            mode,
            lines,
            metrics: (metrics_over, metrics_task),
        } = self;
        let stats = match forwarding.await {
            Ok(stats) => stats,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let mut forwarded = Forwarded {
            connections: stats.connections_total,
            bytes_client_to_sensor: stats.bytes_client_to_sensor,
            bytes_sensor_to_client: stats.bytes_sensor_to_client,
        };
        for route in routes {
            if let Ok(stats) = route.await {
                log_forward_stats(&stats, "forwarding stopped on a --route listener");
                forwarded.connections += stats.connections_total;
                forwarded.bytes_client_to_sensor += stats.bytes_client_to_sensor;
                forwarded.bytes_sensor_to_client += stats.bytes_sensor_to_client;
            }
        }
        if let Some(status) = status {
            status.abort();
        }
        let observer_drops = observer_queue.drops().clone();
        drop(observer_queue);
        // Sessions are over and every sender is gone: the observer drains
        // its queue, finishes the connections and hands itself back.
        let join = tokio::task::spawn_blocking(move || observer_thread.join());
        if let Ok(Ok(mut observer)) = join.await {
            observer.0.sink_mut().flush();
        }
        // The observer's last packet comments are queued; now the recorder
        // may end.
        let mut drops = Drops {
            observer_taps: observer_drops.taps.load(Ordering::Relaxed),
            observer_bytes: observer_drops.bytes.load(Ordering::Relaxed),
            ..Drops::default()
        };
        if let Some((queue, handle)) = recorder {
            let queue_drops = queue.drops().clone();
            let counters = handle.counters();
            drop(queue);
            if let Ok(recorded) = tokio::task::spawn_blocking(move || handle.join()).await {
                drops.recorder_taps = queue_drops.taps.load(Ordering::Relaxed);
                drops.recorder_bytes = recorded.dropped_bytes + recorded.unwritten_bytes;
                tracing::info!(
                    packets = recorded.packets,
                    bytes_written = recorded.bytes_written,
                    dropped_bytes = recorded.dropped_bytes,
                    unwritten_bytes = recorded.unwritten_bytes,
                    files = recorded.files,
                    write_errors = recorded.write_errors,
                    annotations = recorded.annotations,
                    annotations_dropped = recorded.annotations_dropped,
                    capture_stopped = recorded.capture_stopped,
                    "recording stopped"
                );
            }
            if let Some(stop) = counters.stopped.get() {
                output
                    .summary()
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .capture_stopped(CaptureStopped {
                        reason: stop.reason.to_string(),
                        at: crate::output::rfc3339(stop.at),
                        capture_bytes: stop.capture_bytes,
                        free_bytes: stop.free_bytes,
                        reserve_bytes: stop.reserve_bytes,
                    });
            }
        }
        // The capture is complete: an incident still in its window is
        // written now, from the whole capture.
        run_over.cancel();
        if let Some(incidents) = incident_task {
            let _ = incidents.await;
        }
        log_forward_stats(&stats, "forwarding stopped");
        let summary = output.finish(mode, drops, Some(forwarded));
        if let Some(lines) = lines {
            let _ = tokio::task::spawn_blocking(move || lines.finish()).await;
        }
        metrics_over.cancel();
        if let Some(metrics) = metrics_task {
            let _ = metrics.await;
        }
        Ok(summary?)
    }
}

/// What to tell tshark when ICAP runs on a port other than 1344, the only
/// one it decodes as ICAP by itself: `None` when every port is 1344.
pub fn decode_as_hint(ports: &[u16]) -> Option<String> {
    let options = crate::analyze::tshark_decode_as(ports)?;
    Some(format!(
        "Wireshark decodes ICAP on port 1344 only; read this capture with `tshark {options} -r FILE` (Wireshark: Decode As... ICAP)"
    ))
}

/// The host part of `--upstream` as typed (`sensor.example:11344` ->
/// `sensor.example`, `[::1]:11344` -> `::1`): the sensor's default TLS name.
fn upstream_host(upstream: &str) -> &str {
    let host = match upstream.rsplit_once(':') {
        Some((host, port))
            if port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']')) =>
        {
            host
        }
        _ => upstream,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// What the console says of the run's TLS at start-up.
fn tls_console_lines(tls: &forward::tls::TlsSetup, out: &std::path::Path) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(listen) = &tls.listen {
        match &listen.generated {
            Some(cert) => lines.push(format!(
                "TLS to ICAP clients with a certificate icaptap generated for {} (SHA-256 {}), \
                 written to {}: make the client trust it (Squid: tls-cafile= on the icaps:// service)",
                cert.names.join(", "),
                cert.sha256,
                out.join(forward::tls::self_signed::CERT_FILE).display()
            )),
            None => lines.push("TLS to ICAP clients with --tls-cert".to_owned()),
        }
    }
    if let Some(upstream) = &tls.upstream {
        if upstream.verify {
            lines.push(format!(
                "TLS to the sensor, its certificate verified for {:?}",
                upstream.server_name.to_str()
            ));
        } else {
            lines.push(
                "TLS to the sensor WITHOUT verifying its certificate (--upstream-tls-insecure); \
                 the summary says so"
                    .to_owned(),
            );
        }
    }
    lines
}

/// What a run says at its start about its records' disk use: `--ring`
/// bounds only the capture, so a user who bounded it learns that the
/// records are not bounded, and how to bound them.
fn logs_note(logs: &crate::output::log_rotation::LogRotation, ring: Option<u64>) -> Option<String> {
    match (logs.total, ring) {
        (Some(total), _) => Some(format!(
            "records: at most {} on disk (--log-ring); the oldest are deleted and counted in summary.json",
            crate::evidence::readable::bytes(total)
        )),
        (None, Some(_)) if logs.keep.is_none() => Some(
            "--ring bounds the capture only; the records grow by about 1 KB per exchange \
             (bound them too with --log-ring SIZE)"
                .to_string(),
        ),
        _ => None,
    }
}

/// Runs `icaptap proxy` until SIGINT, SIGTERM, SIGHUP or `--duration`.
pub fn run(args: ProxyArgs) -> Result<Summary, ProxyError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("icaptap-forward")
        .build()
        .map_err(ProxyError::Runtime)?;
    let out = out_dir(args.out.as_deref());
    let ops = args.ops.plan();
    let records_note = logs_note(&ops.logs, ops.ring);
    let routes = args.forward.route_configs()?;
    let mut forward = args.forward.into_config()?;
    forward.tls = args
        .tls
        .setup(forward.listen.ip(), upstream_host(&forward.upstream_name))?;
    let tls_lines = tls_console_lines(&forward.tls, &out);
    let plan = ProxyPlan {
        forward,
        observer: args.observe.config(),
        out: out.clone(),
        log_schema: args.log_schema,
        observer_queue: args.observer_queue,
        record: args.record.options(),
        recorder_queue: args.recorder_queue,
        queue_bytes: args.queue_bytes,
        // The status line is for a person at a terminal, never in JSON.
        status_every: (std::io::stderr().is_terminal()
            && !json_notices()
            && !args.status_every.is_zero())
        .then_some(args.status_every),
        ops,
        routes,
        mode: "proxy",
        live: args.live.plan(
            args.lines_filter.filter.as_ref(),
            Overflow::Drop,
            Some(crate::tap::now_micros()),
        ),
    };
    let duration = args.duration;
    runtime.block_on(async move {
        let proxy = start(plan).await?;
        let signals = StopSignals::register();
        let listens: Vec<String> = proxy.listens.iter().map(ToString::to_string).collect();
        notice!(
            "icaptap: listening on {}, forwarding to the sensor; output in {}",
            listens.join(", "),
            proxy.out.display()
        );
        if let Some(hint) = &proxy.decode_as_hint {
            notice!("icaptap: {hint}");
        }
        for line in &tls_lines {
            notice!("icaptap: {line}");
        }
        if let Some(addr) = proxy.metrics {
            notice!("icaptap: metrics on http://{addr}/metrics (also /healthz, /status)");
        }
        if let Some(note) = &records_note {
            notice!("icaptap: {note}");
        }
        let stopped_by_itself = proxy.shutdown_token();
        let signal = tokio::select! {
            why = signals.wait(duration) => Some(why),
            _ = stopped_by_itself.cancelled() => None,
        };
        // After SIGHUP the terminal may be gone: what is said on it from
        // now on may fail to be written, and must not stop the run from
        // writing its summary and closing its capture (notices never fail).
        let why = proxy
            .stop_reason()
            .or(signal)
            .unwrap_or_else(|| "asked to".to_string());
        notice!("icaptap: stopping ({why}): no new connections; open ones may finish (drain)");
        let summary = proxy.stop().await?;
        // Every end of a run leaves its report beside the records (the
        // report reads the records and summary, never the capture).
        if let Err(e) = crate::evidence::write_report(&out) {
            notice!(
                Warn,
                "icaptap: the report could not be written into {}: {e}; run `icaptap report {}` to try again",
                out.display(),
                out.display()
            );
        }
        say!("{}", summary_table(&summary, &out));
        // The last word of the run: why it ended, after the drain.
        notice!("icaptap: stopped ({why})");
        Ok(summary)
    })
}

/// Logs a listener's forwarding totals, one field per counter (so that
/// `--log-format json` carries numbers, not a struct's debug text).
fn log_forward_stats(stats: &ForwardStats, message: &str) {
    tracing::info!(
        connections_total = stats.connections_total,
        connections_open = stats.connections_open,
        connect_failures = stats.connect_failures,
        bytes_client_to_sensor = stats.bytes_client_to_sensor,
        bytes_sensor_to_client = stats.bytes_sensor_to_client,
        undelivered_bytes = stats.undelivered_bytes,
        resets = stats.resets,
        cut_at_shutdown = stats.cut_at_shutdown,
        idle_closed = stats.idle_closed,
        client_gone_before_connect = stats.client_gone_before_connect,
        fd_limit_hits = stats.fd_limit_hits,
        accept_errors = stats.accept_errors,
        end_taps_lost = stats.end_taps_lost,
        "{message}"
    );
}

/// The signals that end a run: SIGINT, SIGTERM, and SIGHUP (the terminal
/// or SSH session went away: the run ends as on SIGTERM, like tcpdump's).
/// Registered before icaptap says it listens, so that a signal sent from
/// then on always ends the run in order.
struct StopSignals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn register() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
            hangup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// Waits for one of the signals or the end of `duration`; says which,
    /// as the console's reason for stopping.
    async fn wait(mut self, duration: Option<Duration>) -> String {
        async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = next(&mut self.interrupt) => "SIGINT received".to_string(),
            _ = next(&mut self.terminate) => "SIGTERM received".to_string(),
            _ = next(&mut self.hangup) => "SIGHUP received: the terminal or session went away".to_string(),
            _ = timer => format!(
                "--duration {} reached",
                humantime::format_duration(duration.unwrap_or_default())
            ),
        }
    }
}
