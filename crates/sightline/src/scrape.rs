//! `[[scrape]]`: Prometheus targets (a `prometheus_client` app's `/metrics`, an exporter) read
//! every `interval` into the `metrics` table. Each scrape asks for OpenMetrics first and the
//! text format after, reads the answer with [`sightline_ingest::prometheus`] into an OTLP metrics
//! request and stores it through the same intake (redaction, limits, normalization) and durable
//! path as an OTLP export. Like Prometheus, every scrape also records `up`,
//! `scrape_duration_seconds` and `scrape_samples_scraped` for the target's service, and a scrape
//! that fails (refused, timed out, not 2xx, not parseable) keeps nothing but `up = 0`. Each
//! target's last result is kept for `GET /api/v1/targets`, `/healthz` (a warning per target
//! down) and the service page.
//!
//! [`run`] looks every 250 ms on the injected clock and starts each due scrape in its own task,
//! so a slow target never delays another; a target is never scraped twice at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sightline_ingest::Intake;
use sightline_ingest::prometheus::{self, Family, FamilyType, Format, Sample, ScrapeSource};
use sightline_model::{Clock, ConfigError, HumanDuration, Signal};
use tracing::{debug, info};

use crate::pipeline::Pipeline;

/// How often the loop looks for due scrapes.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// The largest exposition body read; a larger one fails the scrape.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The timeout when none is configured (bounded by the interval).
const DEFAULT_TIMEOUT: HumanDuration = HumanDuration::from_secs(10);

fn default_interval() -> HumanDuration {
    HumanDuration::from_secs(15)
}

/// One `[[scrape]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The exposition's URL (`http://127.0.0.1:8000/metrics`); required (checked by
    /// [`validate`], so a missing one is named by its key).
    #[serde(default)]
    pub url: String,
    /// The service the metrics belong to (`service_name`); required.
    #[serde(default)]
    pub service: String,
    /// How often to scrape (default 15s).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// How long a scrape may take (default 10s, at most the interval).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Labels added to every sample (a sample's own label of the same name wins).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl ScrapeConfig {
    /// The timeout a scrape runs under: the configured one, else 10s or the interval if shorter.
    pub fn timeout(&self) -> HumanDuration {
        self.timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.interval))
    }

    /// `host:port` of the URL, the target's `service.instance.id`.
    fn instance(&self) -> String {
        reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_string();
                Some(match u.port_or_known_default() {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                })
            })
            .unwrap_or_else(|| self.url.clone())
    }
}

/// Refuses targets that cannot be scraped, naming the key (`scrape[1].url`).
pub fn validate(targets: &[ScrapeConfig]) -> Result<(), ConfigError> {
    for (i, target) in targets.iter().enumerate() {
        let key = |name: &str| format!("scrape[{i}].{name}");
        if target.url.trim().is_empty() {
            return Err(ConfigError::new(
                key("url"),
                "is required: the exposition to scrape, e.g. \"http://127.0.0.1:8000/metrics\"",
            ));
        }
        match reqwest::Url::parse(&target.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
            Ok(url) => {
                return Err(ConfigError::new(
                    key("url"),
                    format!(
                        "must be an http or https URL with a host, not {:?} (scheme {})",
                        target.url,
                        url.scheme()
                    ),
                ));
            }
            Err(e) => {
                return Err(ConfigError::new(
                    key("url"),
                    format!(
                        "{:?} is not a URL ({e}): expected e.g. \"http://127.0.0.1:8000/metrics\"",
                        target.url
                    ),
                ));
            }
        }
        if target.service.trim().is_empty() {
            return Err(ConfigError::new(
                key("service"),
                "is required: the service the metrics belong to, e.g. \"orders\"",
            ));
        }
        if target.interval.as_nanos() < 1_000_000_000 {
            return Err(ConfigError::new(
                key("interval"),
                format!("must be at least 1s, not {}", target.interval),
            ));
        }
        if let Some(timeout) = target.timeout {
            if timeout.is_zero() {
                return Err(ConfigError::new(key("timeout"), "must be longer than 0s"));
            }
            if timeout > target.interval {
                return Err(ConfigError::new(
                    key("timeout"),
                    format!(
                        "must not be longer than the interval ({}), not {timeout}",
                        target.interval
                    ),
                ));
            }
        }
        for name in target.labels.keys() {
            let mut chars = name.chars();
            let well_formed = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !well_formed {
                return Err(ConfigError::new(
                    key(&format!("labels.{name}")),
                    "is not a label name: expected letters, digits, `_` and `.`, not starting with a digit",
                ));
            }
        }
        if targets[..i]
            .iter()
            .any(|other| other.url == target.url && other.service == target.service)
        {
            return Err(ConfigError::new(
                key("url"),
                format!(
                    "{} is already scraped for {} by an earlier [[scrape]]",
                    target.url, target.service
                ),
            ));
        }
    }
    Ok(())
}

