//! The one place where Sightline's parts are built and connected: the store (replaying its log),
//! the query engine, the ingest pipeline, the three servers and the store's schedule
//! ([`sightline_storage::schedule::run`]: flushes, maintenance, the rollup backfill); and the
//! orderly shutdown that lets in-flight requests finish, then flushes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use sightline_model::{Clock, ErrorCode};
use sightline_monitor::Monitor;
use sightline_query::QueryEngine;
use sightline_storage::{OpenReport, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::ServeConfig;
use crate::pipeline::{LogTail, Pipeline};
use crate::self_metrics::SelfMetrics;
use crate::server::{api, otlp_grpc::OtlpGrpc, otlp_http};
use crate::ui;

/// The three bound sockets `serve` answers on.
#[derive(Debug)]
pub struct Listeners {
    pub otlp_grpc: TcpListener,
    pub otlp_http: TcpListener,
    pub api: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses, saying which one failed and why.
    pub async fn bind(config: &ServeConfig) -> anyhow::Result<Self> {
        async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
            TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen for {what} on {addr}; is another process using it? choose another address with {flag}")
            })
        }
        Ok(Self {
            otlp_grpc: bind(config.otlp_grpc, "OTLP/gRPC", "--otlp-grpc").await?,
            otlp_http: bind(config.otlp_http, "OTLP/HTTP", "--otlp-http").await?,
            api: bind(config.listen, "the UI and API", "--listen").await?,
        })
    }
}

/// Sightline's parts, built and connected, before any socket is served: the store (opened, its
/// log replayed), the query engine, the ingest pipeline and the three routers with their
/// middleware. [`serve`] builds one; an in-process test builds one to drive its routers with
/// `oneshot` or to [`App::run`] it on listeners of port 0.
pub struct App {
    store: Store,
    /// The engine the API answers with.
    engine: QueryEngine,
    monitor: Monitor,
    report: OpenReport,
    config: ServeConfig,
    clock: Arc<dyn Clock>,
    api: axum::Router,
    otlp_http: axum::Router,
    otlp_grpc: axum::Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    ready: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    /// `[[scrape]]` targets and their last results.
    scrapes: crate::scrape::Scrapes,
    /// What scraped metrics are stored through.
    pipeline: Pipeline,
}

impl App {
    /// Opens the data folder (replaying its log) and builds every part from `config`.
    pub async fn open(config: ServeConfig, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
        let acceptor = tls_acceptor(&config)?;
        Self::open_with(config, clock, acceptor).await
    }

