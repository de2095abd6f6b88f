//! Configuration of `sightline serve`. Precedence: command-line flags, then `SIGHTLINE_*`
//! environment variables (both read by clap), then `sightline.toml`, then defaults.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use sightline_model::{Signal, parse_duration_ns};

pub const DEFAULT_OTLP_GRPC: &str = "127.0.0.1:4317";
pub const DEFAULT_OTLP_HTTP: &str = "127.0.0.1:4318";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4319";
pub const DEFAULT_DATA_DIR: &str = "./sightline-data";
pub const DEFAULT_CONFIG_FILE: &str = "sightline.toml";
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// `sightline.toml`. Every key is optional; durations are written like `10s`, `7d`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub otlp_grpc: Option<String>,
    pub otlp_http: Option<String>,
    pub listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub query: QuerySection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub tls: TlsSection,
}

/// `[tls]`: a PEM certificate chain and its private key; every listener then speaks TLS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[auth]`: access tokens (`[[auth.tokens]]` with name, token, scopes).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(default)]
    pub tokens: Vec<crate::auth::TokenConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_attributes_per_record: Option<usize>,
    pub max_attribute_value_bytes: Option<usize>,
    /// Levels of arrays and maps inside one attribute value or log body (1 to 16).
    pub max_nesting_depth: Option<usize>,
    /// Records stamped further back than this are rejected; "forever" accepts any age.
    pub max_timestamp_age: Option<String>,
    /// Records stamped further ahead than this are rejected.
    pub max_timestamp_ahead: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub flush_interval: Option<String>,
    pub flush_rows: Option<usize>,
    pub max_buffer_bytes: Option<u64>,
    pub queue_capacity: Option<usize>,
    pub compaction_target_rows: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    pub spans: Option<String>,
    pub logs: Option<String>,
    pub metrics: Option<String>,
    /// Per-minute request, error and latency rollups of spans: small, so by default kept
    /// forever, for trends longer than the spans' own retention.
    pub span_rollups: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySection {
    pub memory_limit_bytes: Option<usize>,
    pub timeout: Option<String>,
    pub max_result_rows: Option<usize>,
}

