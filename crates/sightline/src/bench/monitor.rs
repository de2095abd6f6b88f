//! `sightline bench monitor`: the cost of one evaluation cycle of many SLOs and rules over a data
//! folder (such as the 10-million-span dataset of `sightline bench dataset`), beside a reference
//! measured in the same run: one plain scan of the same 30 days of `span_rollups`. The SLOs and
//! rules are spread over the folder's services and routes: availability and latency SLOs over
//! 30 days; error-rate, request-rate and percentile rules over five minutes, with and without a
//! service (one instance per service), some against a one-day baseline, some SQL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::array::{Array, AsArray};
use sightline_model::{HumanDuration, SystemClock};
use sightline_monitor::config::{
    AlertConfig, Indicator, Measure, MonitorConfig, MonitorSection, NoData, SloConfig,
};
use sightline_monitor::{AlertState, Monitor};
use sightline_query::{QueryConfig, QueryEngine};
use sightline_storage::{Store, StoreOptions};

/// What to run.
#[derive(Debug, Clone)]
pub struct MonitorBenchOptions {
    pub data_dir: PathBuf,
    pub slos: usize,
    pub rules: usize,
    pub cycles: usize,
    /// Instead of timing: write the generated SLOs and rules as a `sightline.toml` here, evaluated
    /// every `evaluation_interval` (for a server on the same folder).
    pub write_config: Option<PathBuf>,
    pub evaluation_interval: HumanDuration,
}

/// The latency SLOs' thresholds (the dataset's rollups count them when written with
/// `--latency-thresholds 100ms,300ms,1s`).
const THRESHOLDS_MS: [i64; 3] = [100, 300, 1000];

fn duration(text: &str) -> HumanDuration {
    text.parse().unwrap_or(HumanDuration::ZERO)
}