/// A target's health after its last scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not scraped yet.
    Unknown,
    /// The last scrape was read and stored.
    Up,
    /// The last scrape failed.
    Down,
}

/// What a target's last scrape found.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    /// The URL scraped.
    pub url: String,
    /// The service its metrics belong to.
    pub service: String,
    /// `up`, `down` or `unknown`.
    pub health: Health,
    /// When the last scrape started (RFC 3339).
    pub last_scrape: Option<String>,
    /// Why the last scrape failed.
    pub last_error: Option<String>,
    /// How long the last scrape took.
    pub last_duration_ms: Option<f64>,
    /// Samples the last scrape read.
    pub samples: u64,
    /// Since when the target has been down (RFC 3339), while it is.
    pub down_since: Option<String>,
    /// The configured interval.
    pub interval: String,
}

struct Target {
    config: ScrapeConfig,
    status: TargetStatus,
    next_due_ns: i64,
    in_flight: bool,
}

/// The configured targets and their last results; cloned handles share them.
#[derive(Clone, Default)]
pub struct Scrapes {
    targets: Arc<Mutex<Vec<Target>>>,
}

impl std::fmt::Debug for Scrapes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrapes")
            .field("targets", &self.statuses().len())
            .finish()
    }
}

impl Scrapes {
    /// The targets, none scraped yet.
    pub fn new(configs: &[ScrapeConfig]) -> Self {
        let targets = configs
            .iter()
            .map(|config| Target {
                status: TargetStatus {
                    url: config.url.clone(),
                    service: config.service.clone(),
                    health: Health::Unknown,
                    last_scrape: None,
                    last_error: None,
                    last_duration_ms: None,
                    samples: 0,
                    down_since: None,
                    interval: config.interval.to_string(),
                },
                config: config.clone(),
                next_due_ns: i64::MIN,
                in_flight: false,
            })
            .collect();
        Self {
            targets: Arc::new(Mutex::new(targets)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Target>> {
        // A panic while holding the lock leaves statuses that are still worth reading.
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every target's last result, in configuration order.
    pub fn statuses(&self) -> Vec<TargetStatus> {
        self.lock().iter().map(|t| t.status.clone()).collect()
    }

    /// The targets whose metrics belong to `service`.
    pub fn of_service(&self, service: &str) -> Vec<TargetStatus> {
        self.statuses()
            .into_iter()
            .filter(|t| t.service == service)
            .collect()
    }

    /// The targets due at `now_ns` and not being scraped, marked as being scraped and due again
    /// one interval later.
    fn take_due(&self, now_ns: i64) -> Vec<(usize, ScrapeConfig)> {
        let mut targets = self.lock();
        let mut due = Vec::new();
        for (i, t) in targets.iter_mut().enumerate() {
            if !t.in_flight && now_ns >= t.next_due_ns {
                t.in_flight = true;
                t.next_due_ns = now_ns.saturating_add(t.config.interval.as_nanos());
                due.push((i, t.config.clone()));
            }
        }
        due
    }

    fn record(&self, index: usize, started_ns: i64, outcome: &Outcome) {
        let mut targets = self.lock();
        let Some(t) = targets.get_mut(index) else {
            return;
        };
        t.in_flight = false;
        let status = &mut t.status;
        status.last_scrape = Some(sightline_query::json::format_time_ns(started_ns));
        status.last_duration_ms = Some(outcome.duration_s * 1e3);
        status.samples = outcome.samples as u64;
        match &outcome.error {
            None => {
                status.health = Health::Up;
                status.last_error = None;
                status.down_since = None;
            }
            Some(e) => {
                if status.health != Health::Down {
                    status.down_since = status.last_scrape.clone();
                }
                status.health = Health::Down;
                status.last_error = Some(e.clone());
            }
        }
    }
}

/// What one scrape came to.
struct Outcome {
    samples: usize,
    duration_s: f64,
    error: Option<String>,
}

/// Scrapes every target when due on `clock`, until `shutdown`.
pub async fn run(
    scrapes: Scrapes,
    pipeline: Pipeline,
    intake: Intake,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) {
    if scrapes.statuses().is_empty() {
        shutdown.await;
        return;
    }
    let client = match reqwest::Client::builder()
        .user_agent(concat!("Sightline/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "the scrape client could not be built; no target is scraped");
            for (i, _) in scrapes.take_due(i64::MAX) {
                let outcome = Outcome {
                    samples: 0,
                    duration_s: 0.0,
                    error: Some(format!("the scrape client could not be built: {e}")),
                };
                scrapes.record(i, clock.now_ns(), &outcome);
            }
            shutdown.await;
            return;
        }
    };
    let intake = Arc::new(intake);
    // Scrapes in flight, finished (their rows stored or refused) before the loop returns, so
    // none writes after the store is closed.
    let mut running = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = look.tick() => {}
        }
        for (index, config) in scrapes.take_due(clock.now_ns()) {
            let (scrapes, client, pipeline, intake, clock) = (
                scrapes.clone(),
                client.clone(),
                pipeline.clone(),
                intake.clone(),
                clock.clone(),
            );
            running.spawn(async move {
                let started_ns = clock.now_ns();
                // A fault inside one scrape is that target's failure, not the end of its
                // scrapes: the target is recorded as down and scraped again when due.
                let attempt = {
                    let (client, config, pipeline, intake) =
                        (client.clone(), config.clone(), pipeline.clone(), intake.clone());
                    tokio::spawn(async move {
                        scrape(&client, &config, &pipeline, &intake, started_ns).await
                    })
                };
                let outcome = attempt.await.unwrap_or_else(|e| Outcome {
                    samples: 0,
                    duration_s: 0.0,
                    error: Some(format!("the scrape stopped inside Sightline ({e}); it is tried again when due")),
                });
                match &outcome.error {
                    None => debug!(url = %config.url, samples = outcome.samples, "scraped"),
                    Some(e) => info!(url = %config.url, service = %config.service, error = %e, "a scrape failed"),
                }
                pipeline.metrics().record_scrape(&config.service, outcome.error.is_none());
                scrapes.record(index, started_ns, &outcome);
            });
        }
        // Forget the finished ones.
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// Scrapes one target and stores what it read (or only `up = 0`).
async fn scrape(
    client: &reqwest::Client,
    config: &ScrapeConfig,
    pipeline: &Pipeline,
    intake: &Intake,
    started_ns: i64,
) -> Outcome {
    let started = Instant::now();
    let labels: Vec<(String, String)> = config
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let instance = config.instance();
    let source = ScrapeSource {
        service: &config.service,
        instance: &instance,
        url: &config.url,
        labels: &labels,
        time_ns: started_ns,
    };
    let read = fetch_and_parse(client, config).await;
    let duration_s = started.elapsed().as_secs_f64();
    let (mut request, samples, mut error) = match read.and_then(|(families, format)| {
        prometheus::to_otlp(&families, format, &source)
            .map_err(|e| format!("the exposition could not be read: {e}"))
    }) {
        Ok((request, samples)) => (request, samples, None),
        Err(e) => (Default::default(), 0, Some(e)),
    };
    let report = scrape_report(error.is_none(), duration_s, samples);
    match prometheus::to_otlp(&report, Format::Text, &source) {
        // A resource block of its own beside the target's samples: the same resource.
        Ok((report, _)) => request.resource_metrics.extend(report.resource_metrics),
        Err(e) => {
            // Three well-formed gauges always convert; say so if they ever do not.
            return Outcome {
                samples,
                duration_s,
                error: Some(format!("the scrape's own report could not be made: {e}")),
            };
        }
    }
    let normalized = sightline_ingest::prepare_metrics(request, pipeline.now_ns(), intake);
    if let Err(e) = pipeline.store(Signal::Metrics, normalized).await {
        let stored = format!("what was scraped could not be stored: {e}");
        error = Some(match error {
            Some(first) => format!("{first}; {stored}"),
            None => stored,
        });
    }
    Outcome {
        samples,
        duration_s,
        error,
    }
}

const REPORT_NAMES: [&str; 3] = ["up", "scrape_duration_seconds", "scrape_samples_scraped"];

/// Prometheus's own series about a scrape: `up`, `scrape_duration_seconds`,
/// `scrape_samples_scraped`.
fn scrape_report(up: bool, duration_s: f64, samples: usize) -> Vec<Family> {
    let gauge = |name: &str, help: &str, value: f64| Family {
        name: name.to_string(),
        kind: FamilyType::Gauge,
        help: Some(help.to_string()),
        unit: None,
        samples: vec![Sample {
            name: name.to_string(),
            labels: Vec::new(),
            value,
            time_ns: None,
            exemplar: None,
            line: 0,
        }],
    };
    vec![
        gauge(
            REPORT_NAMES[0],
            "1 if the target was scraped and read, 0 if not.",
            if up { 1.0 } else { 0.0 },
        ),
        gauge(REPORT_NAMES[1], "How long the scrape took.", duration_s),
        gauge(
            REPORT_NAMES[2],
            "Samples the target exposed.",
            samples as f64,
        ),
    ]
}

/// Fetches the exposition and reads it, or says why it could not.
async fn fetch_and_parse(
    client: &reqwest::Client,
    config: &ScrapeConfig,
) -> Result<(Vec<Family>, Format), String> {
    let response = client
        .get(&config.url)
        .header(reqwest::header::ACCEPT, prometheus::ACCEPT)
        .timeout(config.timeout().as_std())
        .send()
        .await
        .map_err(|e| request_error(&e, config))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "the target answered HTTP {status}, expected 200 with the metrics"
        ));
    }
    let format = Format::of_content_type(
        response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    let mut response = response;
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(format!(
                        "the exposition is larger than {MAX_BODY_BYTES} bytes; split the target or drop metrics"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(request_error(&e, config)),
        }
    }
    // Reading a large exposition is CPU work: off the async threads.
    let families = tokio::task::spawn_blocking(move || {
        let text = std::str::from_utf8(&body).map_err(|e| {
            format!(
                "the exposition is not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            )
        })?;
        prometheus::parse(text, format)
            .map_err(|e| format!("the exposition could not be read: {e}"))
    })
    .await
    .map_err(|e| format!("reading the exposition stopped inside Sightline: {e}"))??;
    Ok((families, format))
}

fn request_error(e: &reqwest::Error, config: &ScrapeConfig) -> String {
    if e.is_timeout() {
        format!(
            "no answer within the timeout of {} (scrape timeout)",
            config.timeout()
        )
    } else if e.is_connect() {
        format!(
            "could not connect to {}: {}",
            config.instance(),
            root_cause(e)
        )
    } else {
        format!("the request failed: {}", root_cause(e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> ScrapeConfig {
        ScrapeConfig {
            url: url.into(),
            service: "orders".into(),
            interval: HumanDuration::from_secs(15),
            timeout: None,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn config_mistakes_are_refused_naming_the_key() {
        let cases: Vec<(ScrapeConfig, &str)> = vec![
            (target("ftp://x/metrics"), "scrape[0].url"),
            (target("not a url"), "scrape[0].url"),
            (
                ScrapeConfig {
                    service: " ".into(),
                    ..target("http://127.0.0.1:1/metrics")
                },
                "scrape[0].service",
            ),
            (
                ScrapeConfig {
                    interval: HumanDuration::ZERO,
                    ..target("http://127.0.0.1:1/metrics")
                },
                "scrape[0].interval",
            ),
            (
                ScrapeConfig {
                    timeout: Some(HumanDuration::from_secs(20)),
                    ..target("http://127.0.0.1:1/metrics")
                },
                "scrape[0].timeout",
            ),
            (
                ScrapeConfig {
                    labels: BTreeMap::from([("1bad".to_string(), "x".to_string())]),
                    ..target("http://127.0.0.1:1/metrics")
                },
                "scrape[0].labels.1bad",
            ),
        ];
        for (config, key) in cases {
            let e = validate(&[config]).expect_err(key);
            assert_eq!(e.key, key, "{e}");
        }
        let twice = [
            target("http://127.0.0.1:1/metrics"),
            target("http://127.0.0.1:1/metrics"),
        ];
        assert_eq!(validate(&twice).expect_err("twice").key, "scrape[1].url");
        assert!(validate(&[target("http://127.0.0.1:8000/metrics")]).is_ok());
    }

    #[test]
    fn the_timeout_defaults_to_ten_seconds_or_the_interval() {
        assert_eq!(target("http://a/").timeout(), HumanDuration::from_secs(10));
        let short = ScrapeConfig {
            interval: HumanDuration::from_secs(2),
            ..target("http://a/")
        };
        assert_eq!(short.timeout(), HumanDuration::from_secs(2));
        assert_eq!(
            target("http://127.0.0.1:8000/metrics").instance(),
            "127.0.0.1:8000"
        );
        assert_eq!(
            target("http://example.internal/metrics").instance(),
            "example.internal:80"
        );
    }

    #[test]
    fn targets_are_due_once_per_interval_and_never_twice_at_once() {
        let scrapes = Scrapes::new(&[target("http://127.0.0.1:1/metrics")]);
        let t0 = 1_000_000_000_000;
        assert_eq!(scrapes.take_due(t0).len(), 1, "due at once");
        assert!(
            scrapes.take_due(t0 + 20_000_000_000).is_empty(),
            "in flight"
        );
        let outcome = Outcome {
            samples: 3,
            duration_s: 0.01,
            error: None,
        };
        scrapes.record(0, t0, &outcome);
        assert!(
            scrapes.take_due(t0 + 14_000_000_000).is_empty(),
            "not due before the interval"
        );
        assert_eq!(scrapes.take_due(t0 + 15_000_000_000).len(), 1);
        let failed = Outcome {
            samples: 0,
            duration_s: 0.0,
            error: Some("refused".into()),
        };
        scrapes.record(0, t0 + 15_000_000_000, &failed);
        let status = &scrapes.statuses()[0];
        assert_eq!(status.health, Health::Down);
        assert_eq!(status.last_error.as_deref(), Some("refused"));
        assert!(status.down_since.is_some());
    }
}