/// Values given on the command line or in the environment (clap has merged those two).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub otlp_grpc: Option<String>,
    pub otlp_http: Option<String>,
    pub listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub flush_interval: Option<String>,
    pub ready_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The configuration `serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub listen: SocketAddr,
    pub max_body_bytes: u64,
    pub ready_file: Option<PathBuf>,
    pub storage: sightline_storage::StoreOptions,
    pub query: sightline_query::QueryLimits,
    /// Per-record bounds on attributes and value lengths.
    pub limits: sightline_ingest::Limits,
    /// Where the file configuration came from, if any.
    pub config_file: Option<PathBuf>,
    /// Access tokens; none means open access, allowed on loopback addresses only.
    pub auth_tokens: Vec<crate::auth::TokenConfig>,
    /// Certificate chain and private key (PEM) when the listeners speak TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A retention as it would be written: `7d`, `12h` or `90s`.
fn describe_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{s}s"),
    }
}

fn duration(text: &str, key: &str) -> anyhow::Result<Duration> {
    let ns = parse_duration_ns(text).with_context(|| format!("config key {key}"))?;
    Ok(Duration::from_nanos(ns as u64))
}

fn address(text: &str, what: &str) -> anyhow::Result<SocketAddr> {
    text.parse().with_context(|| {
        format!("invalid {what} address {text:?}: expected IP:PORT such as 127.0.0.1:4318")
    })
}

/// Reads `path` (it must exist when named explicitly).
pub fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

impl ServeConfig {
    /// Merges overrides, the config file (the named one, or `./sightline.toml` if present) and
    /// defaults.
    pub fn resolve(overrides: Overrides) -> anyhow::Result<Self> {
        let (file, config_file) = match &overrides.config {
            Some(path) => (read_file_config(path)?, Some(path.clone())),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                let path = PathBuf::from(DEFAULT_CONFIG_FILE);
                (read_file_config(&path)?, Some(path))
            }
            None => (FileConfig::default(), None),
        };
        let from_file = config_file.clone();
        Self::merge(overrides, file, config_file).with_context(|| match from_file {
            Some(path) => format!(
                "invalid configuration (flags, SIGHTLINE_* variables, {})",
                path.display()
            ),
            None => "invalid configuration (flags, SIGHTLINE_* variables)".to_string(),
        })
    }

    pub fn merge(
        o: Overrides,
        file: FileConfig,
        config_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let pick = |flag: Option<String>, from_file: Option<String>, default: &str| {
            flag.or(from_file).unwrap_or_else(|| default.to_string())
        };
        let max_body_bytes = o
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            bail!("max_body_bytes must be greater than 0");
        }
        let mut storage = sightline_storage::StoreOptions::default();
        if let Some(text) = &o.flush_interval {
            storage.flush_interval = duration(text, "--flush-interval (SIGHTLINE_FLUSH_INTERVAL)")?;
        } else if let Some(text) = &file.storage.flush_interval {
            storage.flush_interval = duration(text, "storage.flush_interval")?;
        }
        if let Some(rows) = file.storage.flush_rows {
            storage.flush_rows = rows.max(1);
        }
        if let Some(bytes) = file.storage.max_buffer_bytes {
            storage.max_buffer_bytes = bytes;
        }
        if let Some(capacity) = file.storage.queue_capacity {
            storage.queue_capacity = capacity.max(1);
        }
        if let Some(rows) = file.storage.compaction_target_rows {
            storage.compaction_target_rows = rows.max(1);
        }
        let mut retention = HashMap::new();
        for (signal, text) in [
            (Signal::Spans, &file.retention.spans),
            (Signal::Logs, &file.retention.logs),
            (Signal::Metrics, &file.retention.metrics),
            (Signal::SpanRollups, &file.retention.span_rollups),
        ] {
            let keep = match text.as_deref() {
                None | Some("forever") => None,
                Some(text) => Some(duration(text, &format!("retention.{signal}"))?),
            };
            retention.insert(signal, keep);
        }
        // The pages count requests from rollups wherever spans are kept, so rollups must last
        // at least as long.
        if let Some(Some(rollups)) = retention.get(&Signal::SpanRollups)
            && retention
                .get(&Signal::Spans)
                .is_none_or(|spans| spans.is_none_or(|spans| spans > *rollups))
        {
            anyhow::bail!(
                "retention.span_rollups ({}) is shorter than retention.spans ({}): rollups must be \
                 kept at least as long as spans, since the pages count requests from them; \
                 lengthen it or leave it unset (forever)",
                describe_duration(*rollups),
                retention
                    .get(&Signal::Spans)
                    .copied()
                    .flatten()
                    .map_or("forever".into(), describe_duration),
            );
        }
        storage.retention = retention;
        let mut query = sightline_query::QueryLimits::default();
        if let Some(bytes) = file.query.memory_limit_bytes {
            query.memory_bytes = bytes;
        }
        if let Some(text) = &file.query.timeout {
            query.timeout = duration(text, "query.timeout")?;
            if query.timeout.is_zero() {
                bail!("config key query.timeout must be longer than 0s");
            }
        }
        if let Some(rows) = file.query.max_result_rows {
            query.max_result_rows = rows.max(1);
        }
        let mut limits = sightline_ingest::Limits::default();
        if let Some(n) = file.limits.max_attributes_per_record {
            limits.max_attributes = n;
        }
        if let Some(n) = file.limits.max_attribute_value_bytes {
            if n < 16 {
                bail!("config key limits.max_attribute_value_bytes must be at least 16");
            }
            limits.max_value_bytes = n;
        }
        if let Some(n) = file.limits.max_nesting_depth {
            let most = sightline_ingest::attributes::MAX_DEPTH;
            if !(1..=most).contains(&n) {
                bail!("config key limits.max_nesting_depth must be between 1 and {most}, not {n}");
            }
            limits.max_nesting_depth = n;
        }
        match file.limits.max_timestamp_age.as_deref() {
            None => {}
            Some("forever") => limits.max_timestamp_age_ns = i64::MAX,
            Some(text) => {
                limits.max_timestamp_age_ns =
                    duration(text, "limits.max_timestamp_age")?.as_nanos() as i64
            }
        }
        if let Some(text) = &file.limits.max_timestamp_ahead {
            limits.max_timestamp_ahead_ns =
                duration(text, "limits.max_timestamp_ahead")?.as_nanos() as i64;
        }
        let tls = match (o.tls_cert.or(file.tls.cert), o.tls_key.or(file.tls.key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!(
                "TLS needs both a certificate and a key: give --tls-cert and --tls-key (or [tls] cert and key)"
            ),
        };
        let config = Self {
            limits,
            tls,
            auth_tokens: file.auth.tokens,
            data_dir: o
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            otlp_grpc: address(
                &pick(o.otlp_grpc, file.otlp_grpc, DEFAULT_OTLP_GRPC),
                "OTLP/gRPC",
            )?,
            otlp_http: address(
                &pick(o.otlp_http, file.otlp_http, DEFAULT_OTLP_HTTP),
                "OTLP/HTTP",
            )?,
            listen: address(&pick(o.listen, file.listen, DEFAULT_LISTEN), "UI and API")?,
            max_body_bytes,
            ready_file: o.ready_file,
            storage,
            query,
            config_file,
        };
        config.check_exposure()?;
        Ok(config)
    }

    /// Refuses open access on an address others can reach.
    fn check_exposure(&self) -> anyhow::Result<()> {
        if !self.auth_tokens.is_empty() {
            return Ok(());
        }
        for (addr, flag) in [
            (self.otlp_grpc, "--otlp-grpc"),
            (self.otlp_http, "--otlp-http"),
            (self.listen, "--listen"),
        ] {
            if !addr.ip().is_loopback() {
                bail!(
                    "refusing to listen on {addr} ({flag}) without access tokens: anyone who can \
                     reach it could read and write this telemetry. Add [[auth.tokens]] to \
                     sightline.toml (see the README), or listen on 127.0.0.1"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: FileConfig = toml::from_str(
            "otlp_http = \"127.0.0.1:5318\"\nlisten = \"127.0.0.1:5319\"\n[retention]\nlogs = \"3d\"\nspans = \"30d\"\nspan_rollups = \"400d\"\n[storage]\nflush_interval = \"2s\"",
        )
        .expect("valid toml");
        let overrides = Overrides {
            listen: Some("127.0.0.1:6319".into()),
            ..Default::default()
        };
        let config = ServeConfig::merge(overrides, file, None).expect("valid config");
        assert_eq!(config.listen.to_string(), "127.0.0.1:6319");
        assert_eq!(config.otlp_http.to_string(), "127.0.0.1:5318");
        assert_eq!(config.otlp_grpc.to_string(), DEFAULT_OTLP_GRPC);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(config.storage.flush_interval, Duration::from_secs(2));
        assert_eq!(
            config.storage.retention.get(&Signal::Logs),
            Some(&Some(Duration::from_secs(3 * 86_400)))
        );
        assert_eq!(
            config.storage.retention.get(&Signal::Spans),
            Some(&Some(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(config.storage.retention.get(&Signal::Metrics), Some(&None));
        assert_eq!(
            config.storage.retention.get(&Signal::SpanRollups),
            Some(&Some(Duration::from_secs(400 * 86_400)))
        );
    }

    #[test]
    fn bad_values_are_reported_with_the_key() {
        let file: FileConfig =
            toml::from_str("[retention]\nspans = \"7 days\"").expect("valid toml");
        let err = ServeConfig::merge(Overrides::default(), file, None).expect_err("bad duration");
        assert!(format!("{err:#}").contains("retention.spans"), "{err:#}");
        let file: FileConfig = toml::from_str("[retention]\nspans = \"7d\"\nspan_rollups = \"3d\"")
            .expect("valid toml");
        let err =
            ServeConfig::merge(Overrides::default(), file, None).expect_err("rollups too short");
        assert!(
            format!("{err:#}")
                .contains("retention.span_rollups (3d) is shorter than retention.spans (7d)"),
            "{err:#}"
        );
        assert!(
            toml::from_str::<FileConfig>("listne = \"x\"").is_err(),
            "unknown keys are refused"
        );
        let overrides = Overrides {
            otlp_grpc: Some("localhost".into()),
            ..Default::default()
        };
        let err =
            ServeConfig::merge(overrides, FileConfig::default(), None).expect_err("bad address");
        assert!(format!("{err:#}").contains("IP:PORT"), "{err:#}");
    }
}
