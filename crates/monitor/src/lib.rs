//! Watching what Sightline stores: service-level objectives and their error budgets, alert
//! rules and data checks, their evaluation and state, silences and notifications.
//!
//! [`budget`] holds the arithmetic every SLO answer and alert is made of — the SLI from good and
//! total request counts, the error budget and how much of it is left, burn rates over the
//! reporting windows, time to exhaustion — and [`budget::alert_windows`], the SRE workbook's
//! multi-window, multi-burn-rate alert table scaled to an SLO's window. [`config`] reads and
//! checks `[monitor]`, `[[slo]]`, `[[alert]]` and `[[notify]]`. [`alert`] is an alert as
//! notifications see it; [`silence`] mutes matching alerts; [`notify`] groups alerts and
//! delivers them as Alertmanager's webhook payload or to Slack; [`deploys`] records deploys, told
//! or observed. [`check`] holds the `[[check]]` data checks, evaluated with the rules;
//! [`quality`] keeps the hour summaries the telemetry-quality report is judged from.

#![deny(missing_docs)]

pub mod alert;
pub mod budget;
pub mod check;
pub mod config;
pub mod deploys;
pub mod error;
pub mod eval;
pub mod events;
pub mod kept;
pub mod measure;
pub mod monitor;
pub mod notify;
pub mod quality;
pub mod silence;
pub mod state;
pub mod store;

pub use alert::{Alert, AlertState};
pub use config::MonitorConfig;
pub use error::Error;
pub use monitor::{Monitor, run};
