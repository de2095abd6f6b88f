//! The bootstrap of `sightline serve`: where it listens, where its data folder is, TLS, and the
//! precedence of command-line flags, then `SIGHTLINE_*` environment variables (both read by
//! clap), then `sightline.toml`, then defaults. Every other table of the file belongs to the
//! crate it configures — `[storage]`, `[retention]` and `[sampling]` to the store, `[query]` to the query
//! engine, `[limits]` and `[redaction]` to ingest, `[auth]` to [`crate::auth`], `[monitor]`, `[[slo]]`, `[[alert]]`
//! and `[[notify]]` to the monitor — which deserializes it, fills
//! defaults, refuses unknown keys and validates it; this module only reads the file and asks
//! each to check itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sightline_model::HumanDuration;
use sightline_monitor::MonitorConfig;
use sightline_monitor::config::{AlertConfig, MonitorSection, NotifyConfig, SloConfig};
use sightline_query::QueryConfig;
use sightline_storage::{RetentionConfig, StorageConfig, StoreOptions};

use crate::auth::AuthConfig;

/// Where OTLP/gRPC is received unless configured otherwise.
pub const DEFAULT_OTLP_GRPC: &str = "127.0.0.1:4317";
/// Where OTLP/HTTP is received unless configured otherwise.
pub const DEFAULT_OTLP_HTTP: &str = "127.0.0.1:4318";
/// Where the UI and API listen unless configured otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4319";
/// The data folder unless configured otherwise.
pub const DEFAULT_DATA_DIR: &str = "./sightline-data";
/// The config file read from the working folder when present.
pub const DEFAULT_CONFIG_FILE: &str = "sightline.toml";
/// The largest export body accepted unless configured otherwise.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Export bodies decoded at once unless configured: one per core, at least two.
pub fn default_concurrent_decodes() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// `sightline.toml`. Every key is optional; durations are written like `10s`, `7d`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The data folder.
    pub data_dir: Option<PathBuf>,
    /// The OTLP/gRPC address.
    pub otlp_grpc: Option<String>,
    /// The OTLP/HTTP address.
    pub otlp_http: Option<String>,
    /// The UI and API address.
    pub listen: Option<String>,
    /// The largest export body, compressed or not, in bytes.
    pub max_body_bytes: Option<u64>,
    /// Export bodies inflated and decoded at once (default: one per core, at least two).
    pub max_concurrent_decodes: Option<usize>,
    /// `[storage]`.
    #[serde(default)]
    pub storage: StorageConfig,
    /// `[retention]`.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// `[query]`.
    #[serde(default)]
    pub query: QueryConfig,
    /// `[limits]`.
    #[serde(default)]
    pub limits: sightline_ingest::Limits,
    /// `[auth]`.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[redaction]`.
    #[serde(default)]
    pub redaction: sightline_ingest::redact::RedactionConfig,
    /// `[sampling]`.
    #[serde(default)]
    pub sampling: sightline_storage::SamplingConfig,
    /// `[tls]`.
    #[serde(default)]
    pub tls: TlsSection,
    /// `[monitor]`.
    #[serde(default)]
    pub monitor: MonitorSection,
    /// `[[slo]]`.
    #[serde(default)]
    pub slo: Vec<SloConfig>,
    /// `[[alert]]`.
    #[serde(default)]
    pub alert: Vec<AlertConfig>,
    /// `[[notify]]`.
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
    /// `[[scrape]]`: Prometheus targets.
    #[serde(default)]
    pub scrape: Vec<crate::scrape::ScrapeConfig>,
    /// `[[check]]`: data checks.
    #[serde(default)]
    pub check: Vec<sightline_monitor::check::CheckConfig>,
}

/// `[tls]`: a PEM certificate chain and its private key; every listener then speaks TLS.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

