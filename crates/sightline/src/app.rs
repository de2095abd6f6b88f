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
use sightline_model::Clock;
use sightline_query::QueryEngine;
use sightline_storage::Store;
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

/// Runs the server until `shutdown` completes, then stops taking requests, lets in-flight ones
/// finish, and flushes every buffered row to segments.
pub async fn serve(
    config: ServeConfig,
    listeners: Listeners,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // The UI and API port answers from the start: while the log is replayed, /healthz says so
    // and every other route answers 503 with Retry-After; then the real routes take over.
    let app_slot: Arc<OnceLock<axum::Router>> = Arc::new(OnceLock::new());
    let replay = Arc::new(ReplayState {
        started: Instant::now(),
        wal_files: count_wal_files(&config.data_dir),
    });
    let acceptor = match &config.tls {
        Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
        None => None,
    };
    let api_addr = listeners.api.local_addr()?;
    let api_server = spawn_server(
        listeners.api,
        front_router(app_slot.clone(), replay.clone()),
        acceptor.clone(),
        stopped(stop_rx.clone()),
    );

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
        elapsed_ms = replay.started.elapsed().as_millis() as u64,
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
    let metrics = Arc::new(SelfMetrics::default());
    let auth = crate::auth::Auth::new(&config.auth, config.tls.is_some(), clock.clone())?;
    let tail = LogTail::default();
    let pipeline = Pipeline::new(store.clone(), clock.clone(), metrics.clone(), tail.clone());
    let ready = Arc::new(AtomicBool::new(false));

    let addrs = (
        listeners.otlp_grpc.local_addr()?,
        listeners.otlp_http.local_addr()?,
        api_addr,
    );
    // One budget of decode permits for both receivers: bodies decoded at once, whatever the
    // protocol, bound the memory decoding takes.
    let decoding = Arc::new(tokio::sync::Semaphore::new(otlp_http::decode_permits()));
    let grpc_router = OtlpGrpc::router(
        pipeline.clone(),
        config.max_body_bytes as usize,
        config.limits,
        decoding.clone(),
    )
    .layer(axum::middleware::from_fn_with_state(
        auth.clone(),
        crate::auth::require_ingest_grpc,
    ));
    let http_router = otlp_http::router(otlp_http::OtlpHttpState {
        pipeline: pipeline.clone(),
        max_body_bytes: config.max_body_bytes,
        limits: config.limits,
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
        metrics: metrics.clone(),
        ready: ready.clone(),
        torn_tails_at_start: report.torn_tails.len(),
    };
    let app_router = ui::router(ui::UiState {
        api: api_state.clone(),
        tail,
        shutdown: stop_rx.clone(),
        auth: auth.clone(),
    })
    .merge(api::router(api_state))
    .layer(axum::middleware::from_fn_with_state(
        auth.clone(),
        crate::auth::require_read,
    ));
    let servers = vec![
        spawn_server(
            listeners.otlp_grpc,
            grpc_router,
            acceptor.clone(),
            stopped(stop_rx.clone()),
        ),
        spawn_server(
            listeners.otlp_http,
            http_router,
            acceptor.clone(),
            stopped(stop_rx.clone()),
        ),
        api_server,
    ];
    let background = tokio::spawn(sightline_storage::schedule::run(
        store.clone(),
        clock.clone(),
        stopped(stop_rx.clone()),
    ));

    let _ = app_slot.set(app_router);
    ready.store(true, Ordering::SeqCst);
    if let Some(path) = &config.ready_file {
        write_ready_file(path, addrs.0, addrs.1, addrs.2, config.tls.is_some())?;
    }
    info!(otlp_grpc = %addrs.0, otlp_http = %addrs.1, listen = %addrs.2, "sightline is listening");

    shutdown.await;
    info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    for server in servers {
        match tokio::time::timeout(Duration::from_secs(30), server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "server stopped with an error"),
            Ok(Err(e)) => warn!(error = %e, "server task failed"),
            Err(_) => warn!("in-flight requests did not finish within 30 s; stopping anyway"),
        }
    }
    let _ = background.await;
    let flushed = store.close().await.context("final flush failed; the rows stay in the write-ahead log and are replayed at the next start")?;
    info!(
        rows = flushed.rows,
        segments = flushed.segments_written,
        "buffer flushed; stopped"
    );
    Ok(())
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
            let body = if request.uri().path() == "/healthz" {
                serde_json::json!({
                    "status": "replaying",
                    "ready": false,
                    "replay": {
                        "wal_files": replay.wal_files,
                        "elapsed_seconds": replay.started.elapsed().as_secs_f64(),
                    },
                    "checks": [{"name": "replay", "level": "warn", "message": message}],
                })
            } else {
                serde_json::json!({"error": {"code": "unavailable", "message": message}})
            };
            let mut response = (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(body),
            )
                .into_response();
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(crate::server::RETRY_AFTER_SECONDS),
            );
            response
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