    /// [`App::open`] with the TLS acceptor already read from `config.tls`.
    async fn open_with(
        config: ServeConfig,
        clock: Arc<dyn Clock>,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) -> anyhow::Result<App> {
        let started = Instant::now();
        let auth = crate::auth::Auth::new(&config.auth, config.tls.is_some(), clock.clone())?;
        let data_dir = config.data_dir.clone();
        let store_options = config.store.clone();
        let open_clock = clock.clone();
        let (store, report) =
            tokio::task::spawn_blocking(move || Store::open(&data_dir, store_options, open_clock))
                .await
                .context("opening the data folder failed")?
                .with_context(|| {
                    format!("cannot open the data folder {}", config.data_dir.display())
                })?;
        info!(
            data_dir = %config.data_dir.display(),
            segments = report.segments,
            wal_files = report.wal_files_replayed,
            records = report.records_replayed,
            torn_tails = report.torn_tails.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "data folder opened"
        );
        if report.segments_without_rollups > 0 {
            info!(
                segments = report.segments_without_rollups,
                "span segments written before rollups existed are rolled up in the background; \
                 until then the pages read spans"
            );
        }
        // Trace lookups consult the segments' trace-id filters in memory; read them in the
        // background now rather than on the first lookup.
        let warm_store = store.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let segments = warm_store.warm_trace_index();
            info!(
                segments,
                bytes = warm_store.stats().trace_index_bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "trace index loaded"
            );
        });
        let engine = QueryEngine::new(store.clone(), config.query.clone())?;
        let monitor = Monitor::open(
            &engine,
            config.monitor.clone(),
            clock.clone(),
            &config.data_dir,
        )
        .context("cannot open the monitor's state")?;
        // Tail sampling keeps whole the traces of services whose alerts fired.
        store.set_sampling_hints(Arc::new(FiringHints(monitor.clone())));
        // SQL rules are planned now: one that cannot run is a config mistake, refused at start.
        sightline_monitor::eval::check_sql_rules(&engine, &config.monitor)
            .await
            .context("invalid configuration")?;
        sightline_monitor::check::plan_checks(&engine, &config.monitor.checks)
            .await
            .context("invalid configuration")?;
        let metrics = Arc::new(SelfMetrics::default());
        let tail = LogTail::default();
        let pipeline = Pipeline::new(store.clone(), clock.clone(), metrics.clone(), tail.clone());
        let ready = Arc::new(AtomicBool::new(false));
        let (stop, stop_rx) = watch::channel(false);
        let scrapes = crate::scrape::Scrapes::new(&config.scrape);

        // One budget of decode permits for both receivers: bodies decoded at once, whatever the
        // protocol, bound the memory decoding takes.
        let decoding = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_decodes));
        let otlp_grpc = OtlpGrpc::router(
            pipeline.clone(),
            config.max_body_bytes as usize,
            sightline_ingest::Intake::new(config.limits, config.redactor.clone()),
            decoding.clone(),
        )
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            crate::auth::require_ingest_grpc,
        ));
        let otlp_http = otlp_http::router(otlp_http::OtlpHttpState {
            pipeline: pipeline.clone(),
            max_body_bytes: config.max_body_bytes,
            intake: sightline_ingest::Intake::new(config.limits, config.redactor.clone()),
            decoding,
        })
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            crate::auth::require_ingest,
        ));
        let api_state = api::ApiState {
            engine,
            store: store.clone(),
            clock: clock.clone(),
            metrics,
            ready: ready.clone(),
            torn_tails_at_start: report.torn_tails.len(),
            memory_budget: crate::health::MemoryBudget::of(&config),
            monitor: monitor.clone(),
            redactor: config.redactor.clone(),
            scrapes: scrapes.clone(),
        };
        let engine = api_state.engine.clone();
        let api = ui::router(ui::UiState {
            // The pages ask as the UI: their queries take turns with the API's.
            api: api::ApiState {
                engine: api_state.engine.for_class(sightline_query::QueryClass::Ui),
                ..api_state.clone()
            },
            tail,
            shutdown: stop_rx,
            auth: auth.clone(),
        })
        .merge(crate::server::monitor_api::router(monitor.clone()))
        .merge(crate::server::changes_api::router(api_state.clone()))
        .merge(crate::server::admin_api::router(api_state.clone()))
        .merge(crate::server::jaeger_api::router(api_state.clone()))
        .merge(crate::server::quality_api::router(api_state.clone()))
        .merge(api::router(api_state))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::require_read,
        ));
        Ok(App {
            store,
            engine,
            monitor,
            report,
            config,
            clock,
            api,
            otlp_http,
            otlp_grpc,
            acceptor,
            ready,
            stop,
            scrapes,
            pipeline,
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The query engine the API answers with (in-process questions share its memory limit,
    /// admission and runtime).
    pub fn engine(&self) -> &QueryEngine {
        &self.engine
    }

    /// The monitor: SLOs, alerts, silences.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// What opening the data folder found.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The UI and API router (port 4319), auth middleware included.
    pub fn api_router(&self) -> axum::Router {
        self.api.clone()
    }

    /// The OTLP/HTTP router (port 4318), auth middleware included.
    pub fn otlp_http_router(&self) -> axum::Router {
        self.otlp_http.clone()
    }

    /// The OTLP/gRPC router (port 4317), auth middleware included.
    pub fn otlp_grpc_router(&self) -> axum::Router {
        self.otlp_grpc.clone()
    }

    /// Serves the three routers on `listeners` until `shutdown` completes, then stops taking
    /// requests, lets in-flight ones finish, and flushes every buffered row to segments.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let api_addr = listeners.api.local_addr()?;
        let api = spawn_server(
            listeners.api,
            self.api.clone(),
            self.acceptor.clone(),
            self.stopped(),
        );
        self.run_receivers(
            listeners.otlp_grpc,
            listeners.otlp_http,
            api,
            api_addr,
            shutdown,
        )
        .await
    }

    /// A future that completes once the app is stopping.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Serves the receivers beside an API server already running, runs the store's schedule,
    /// and on `shutdown` drains the servers and closes the store.
    async fn run_receivers(
        self,
        otlp_grpc: TcpListener,
        otlp_http: TcpListener,
        api: tokio::task::JoinHandle<std::io::Result<()>>,
        api_addr: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addrs = (otlp_grpc.local_addr()?, otlp_http.local_addr()?, api_addr);
        let servers = vec![
            spawn_server(
                otlp_grpc,
                self.otlp_grpc.clone(),
                self.acceptor.clone(),
                self.stopped(),
            ),
            spawn_server(
                otlp_http,
                self.otlp_http.clone(),
                self.acceptor.clone(),
                self.stopped(),
            ),
            api,
        ];
        let schedule = tokio::spawn(sightline_storage::schedule::run(
            self.store.clone(),
            self.clock.clone(),
            self.stopped(),
        ));
        let monitor = tokio::spawn(sightline_monitor::run(self.monitor.clone(), self.stopped()));
        let scraper = tokio::spawn(crate::scrape::run(
            self.scrapes.clone(),
            self.pipeline.clone(),
            sightline_ingest::Intake::new(self.config.limits, self.config.redactor.clone()),
            self.clock.clone(),
            self.stopped(),
        ));
        self.ready.store(true, Ordering::SeqCst);
        if let Some(path) = &self.config.ready_file {
            write_ready_file(path, addrs.0, addrs.1, addrs.2, self.config.tls.is_some())?;
        }
        info!(otlp_grpc = %addrs.0, otlp_http = %addrs.1, listen = %addrs.2, "sightline is listening");

        shutdown.await;
        info!("shutting down: finishing in-flight requests");
        let _ = self.stop.send(true);
        for server in servers {
            match tokio::time::timeout(Duration::from_secs(30), server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "server stopped with an error"),
                Ok(Err(e)) => warn!(error = %e, "server task failed"),
                Err(_) => warn!("in-flight requests did not finish within 30 s; stopping anyway"),
            }
        }
        let _ = schedule.await;
        let _ = scraper.await;
        // Notifications in flight are delivered (or kept for the next start) and the state written.
        let _ = monitor.await;
        let flushed = self.store.close().await.context(
            "final flush failed; the rows stay in the write-ahead log and are replayed at the next start",
        )?;
        info!(
            rows = flushed.rows,
            segments = flushed.segments_written,
            "buffer flushed; stopped"
        );
        Ok(())
    }
}

