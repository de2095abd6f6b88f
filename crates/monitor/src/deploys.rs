//! Deploys: told by a CI job (`POST /api/v1/deploys`, `sightline deploy`) or observed — the first
//! time spans of a service (and environment) carry a `service.version` it has not shown before.
//! The first version a service is ever seen with is where its history starts, not a deploy.
//! Deploys are appended to `monitor/deploys.jsonl` (synced before the answer), readable as the
//! SQL table `deploys`, and drawn as markers on the pages' time charts. The versions seen so far
//! are kept in `monitor/versions.json`, so a restart observes nothing twice.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use sightline_query::QueryEngine;
use sightline_query::sql::time_literal;

use crate::error::Error;

/// The name of the table.
pub const TABLE: &str = "deploys";

/// Each look reads this far back, so that spans sent late or backfilled (stamped hours ago)
/// still show their versions; the first look reads everything.
const LOOK_BACK_NS: i64 = 24 * 3_600 * 1_000_000_000;

/// Where a deploy was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploySource {
    /// Told through the API or the CLI.
    Api,
    /// A new `service.version` seen in spans.
    Observed,
}

impl DeploySource {
    /// `api` or `observed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Observed => "observed",
        }
    }
}

/// One deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deploy {
    /// When (ns since the epoch).
    pub time_ns: i64,
    /// The service deployed.
    pub service_name: String,
    /// Its new version.
    pub version: String,
    /// Where (`deployment.environment`), if said.
    pub environment: Option<String>,
    /// The commit, if said.
    pub commit: Option<String>,
    /// Words, if any.
    pub description: Option<String>,
    /// Told or observed.
    pub source: DeploySource,
}

/// The schema of `deploys`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("service_name", DataType::Utf8, false),
        Field::new("version", DataType::Utf8, false),
        Field::new("environment", DataType::Utf8, true),
        Field::new("commit", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, false),
    ]))
}

/// A version of a service in an environment.
type Seen = (String, Option<String>, String);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Versions {
    /// Every (service, environment, version) seen.
    seen: BTreeSet<Seen>,
    /// Up to where spans were looked at (ns).
    looked_until_ns: Option<i64>,
}

#[derive(Debug, Default)]
struct State {
    deploys: Vec<Deploy>,
    versions: Versions,
}

