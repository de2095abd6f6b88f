//! The monitor's state in the data folder (`monitor/state.json`): every alert instance with its
//! phase and times, the silences, and the notifications' groups and deliveries in flight. It is
//! written whole after each evaluation (to a temporary file, synced, renamed over the old one,
//! folder synced), so a restart finds exactly the last evaluation's state: a firing alert is
//! not announced again and a pending one keeps counting its `for`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::notify::NotifierState;
use crate::silence::Silences;
use crate::state::Instance;

/// The version of the state file's layout.
const VERSION: u32 = 1;

/// Everything the monitor keeps between restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Persisted {
    /// The layout's version.
    #[serde(default)]
    pub version: u32,
    /// The last evaluation (ns), if any.
    #[serde(default)]
    pub evaluated_ns: Option<i64>,
    /// Every instance watched.
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// Silences, active and recently ended.
    #[serde(default)]
    pub silences: Silences,
    /// Notification groups and deliveries in flight.
    #[serde(default)]
    pub notifier: NotifierState,
}

/// Writes `bytes` to `path` so that the file is either the old one or the new one whole, and
/// durable once this returns.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |source| Error::State {
        path: path.into(),
        doing: "written",
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let temp = path.with_extension("tmp");
    {
        let mut file = File::create(&temp).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&temp, path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

/// The state file of a data folder.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file under `monitor_dir`.
    pub fn new(monitor_dir: &Path) -> Self {
        Self {
            path: monitor_dir.join("state.json"),
        }
    }

    /// Reads the state; an empty state when there is none yet.
    pub fn load(&self) -> Result<Persisted, Error> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Persisted {
                    version: VERSION,
                    ..Persisted::default()
                });
            }
            Err(source) => {
                return Err(Error::State {
                    path: self.path.clone(),
                    doing: "read",
                    source,
                });
            }
        };
        let state: Persisted = serde_json::from_slice(&bytes).map_err(|e| Error::StateFormat {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        if state.version > VERSION {
            return Err(Error::StateFormat {
                path: self.path.clone(),
                message: format!(
                    "it was written by a newer Sightline (layout {}; this one reads up to {VERSION})",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Writes the state durably.
    pub fn save(&self, state: &Persisted) -> Result<(), Error> {
        let mut state = state.clone();
        state.version = VERSION;
        let bytes = serde_json::to_vec(&state).map_err(|e| Error::Internal {
            message: e.to_string(),
        })?;
        write_durably(&self.path, &bytes)
    }
}
