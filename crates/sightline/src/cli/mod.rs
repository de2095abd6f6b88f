//! The command line: `serve`, `demo`, `bench`, and the verbs that ask a running server (`query`,
//! `trace`, `logs`, `doctor`, `slos`, `alerts`, `silence`, `deploy`, `explain`, `compare`,
//! `check`, `redact`), each taking `--url`, `ship`, which sends log files to one, and `record`,
//! which runs a command against a server of its own and judges its telemetry.

mod changes;
mod client;
mod doctor;
mod logs;
mod monitor;
mod quality;
mod query;
mod record;
mod redact;
mod ship;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::{Overrides, ServeConfig};

pub const DEFAULT_URL: &str = "http://127.0.0.1:4319";

/// Sightline: traces, logs and metrics of your Python services, in one binary.
#[derive(Debug, Parser)]
#[command(name = "sightline", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive OpenTelemetry on 4317 (gRPC) and 4318 (HTTP), store it, and serve the API on 4319.
    Serve(ServeArgs),
    /// Run a read-only SQL query against a server and print the result.
    Query(query::QueryArgs),
    /// Print one trace as a tree of spans with its logs interleaved.
    Trace(trace::TraceArgs),
    /// Search logs, or follow new ones as they arrive.
    Logs(logs::LogsArgs),
    /// Say what is wrong with a server, in plain words (exit status 1 when something fails).
    Doctor(doctor::DoctorArgs),
    /// Send a small Python shop's telemetry (traces, logs, metrics, faults) to a server.
    Demo(DemoArgs),
    /// Every SLO: its SLI, error budget left, burn rates and state.
    Slos(monitor::SlosArgs),
    /// The alerts: firing, pending, no data, silenced and recently resolved.
    Alerts(monitor::AlertsArgs),
    /// Mute notifications of alerts matching labels for a while (--list, --expire ID).
    Silence(monitor::SilenceArgs),
    /// Record a deploy (a CI job's last step); it is drawn on every time chart.
    #[command(disable_version_flag = true)]
    Deploy(monitor::DeployArgs),
    /// What sets a service's failing or slow requests apart: versions, routes, attributes, hosts.
    Explain(changes::ExplainArgs),
    /// Compare a candidate release with its baseline, route by route (exit 0: no significant
    /// regression; 1: a significant regression, named; 2: cannot answer).
    Compare(changes::CompareArgs),
    /// Telemetry-quality findings and data checks (exit 1 on an error finding or a failing
    /// check, or at --fail-on; 2: cannot answer).
    Check(quality::CheckArgs),
    /// Send JSON log files (or standard input) to a server, following them with --follow.
    Ship(ship::ShipArgs),
    /// Run a command with its OpenTelemetry exporters pointed at a Sightline of its own, and judge
    /// what it emitted against a telemetry contract (exit: the command's status if it failed; 1:
    /// a contract rule is broken; 2: cannot answer).
    Record(record::RecordArgs),
    /// Redaction: `scan` reports what stored data still matches the rules.
    #[command(subcommand)]
    Redact(redact::RedactCommand),
    /// Benchmarks (not tests): load generators that report throughput, latency and cost.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Send the demo's traces and logs from N clients for a bounded time and report the figures.
    Ingest(BenchIngestArgs),
    /// Time each page of the web UI on the server (its Server-Timing) over repeated loads.
    Pages(BenchPagesArgs),
    /// Write days of the demo's traces and logs straight into an empty data folder.
    Dataset(BenchDatasetArgs),
    /// Time evaluation cycles of many SLOs and rules over a data folder (no server needed).
    Monitor(BenchMonitorArgs),
}

#[derive(Debug, Args)]
pub struct BenchMonitorArgs {
    /// The data folder to read (e.g. one `sightline bench dataset` wrote); no server may be
    /// using it. The monitor's own state goes to a temporary folder.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// SLOs to evaluate, spread over the folder's services and routes.
    #[arg(long, default_value_t = 100)]
    pub slos: usize,
    /// Alert rules to evaluate.
    #[arg(long, default_value_t = 200)]
    pub rules: usize,
    /// Evaluation cycles to time.
    #[arg(long, default_value_t = 5)]
    pub cycles: usize,
    /// Instead of timing, write the generated SLOs and rules as a sightline.toml to this file.
    #[arg(long, value_name = "FILE")]
    pub write_config: Option<PathBuf>,
    /// With --write-config: how often the server is to evaluate them.
    #[arg(long, default_value = "30s")]
    pub evaluation_interval: String,
}