/// The deploys, in memory and in their files.
#[derive(Debug)]
pub struct DeployLog {
    path: PathBuf,
    versions_path: PathBuf,
    state: Mutex<State>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn io_error<'a>(path: &'a Path, doing: &'static str) -> impl Fn(std::io::Error) -> Error + 'a {
    move |source| Error::State {
        path: path.into(),
        doing,
        source,
    }
}

impl DeployLog {
    /// Reads the deploys and versions under `monitor_dir` (none on a first start). A last line
    /// cut short by a crash is left out.
    pub fn open(monitor_dir: &Path) -> Result<Self, Error> {
        let path = monitor_dir.join("deploys.jsonl");
        let versions_path = monitor_dir.join("versions.json");
        let deploys = crate::kept::read_lines::<Deploy>(&path)?;
        let versions = match std::fs::read(&versions_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::StateFormat {
                path: versions_path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Versions::default(),
            Err(e) => return Err(io_error(&versions_path, "read")(e)),
        };
        Ok(Self {
            path,
            versions_path,
            state: Mutex::new(State { deploys, versions }),
        })
    }

    fn append(&self, deploys: &[Deploy]) -> Result<(), Error> {
        crate::kept::append_lines(&self.path, deploys)
    }

    fn save_versions(&self, versions: &Versions) -> Result<(), Error> {
        let bytes = serde_json::to_vec(versions).map_err(|e| Error::Internal {
            message: e.to_string(),
        })?;
        crate::store::write_durably(&self.versions_path, &bytes)
    }

    /// Records a deploy told through the API, durably; its version counts as seen.
    pub fn record(&self, deploy: Deploy) -> Result<Deploy, Error> {
        if deploy.service_name.trim().is_empty() || deploy.version.trim().is_empty() {
            return Err(Error::Invalid {
                message: "a deploy needs a service and a version, like {\"service\": \"orders\", \"version\": \"1.5.0\"}".into(),
            });
        }
        self.append(std::slice::from_ref(&deploy))?;
        let mut state = lock(&self.state);
        state.versions.seen.insert((
            deploy.service_name.clone(),
            deploy.environment.clone(),
            deploy.version.clone(),
        ));
        state.deploys.push(deploy.clone());
        self.save_versions(&state.versions).map(|()| deploy)
    }

    /// The deploys of `service` (or all) at or after `since_ns` (or all), oldest first.
    pub fn list(&self, service: Option<&str>, since_ns: Option<i64>) -> Vec<Deploy> {
        let mut out: Vec<Deploy> = lock(&self.state)
            .deploys
            .iter()
            .filter(|d| service.is_none_or(|s| d.service_name == s))
            .filter(|d| since_ns.is_none_or(|t| d.time_ns >= t))
            .cloned()
            .collect();
        out.sort_by_key(|d| d.time_ns);
        out
    }

    /// Looks for versions not seen before in the spans' rollups of the last day (everything at
    /// the first look) and records each as an observed deploy at the first minute
    /// it appears. A service's first version is remembered, not recorded.
    pub async fn observe(&self, engine: &QueryEngine, now_ns: i64) -> Result<Vec<Deploy>, Error> {
        let since = lock(&self.state).versions.looked_until_ns;
        let mut conditions = vec![
            "service_version IS NOT NULL".to_string(),
            format!("time <= {}", time_literal(now_ns)),
        ];
        if let Some(since) = since {
            conditions.push(format!(
                "time >= {}",
                time_literal(since.min(now_ns) - LOOK_BACK_NS)
            ));
        }
        let sql = format!(
            "SELECT service_name, environment, service_version, CAST(min(time) AS BIGINT) AS first \
             FROM span_rollups WHERE {} GROUP BY 1, 2, 3 ORDER BY 4",
            conditions.join(" AND ")
        );
        let (_, batches, _) = engine.collect(&sql, 100_000).await?;
        let mut found: Vec<(Seen, i64)> = Vec::new();
        for batch in &batches {
            let text = |c: usize, row: usize| -> Option<String> {
                let a = batch.column(c);
                if a.is_null(row) {
                    return None;
                }
                a.as_string_opt::<i32>()
                    .map(|s| s.value(row).to_string())
                    .or_else(|| a.as_string_view_opt().map(|s| s.value(row).to_string()))
            };
            let firsts = batch
                .column(3)
                .as_primitive_opt::<arrow::datatypes::Int64Type>();
            for row in 0..batch.num_rows() {
                let (Some(service), Some(version), Some(first)) =
                    (text(0, row), text(2, row), firsts.map(|f| f.value(row)))
                else {
                    continue;
                };
                found.push(((service, text(1, row), version), first));
            }
        }
        let mut new = Vec::new();
        let versions = {
            let mut state = lock(&self.state);
            let mut known_services: HashSet<(String, Option<String>)> = state
                .versions
                .seen
                .iter()
                .map(|(s, e, _)| (s.clone(), e.clone()))
                .collect();
            for ((service, environment, version), first) in found {
                let key = (service.clone(), environment.clone(), version.clone());
                if state.versions.seen.contains(&key) {
                    continue;
                }
                // A service's first version starts its history; later ones are deploys.
                if known_services.contains(&(service.clone(), environment.clone())) {
                    new.push(Deploy {
                        time_ns: first,
                        service_name: service,
                        version,
                        environment,
                        commit: None,
                        description: Some("first seen in spans".into()),
                        source: DeploySource::Observed,
                    });
                }
                known_services.insert((key.0.clone(), key.1.clone()));
                state.versions.seen.insert(key);
            }
            state.versions.looked_until_ns = Some(now_ns);
            state.versions.clone()
        };
        self.append(&new)?;
        lock(&self.state).deploys.extend(new.iter().cloned());
        self.save_versions(&versions)?;
        Ok(new)
    }
}

impl crate::kept::Rows for DeployLog {
    fn batch(&self) -> Result<RecordBatch, Error> {
        let state = lock(&self.state);
        let d = &state.deploys;
        let opt = |f: fn(&Deploy) -> &Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(
                d.iter().map(|x| f(x).clone()).collect::<Vec<_>>(),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampNanosecondArray::from(d.iter().map(|x| x.time_ns).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                d.iter().map(|x| &x.service_name),
            )),
            Arc::new(StringArray::from_iter_values(d.iter().map(|x| &x.version))),
            opt(|x| &x.environment),
            opt(|x| &x.commit),
            opt(|x| &x.description),
            Arc::new(StringArray::from_iter_values(
                d.iter().map(|x| x.source.as_str()),
            )),
        ];
        RecordBatch::try_new(schema(), columns).map_err(|e| Error::Internal {
            message: e.to_string(),
        })
    }
}