/// SLOs and rules over `groups` (service, route), busiest first.
fn generated(groups: &[(String, String)], slos: usize, rules: usize) -> MonitorConfig {
    let slo_list = (0..slos)
        .map(|i| {
            let (service, route) = &groups[i % groups.len()];
            let latency = i % 2 == 1;
            SloConfig {
                name: format!("slo-{i}"),
                service: service.clone(),
                route: Some(route.clone()),
                method: None,
                indicator: if latency {
                    Indicator::Latency
                } else {
                    Indicator::Availability
                },
                threshold: latency
                    .then(|| HumanDuration::from_nanos(THRESHOLDS_MS[i % 3] * 1_000_000)),
                objective: [99.9, 99.5, 99.0][i % 3],
                window: duration("30d"),
                runbook_url: None,
                notify: None,
                min_requests: 100,
            }
        })
        .collect();
    let rule_list = (0..rules)
        .map(|i| {
            let (service, route) = &groups[i % groups.len()];
            let measure = [
                Measure::ErrorRate,
                Measure::RequestRate,
                Measure::P99,
                Measure::P95,
                Measure::ErrorRate,
                Measure::Sql,
            ][i % 6];
            let sql = (measure == Measure::Sql).then(|| {
                "SELECT service_name, count(*) AS value FROM logs WHERE severity = 'error' \
                 AND time > now() - INTERVAL '5 minutes' GROUP BY 1"
                    .to_string()
            });
            AlertConfig {
                name: format!("rule-{i}"),
                service: (i % 4 != 0 && sql.is_none()).then(|| service.clone()),
                route: (i % 3 == 0 && sql.is_none()).then(|| route.clone()),
                method: None,
                measure,
                sql,
                window: duration("5m"),
                above: Some(match measure {
                    Measure::ErrorRate if i % 6 == 4 => 2.0,
                    Measure::ErrorRate => 0.05,
                    Measure::RequestRate => 1000.0,
                    Measure::Sql => 100.0,
                    _ => 2.0,
                }),
                below: None,
                baseline: (i % 6 == 4).then(|| duration("1d")),
                for_: duration("2m"),
                keep_firing_for: HumanDuration::ZERO,
                min_requests: 10,
                no_data: NoData::NoData,
                runbook_url: None,
                labels: Default::default(),
                notify: None,
            }
        })
        .collect();
    MonitorConfig {
        monitor: MonitorSection::default(),
        slos: slo_list,
        alerts: rule_list,
        notify: Vec::new(),
        checks: Vec::new(),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the benchmark and prints its figures.
pub async fn run_monitor(options: MonitorBenchOptions) -> anyhow::Result<()> {
    let data_dir = options.data_dir.clone();
    anyhow::ensure!(
        data_dir.join("catalog.db").exists(),
        "{} holds no Sightline data: fill it first with `sightline bench dataset --data-dir {} --latency-thresholds 100ms,300ms,1s`",
        data_dir.display(),
        data_dir.display()
    );
    let thresholds: Vec<i64> = THRESHOLDS_MS.iter().map(|ms| ms * 1_000_000).collect();
    let (store, _) = tokio::task::spawn_blocking(move || {
        Store::open(
            &data_dir,
            StoreOptions {
                latency_thresholds_ns: thresholds,
                ..StoreOptions::default()
            },
            Arc::new(SystemClock),
        )
    })
    .await?
    .context("cannot open the data folder")?;
    let engine = QueryEngine::new(store.clone(), QueryConfig::default())?;
    let (_, batches, _) = engine
        .collect(
            "SELECT service_name, route, sum(requests) AS n FROM span_rollups GROUP BY 1, 2 ORDER BY 3 DESC",
            10_000,
        )
        .await?;
    let mut groups = Vec::new();
    for batch in &batches {
        let (services, routes) = (batch.column(0), batch.column(1));
        let text = |a: &dyn Array, row: usize| -> String {
            a.as_string_opt::<i32>()
                .map(|s| s.value(row).to_string())
                .or_else(|| a.as_string_view_opt().map(|s| s.value(row).to_string()))
                .unwrap_or_default()
        };
        for row in 0..batch.num_rows() {
            groups.push((text(services.as_ref(), row), text(routes.as_ref(), row)));
        }
    }
    anyhow::ensure!(!groups.is_empty(), "the folder holds no requests");
    let mut config = generated(&groups, options.slos, options.rules);
    config.monitor.evaluation_interval = options.evaluation_interval;
    config.validate()?;
    if let Some(path) = &options.write_config {
        let mut file = toml::Table::new();
        file.insert("monitor".into(), toml::Value::try_from(&config.monitor)?);
        file.insert("slo".into(), toml::Value::try_from(&config.slos)?);
        file.insert("alert".into(), toml::Value::try_from(&config.alerts)?);
        std::fs::write(path, toml::to_string(&file)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "wrote {} SLOs and {} rules to {}",
            config.slos.len(),
            config.alerts.len(),
            path.display()
        );
        store.close().await.ok();
        return Ok(());
    }
    let state_dir =
        std::env::temp_dir().join(format!("sightline-bench-monitor-{}", std::process::id()));
    let monitor = Monitor::open(&engine, config.clone(), Arc::new(SystemClock), &state_dir)?;
    sightline_monitor::eval::check_sql_rules(&engine, &config).await?;
    eprintln!(
        "{} SLOs and {} rules over {} services and routes; {} cycles",
        options.slos,
        options.rules,
        groups.len(),
        options.cycles
    );

    // The reference: one scan of the same rows, asked plainly.
    let reference_sql = "SELECT count(*), sum(requests), sum(errors) FROM span_rollups \
                         WHERE time >= now() - INTERVAL '30 days'";
    let mut reference = Vec::new();
    let mut cycles = Vec::new();
    let mut instances = 0;
    for cycle in 0..options.cycles.max(1) {
        let started = Instant::now();
        engine.collect(reference_sql, 10).await?;
        reference.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        let report = monitor.evaluate().await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        instances = report.instances;
        eprintln!(
            "cycle {}: {ms:.0} ms, {} instances, {} failed rules",
            cycle + 1,
            report.instances,
            report.failed_rules
        );
        cycles.push(ms);
    }
    let firing = monitor.alerts(Some(AlertState::Firing)).len();
    let (min, max) = (
        cycles.iter().copied().fold(f64::INFINITY, f64::min),
        cycles.iter().copied().fold(0.0, f64::max),
    );
    let cycle_median = median(&mut cycles);
    let reference_median = median(&mut reference);
    println!(
        "evaluation cycle ({} SLOs, {} rules, {instances} instances):",
        options.slos, options.rules
    );
    println!("  median {cycle_median:.0} ms (min {min:.0}, max {max:.0}); target under 1000 ms");
    println!("  reference, one scan of 30 days of span_rollups: {reference_median:.0} ms");
    println!(
        "  ratio to the reference: {:.1}×",
        cycle_median / reference_median.max(0.001)
    );
    println!("  alerts firing at the end: {firing}");
    let _ = std::fs::remove_dir_all(&state_dir);
    store.close().await.ok();
    Ok(())
}