/// Values given on the command line or in the environment (clap has merged those two).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--otlp-grpc`.
    pub otlp_grpc: Option<String>,
    /// `--otlp-http`.
    pub otlp_http: Option<String>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--max-body-bytes`.
    pub max_body_bytes: Option<u64>,
    /// `--flush-interval` (over `storage.flush_interval`).
    pub flush_interval: Option<String>,
    /// `--ready-file`.
    pub ready_file: Option<PathBuf>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `SIGHTLINE_REDACTION_KEY`: the hash key of `[redaction] mode = "hash"` when the file has
    /// none (an environment variable only, never a flag others could read in the process list).
    pub redaction_key: Option<String>,
}

/// The configuration `serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data folder.
    pub data_dir: PathBuf,
    /// The OTLP/gRPC address.
    pub otlp_grpc: SocketAddr,
    /// The OTLP/HTTP address.
    pub otlp_http: SocketAddr,
    /// The UI and API address.
    pub listen: SocketAddr,
    /// The largest export body, compressed or not, in bytes.
    pub max_body_bytes: u64,
    /// Export bodies inflated and decoded at once, OTLP/HTTP and gRPC together; a decoded body
    /// takes several times its size in memory, so this bounds decoding's memory.
    pub max_concurrent_decodes: usize,
    /// Where to write the bound addresses once ready.
    pub ready_file: Option<PathBuf>,
    /// `[storage]` and `[retention]`.
    pub store: StoreOptions,
    /// `[query]`.
    pub query: QueryConfig,
    /// `[limits]`: per-record bounds on attributes and value lengths.
    pub limits: sightline_ingest::Limits,
    /// `[redaction]`, compiled: what every request's values go through before normalization.
    pub redactor: sightline_ingest::Redactor,
    /// `[auth]`: access tokens; none means open access, allowed on loopback addresses only.
    pub auth: AuthConfig,
    /// `[monitor]`, `[[slo]]`, `[[alert]]` and `[[notify]]`.
    pub monitor: MonitorConfig,
    /// `[[scrape]]`: Prometheus targets scraped into `metrics`.
    pub scrape: Vec<crate::scrape::ScrapeConfig>,
    /// Certificate chain and private key (PEM) when the listeners speak TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where the file configuration came from, if any.
    pub config_file: Option<PathBuf>,
}

fn address(text: &str, what: &str) -> anyhow::Result<SocketAddr> {
    text.parse().with_context(|| {
        format!("invalid {what} address {text:?}: expected IP:PORT such as 127.0.0.1:4318")
    })
}

/// Reads a config file's text; a value of the wrong form names its key (`retention.spans`).
pub fn parse_file_config(text: &str) -> anyhow::Result<FileConfig> {
    parse_toml(text, "config key")
}

/// Reads TOML text into `T`; a value of the wrong form or an unknown key is named as
/// `{what} {path}` (`config key retention.spans`, `contract key span[0].min_count`).
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> anyhow::Result<T> {
    let document = toml::Deserializer::parse(text)?;
    serde_path_to_error::deserialize(document).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        if key.is_empty() || key == "." {
            anyhow::Error::new(inner)
        } else {
            anyhow::Error::new(inner).context(format!("{what} {key}"))
        }
    })
}

/// Reads `path` (it must exist when named explicitly).
pub fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_file_config(&text).with_context(|| format!("invalid config file {}", path.display()))
}

impl ServeConfig {
    /// Merges overrides, the config file (the named one, or `./sightline.toml` if present) and
    /// defaults, and validates the result.
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