#[derive(Debug, Args)]
pub struct BenchDatasetArgs {
    /// The data folder to fill; it must be empty or new, and no server may be using it.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Spans to write (accepts k and M: 10M).
    #[arg(long, default_value = "10M", value_parser = parse_count)]
    pub spans: u64,
    /// Log lines to write (accepts k and M).
    #[arg(long, default_value = "10M", value_parser = parse_count)]
    pub logs: u64,
    /// Days of traffic, ending now.
    #[arg(long, default_value_t = 7.0)]
    pub days: f64,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Latency thresholds the rollups count good requests within, comma-separated (as a
    /// server with latency SLOs of these thresholds does), e.g. 100ms,300ms,1s.
    #[arg(long, value_delimiter = ',')]
    pub latency_thresholds: Vec<String>,
}

/// A count such as `10000`, `250k` or `10M`.
fn parse_count(text: &str) -> Result<u64, String> {
    let text = text.trim().replace('_', "");
    let (digits, factor) = match text.chars().last() {
        Some('k' | 'K') => (&text[..text.len() - 1], 1_000.0),
        Some('m' | 'M') => (&text[..text.len() - 1], 1_000_000.0),
        _ => (text.as_str(), 1.0),
    };
    digits
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| (n * factor).round() as u64)
        .ok_or_else(|| {
            format!("{text:?} is not a count: expected a number like 20000, 250k or 10M")
        })
}