/// Runs the server until `shutdown` completes, then stops taking requests, lets in-flight ones
/// finish, and flushes every buffered row to segments. The UI and API port answers from the
/// start: while the log is replayed, `/healthz` says so and every other route answers 503 with
/// `Retry-After`; then the real routes take over.
pub async fn serve(
    config: ServeConfig,
    listeners: Listeners,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app_slot: Arc<OnceLock<axum::Router>> = Arc::new(OnceLock::new());
    let replay = Arc::new(ReplayState {
        started: Instant::now(),
        wal_files: count_wal_files(&config.data_dir),
    });
    let acceptor = tls_acceptor(&config)?;
    let (front_stop, front_stopped) = watch::channel(false);
    let api_addr = listeners.api.local_addr()?;
    let api = spawn_server(
        listeners.api,
        front_router(app_slot.clone(), replay),
        acceptor.clone(),
        async move {
            let mut rx = front_stopped;
            let _ = rx.wait_for(|stop| *stop).await;
        },
    );
    let app = match App::open_with(config, clock, acceptor).await {
        Ok(app) => app,
        Err(e) => {
            let _ = front_stop.send(true);
            return Err(e);
        }
    };
    let _ = app_slot.set(app.api_router());
    // The front server stops with the app.
    let mut app_stopped = app.stop.subscribe();
    tokio::spawn(async move {
        let _ = app_stopped.wait_for(|stop| *stop).await;
        let _ = front_stop.send(true);
    });
    app.run_receivers(
        listeners.otlp_grpc,
        listeners.otlp_http,
        api,
        api_addr,
        shutdown,
    )
    .await
}