    /// Flags and environment over the file over defaults; then each part checks its rules.
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
        let max_concurrent_decodes = file
            .max_concurrent_decodes
            .unwrap_or_else(default_concurrent_decodes);
        if max_concurrent_decodes == 0 {
            bail!("config key max_concurrent_decodes must be at least 1, not 0");
        }
        let mut storage = file.storage;
        if let Some(text) = &o.flush_interval {
            storage.flush_interval = text
                .parse::<HumanDuration>()
                .context("--flush-interval (SIGHTLINE_FLUSH_INTERVAL)")?;
        }
        let monitor = MonitorConfig {
            monitor: file.monitor,
            slos: file.slo,
            alerts: file.alert,
            notify: file.notify,
            checks: file.check,
        };
        monitor.validate()?;
        let store = StoreOptions {
            storage,
            retention: file.retention,
            // Rollups count good requests within each latency SLO's threshold, exactly.
            latency_thresholds_ns: monitor.latency_thresholds_ns(),
            sampling: file.sampling,
        };
        store.validate()?;
        file.query.validate()?;
        file.limits.validate()?;
        let redactor = file.redaction.compile(o.redaction_key.as_deref())?;
        file.auth.validate()?;
        crate::scrape::validate(&file.scrape)?;
        let tls = match (o.tls_cert.or(file.tls.cert), o.tls_key.or(file.tls.key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!(
                "TLS needs both a certificate and a key: give --tls-cert and --tls-key (or [tls] cert and key)"
            ),
        };
        let config = Self {
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
            max_concurrent_decodes,
            ready_file: o.ready_file,
            store,
            query: file.query,
            limits: file.limits,
            redactor,
            auth: file.auth,
            monitor,
            scrape: file.scrape,
            tls,
            config_file,
        };
        config.check_exposure()?;
        Ok(config)
    }