async fn bench_dataset(args: BenchDatasetArgs) -> anyhow::Result<()> {
    if !(args.days.is_finite() && args.days > 0.0) {
        anyhow::bail!("--days must be a positive number of days, e.g. 7 or 0.5");
    }
    use sightline_model::Clock;
    eprintln!(
        "writing {} spans and {} logs over {} days into {}",
        args.spans,
        args.logs,
        args.days,
        args.data_dir.display()
    );
    let report = crate::bench::run_dataset(crate::bench::DatasetOptions {
        data_dir: args.data_dir,
        spans: args.spans,
        logs: args.logs,
        span_of_time: std::time::Duration::from_secs_f64(args.days * 86_400.0),
        end_ns: sightline_model::SystemClock.now_ns(),
        seed: args.seed,
        latency_thresholds_ns: args
            .latency_thresholds
            .iter()
            .map(|t| {
                sightline_model::parse_duration_ns(t.trim())
                    .map_err(|e| anyhow::anyhow!("--latency-thresholds {t:?}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?,
    })
    .await?;
    print!("{}", report.render());
    Ok(())
}

#[derive(Debug, Args)]
pub struct BenchPagesArgs {
    /// The server's UI and API address.
    #[arg(long, default_value = "http://127.0.0.1:4319")]
    pub url: String,
    /// Loads of each page.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Time windows the pages are asked for, comma-separated.
    #[arg(long, default_value = "1h,24h")]
    pub ranges: String,
}

#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// OTLP/HTTP endpoint (any OTLP backend).
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    pub endpoint: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// How long to send, e.g. 30s.
    #[arg(long, default_value = "30s")]
    pub duration: String,
    /// Demo requests per export body (each request is 1 to 10 spans).
    #[arg(long, default_value_t = 50)]
    pub requests_per_body: usize,
    /// Process id of the server, to sample its peak RSS and CPU.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// A Sightline server's API: after the load, wait for its flush and report bytes on disk per row.
    #[arg(long)]
    pub api_url: Option<String>,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

async fn bench_ingest(args: BenchIngestArgs) -> anyhow::Result<()> {
    let duration = sightline_model::parse_duration_ns(&args.duration)
        .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    if args.clients == 0 || args.requests_per_body == 0 {
        anyhow::bail!("--clients and --requests-per-body must be at least 1");
    }
    eprintln!(
        "sending to {} from {} clients for {}",
        args.endpoint, args.clients, args.duration
    );
    let report = crate::bench::run_ingest(crate::bench::IngestBenchOptions {
        endpoint: args.endpoint,
        clients: args.clients,
        duration: std::time::Duration::from_nanos(duration as u64),
        requests_per_body: args.requests_per_body,
        server_pid: args.server_pid,
        api_url: args.api_url,
        seed: args.seed,
    })
    .await?;
    print!("{}", report.render());
    Ok(())
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// OTLP/HTTP endpoint to send to.
    #[arg(
        long,
        env = "SIGHTLINE_DEMO_ENDPOINT",
        default_value = "http://127.0.0.1:4318"
    )]
    pub endpoint: String,
    /// Requests per second through the shop's gateway.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Stop after this long (e.g. 30s, 10m); runs until Ctrl-C when not given.
    #[arg(long)]
    pub duration: Option<String>,
    /// Seed of the random choices (the same seed replays the same shop).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// First send this much of the shop's past at once (e.g. 30m, 2h), so the pages have a
    /// history to show from the first second.
    #[arg(long)]
    pub backfill: Option<String>,
    /// Run one named fault instead of the ten-minute cycle (see --list): healthy at first, then
    /// the fault, from halfway through the backfill (at most 10 minutes before now) or, without
    /// one, after the first minute.
    #[arg(long)]
    pub scenario: Option<String>,
    /// List the scenarios, each with the alert that should fire on it, and exit.
    #[arg(long)]
    pub list: bool,
}

fn list_scenarios() {
    for s in &sightline_demo::SCENARIOS {
        println!("{:<16} {}", s.name, s.summary);
        println!("{:<16} cause: {}={}", "", s.cause.0, s.cause.1);
        println!("{:<16} an alert that fires on it (sightline.toml):", "");
        for line in s.alert.lines() {
            println!("{:<18}{line}", "");
        }
        println!();
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    if args.list {
        list_scenarios();
        return Ok(());
    }
    let scenario = args
        .scenario
        .as_deref()
        .map(|name| {
            sightline_demo::scenario(name).ok_or_else(|| {
                let names: Vec<&str> = sightline_demo::SCENARIOS.iter().map(|s| s.name).collect();
                anyhow::anyhow!(
                    "--scenario {name:?} is not known: expected one of {} (sightline demo --list shows them)",
                    names.join(", ")
                )
            })
        })
        .transpose()?;
    let duration = args
        .duration
        .as_deref()
        .map(sightline_model::parse_duration_ns)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--duration: {e}"))?
        .map(|ns| std::time::Duration::from_nanos(ns as u64));
    if !(args.rate > 0.0 && args.rate <= 100_000.0) {
        anyhow::bail!(
            "--rate must be between 0 and 100000 requests per second, got {}",
            args.rate
        );
    }
    let backfill = args
        .backfill
        .as_deref()
        .map(sightline_model::parse_duration_ns)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--backfill: {e}"))?
        .map(|ns| std::time::Duration::from_nanos(ns as u64));
    crate::demo::run(crate::demo::DemoOptions {
        endpoint: args.endpoint,
        requests_per_second: args.rate,
        duration,
        seed: args.seed,
        backfill,
        scenario,
    })
    .await
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (default: ./sightline.toml when it exists).
    #[arg(long, env = "SIGHTLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Folder for the write-ahead log, segments and catalog [default: ./sightline-data].
    #[arg(long, env = "SIGHTLINE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// OTLP/gRPC address [default: 127.0.0.1:4317].
    #[arg(long, env = "SIGHTLINE_OTLP_GRPC", value_name = "ADDR")]
    pub otlp_grpc: Option<String>,
    /// OTLP/HTTP address [default: 127.0.0.1:4318].
    #[arg(long, env = "SIGHTLINE_OTLP_HTTP", value_name = "ADDR")]
    pub otlp_http: Option<String>,
    /// UI and API address [default: 127.0.0.1:4319].
    #[arg(long, env = "SIGHTLINE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Largest accepted export body, compressed or not [default: 16777216].
    #[arg(long, env = "SIGHTLINE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// How long rows wait in memory before they are written to segments [default: 10s].
    #[arg(long, env = "SIGHTLINE_FLUSH_INTERVAL", value_name = "DURATION")]
    pub flush_interval: Option<String>,
    /// Write the bound addresses as JSON to this file once the server is ready.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// PEM certificate chain: with --tls-key, every listener speaks TLS.
    #[arg(long, env = "SIGHTLINE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SIGHTLINE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

fn init_logging() {
    init_logging_at("info");
}

/// Logs to standard error at `SIGHTLINE_LOG`'s filter, or `default` without one.
fn init_logging_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGHTLINE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs a parsed command line; errors are printed as `error: ...` with their causes.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Query(args) => runtime().and_then(|rt| rt.block_on(query::run(args))),
        Command::Trace(args) => runtime().and_then(|rt| rt.block_on(trace::run(args))),
        Command::Logs(args) => runtime().and_then(|rt| rt.block_on(logs::run(args))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo(args))),
        Command::Slos(args) => runtime().and_then(|rt| rt.block_on(monitor::slos(args))),
        Command::Alerts(args) => runtime().and_then(|rt| rt.block_on(monitor::alerts(args))),
        Command::Silence(args) => runtime().and_then(|rt| rt.block_on(monitor::silence(args))),
        Command::Deploy(args) => runtime().and_then(|rt| rt.block_on(monitor::deploy(args))),
        Command::Explain(args) => runtime().and_then(|rt| rt.block_on(changes::explain(args))),
        Command::Ship(args) => runtime().and_then(|rt| rt.block_on(ship::run(args))),
        Command::Redact(command) => {
            return match runtime().and_then(|rt| rt.block_on(redact::run(command))) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Record(args) => {
            init_logging_at("warn");
            match runtime().and_then(|rt| rt.block_on(record::run(args))) {
                Ok(code) => return ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Check(args) => match runtime().and_then(|rt| rt.block_on(quality::check(args))) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        },
        Command::Compare(args) => {
            match runtime().and_then(|rt| rt.block_on(changes::compare(args))) {
                Ok(code) => return ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Doctor(args) => match runtime().and_then(|rt| rt.block_on(doctor::run(args))) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Bench(BenchCommand::Ingest(args)) => {
            runtime().and_then(|rt| rt.block_on(bench_ingest(args)))
        }
        Command::Bench(BenchCommand::Monitor(args)) => runtime().and_then(|rt| {
            let evaluation_interval = args
                .evaluation_interval
                .parse()
                .map_err(|e| anyhow::anyhow!("--evaluation-interval: {e}"))?;
            rt.block_on(crate::bench::run_monitor(
                crate::bench::MonitorBenchOptions {
                    data_dir: args.data_dir,
                    slos: args.slos,
                    rules: args.rules,
                    cycles: args.cycles,
                    write_config: args.write_config,
                    evaluation_interval,
                },
            ))
        }),
        Command::Bench(BenchCommand::Dataset(args)) => {
            runtime().and_then(|rt| rt.block_on(bench_dataset(args)))
        }
        Command::Bench(BenchCommand::Pages(args)) => runtime().and_then(|rt| {
            rt.block_on(crate::bench::run_pages(crate::bench::PagesBenchOptions {
                url: args.url,
                runs: args.runs,
                ranges: args
                    .ranges
                    .split(',')
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .collect(),
            }))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    let config = ServeConfig::resolve(Overrides {
        config: args.config,
        data_dir: args.data_dir,
        otlp_grpc: args.otlp_grpc,
        otlp_http: args.otlp_http,
        listen: args.listen,
        max_body_bytes: args.max_body_bytes,
        flush_interval: args.flush_interval,
        ready_file: args.ready_file,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        redaction_key: std::env::var(sightline_ingest::redact::HASH_KEY_VARIABLE).ok(),
    })?;
    runtime()?.block_on(async move {
        let listeners = crate::app::Listeners::bind(&config).await?;
        crate::app::serve(
            config,
            listeners,
            Arc::new(sightline_model::SystemClock),
            crate::app::shutdown_signal(),
        )
        .await
    })
}

/// The first line of the README's contract example, which is not a server config.
#[cfg(test)]
pub(crate) const README_CONTRACT_MARK: &str = "# telemetry.toml: a contract for sightline record";

/// The ```toml blocks of the README.
#[cfg(test)]
pub(crate) fn readme_toml_blocks() -> Vec<String> {
    let readme = include_str!("../../../../README.md");
    readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_verb_and_flag_is_well_formed() {
        // Clap checks names, ids and conflicts of every subcommand here rather than at the first
        // run of a verb.
        Cli::command().debug_assert();
    }
}
