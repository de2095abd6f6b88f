//! Watching what Sightline stores: service-level objectives and their error budgets.
//!
//! [`budget`] holds the arithmetic every SLO answer and alert is made of — the SLI from good and
//! total request counts, the error budget and how much of it is left, burn rates over the
//! reporting windows, time to exhaustion — and [`budget::alert_windows`], the SRE workbook's
//! multi-window, multi-burn-rate alert table scaled to an SLO's window. It reads no tables and
//! keeps no state: the counts come from `span_rollups` through the query crate. [`config`] reads
//! and checks `[monitor]`, `[[slo]]`, `[[alert]]` and `[[notify]]`.

#![deny(missing_docs)]

pub mod budget;
pub mod config;