    /// Refuses open access on an address others can reach.
    fn check_exposure(&self) -> anyhow::Result<()> {
        if !self.auth.tokens.is_empty() {
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
    use sightline_model::{Lifetime, Table};

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file = parse_file_config(
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
        assert_eq!(
            config.store.storage.flush_interval,
            HumanDuration::from_secs(2)
        );
        let days = |n: i64| Lifetime::For(HumanDuration::from_secs(n * 86_400));
        let retention = config.store.retention;
        assert_eq!(retention.of(Table::Logs), days(3));
        assert_eq!(retention.of(Table::Spans), days(30));
        assert_eq!(retention.of(Table::Metrics), Lifetime::Forever);
        assert_eq!(retention.of(Table::SpanRollups), days(400));
        let flag = Overrides {
            flush_interval: Some("250ms".into()),
            ..Default::default()
        };
        let config = ServeConfig::merge(flag, FileConfig::default(), None).expect("valid");
        assert_eq!(config.store.storage.flush_interval.to_string(), "250ms");
    }

    #[test]
    fn bad_values_are_reported_with_the_key() {
        let err = parse_file_config("[retention]\nspans = \"7 days\"").expect_err("bad duration");
        assert!(
            format!("{err:#}").starts_with("config key retention.spans: "),
            "{err:#}"
        );
        let file = parse_file_config("[retention]\nspans = \"7d\"\nspan_rollups = \"3d\"")
            .expect("valid toml");
        let err =
            ServeConfig::merge(Overrides::default(), file, None).expect_err("rollups too short");
        assert!(
            format!("{err:#}")
                .contains("retention.span_rollups (3d) is shorter than retention.spans (7d)"),
            "{err:#}"
        );
        let err = parse_file_config("listne = \"x\"").expect_err("unknown keys are refused");
        assert!(format!("{err:#}").contains("listne"), "{err:#}");
        let err = parse_file_config("[query]\nmemory_bytes = 5").expect_err("unknown key");
        assert!(
            format!("{err:#}").contains("memory_bytes"),
            "the unknown key is named: {err:#}"
        );
        let file = parse_file_config("[query]\ntimeout = \"0s\"").expect("valid toml");
        let err = ServeConfig::merge(Overrides::default(), file, None).expect_err("zero timeout");
        assert!(format!("{err:#}").contains("query.timeout"), "{err:#}");
        let file = parse_file_config("max_concurrent_decodes = 0").expect("valid toml");
        let err = ServeConfig::merge(Overrides::default(), file, None).expect_err("no decodes");
        assert!(
            format!("{err:#}").contains("max_concurrent_decodes must be at least 1"),
            "{err:#}"
        );
        let file = parse_file_config("max_concurrent_decodes = 3").expect("valid toml");
        let config = ServeConfig::merge(Overrides::default(), file, None).expect("valid");
        assert_eq!(config.max_concurrent_decodes, 3);
        let overrides = Overrides {
            otlp_grpc: Some("localhost".into()),
            ..Default::default()
        };
        let err =
            ServeConfig::merge(overrides, FileConfig::default(), None).expect_err("bad address");
        assert!(format!("{err:#}").contains("IP:PORT"), "{err:#}");
    }

    /// The ```toml blocks of the README that are server configs (not `sightline record`'s
    /// contract, which `cli/record.rs` reads).
    fn readme_toml_blocks() -> Vec<String> {
        crate::cli::readme_toml_blocks()
            .into_iter()
            .filter(|b| !b.starts_with(crate::cli::README_CONTRACT_MARK))
            .collect()
    }

    #[test]
    fn the_readme_sample_config_is_read_by_the_real_config_and_shows_every_key_and_default() {
        let blocks = readme_toml_blocks();
        assert!(blocks.len() >= 2, "the sample and the tokens");
        for block in &blocks {
            // Unknown keys are refused, so the README names none that does not exist.
            parse_file_config(block).unwrap_or_else(|e| panic!("{e:#}\n{block}"));
        }
        let sample = blocks
            .iter()
            .find(|b| b.contains("every key optional"))
            .expect("the sample config");
        let file = parse_file_config(sample).expect("the sample parses");
        assert_eq!(
            file.storage,
            StorageConfig::default(),
            "[storage] shows the defaults"
        );
        assert!(file.query.max_concurrent.is_some(), "shown as an example");
        assert_eq!(
            QueryConfig {
                max_concurrent: None,
                ..file.query.clone()
            },
            QueryConfig::default(),
            "[query] shows the defaults"
        );
        assert_eq!(
            file.limits,
            sightline_ingest::Limits::default(),
            "[limits] shows the defaults"
        );
        assert_eq!(file.otlp_grpc.as_deref(), Some(DEFAULT_OTLP_GRPC));
        assert_eq!(file.otlp_http.as_deref(), Some(DEFAULT_OTLP_HTTP));
        assert_eq!(file.listen.as_deref(), Some(DEFAULT_LISTEN));
        assert_eq!(file.max_body_bytes, Some(DEFAULT_MAX_BODY_BYTES));
        assert!(file.max_concurrent_decodes.is_some(), "the sample shows it");
        let shown: toml::Table = toml::from_str(sample).expect("a table");
        let defaults = toml::Table::try_from(FileConfig::default()).expect("serializable");
        assert_eq!(
            sightline_ingest::redact::RedactionConfig {
                patterns: Vec::new(),
                ..file.redaction.clone()
            },
            sightline_ingest::redact::RedactionConfig::default(),
            "[redaction] shows the defaults"
        );
        assert!(!file.redaction.patterns.is_empty(), "shown as an example");
        assert_eq!(
            sightline_storage::SamplingConfig {
                keep: Vec::new(),
                ..file.sampling.clone()
            },
            sightline_storage::SamplingConfig::default(),
            "[sampling] shows the defaults"
        );
        for section in [
            "storage",
            "retention",
            "limits",
            "redaction",
            "sampling",
            "query",
        ] {
            let keys = defaults[section].as_table().expect("a section");
            let written = shown
                .get(section)
                .and_then(|v| v.as_table())
                .unwrap_or_else(|| panic!("the README has no [{section}]"));
            for key in keys.keys() {
                assert!(
                    written.contains_key(key),
                    "the README's [{section}] lacks {key}"
                );
            }
        }
        ServeConfig::merge(Overrides::default(), file, None).expect("the sample is valid");
    }
}