/// The TLS acceptor of `config.tls`, read once and shared by every listener.
fn tls_acceptor(config: &ServeConfig) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    match &config.tls {
        Some((cert, key)) => Ok(Some(crate::tls::acceptor(cert, key)?)),
        None => Ok(None),
    }
}

/// Serves a router on a listener, over TLS when an acceptor is given, until `stop`.
fn spawn_server(
    listener: TcpListener,
    router: axum::Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    match acceptor {
        Some(acceptor) => tokio::spawn(crate::tls::serve(listener, router, acceptor, stop)),
        None => tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .into_future(),
        ),
    }
}

/// What the UI and API port says while the write-ahead log is replayed.
struct ReplayState {
    started: Instant,
    wal_files: usize,
}

fn count_wal_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("wal"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
                .count()
        })
        .unwrap_or(0)
}

/// Routes to the real UI and API once they are set; until then answers as "replaying".
fn front_router(slot: Arc<OnceLock<axum::Router>>, replay: Arc<ReplayState>) -> axum::Router {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    axum::Router::new().fallback(move |request: axum::extract::Request| {
        let slot = slot.clone();
        let replay = replay.clone();
        async move {
            if let Some(app) = slot.get() {
                return match app.clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
            }
            let message = format!(
                "the server is replaying its write-ahead log ({} file(s), {:.0} s so far); \
                 it answers once every acknowledged record is back. Retry shortly.",
                replay.wal_files,
                replay.started.elapsed().as_secs_f64()
            );
            if request.uri().path() != "/healthz" {
                return crate::server::ApiError::new(ErrorCode::Unavailable, message)
                    .into_response();
            }
            let body = serde_json::json!({
                "status": "replaying",
                "ready": false,
                "replay": {
                    "wal_files": replay.wal_files,
                    "elapsed_seconds": replay.started.elapsed().as_secs_f64(),
                },
                "checks": [{"name": "replay", "level": "warn", "message": message}],
            });
            let response = (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(body),
            )
                .into_response();
            crate::server::with_retry_after(response, ErrorCode::Unavailable)
        }
    })
}

/// Writes `{"otlp_grpc": .., "otlp_http": .., "listen": .., "tls": ..}` atomically, for scripts and tests
/// that start the server on port 0.
fn write_ready_file(
    path: &Path,
    grpc: SocketAddr,
    http: SocketAddr,
    api: SocketAddr,
    tls: bool,
) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "otlp_grpc": grpc.to_string(),
        "otlp_http": http.to_string(),
        "listen": api.to_string(),
        "tls": tls,
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// The monitor's firing alerts, as tail sampling asks for them.
struct FiringHints(Monitor);

impl sightline_storage::sampling::SamplingHints for FiringHints {
    fn firing(&self, start_ns: i64, end_ns: i64) -> Vec<(String, i64, i64)> {
        self.0.firing_windows(start_ns, end_ns)
    }
}
