//! `sightline redact scan`: what stored data still matches the server's redaction rules (data
//! written before a rule existed, or while redaction was off). The window is asked for an hour
//! at a time (`GET /api/v1/admin/redaction/scan`), with a progress line on a terminal, and the
//! findings are printed per rule and column with their examples masked. Exit status 1 when
//! anything matches, so a script can tell.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::client::ApiClient;
use super::monitor::table;
use crate::redact_scan::ScanReport;

const HOUR_NS: i64 = 3_600_000_000_000;

#[derive(Debug, Subcommand)]
pub enum RedactCommand {
    /// Report, per rule and column, what already-stored data still matches the redaction
    /// rules (exit status 1 when something does).
    Scan(ScanArgs),
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// The window: this long back from now (1h, 24h, 7d).
    #[arg(long, default_value = "24h", conflicts_with = "start")]
    pub since: String,
    /// The window's start instead, RFC 3339 or nanoseconds (with --end).
    #[arg(long, requires = "end")]
    pub start: Option<String>,
    /// The window's end, RFC 3339 or nanoseconds.
    #[arg(long, requires = "start")]
    pub end: Option<String>,
    /// Print the merged report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Sightline's API address (the token in SIGHTLINE_TOKEN needs the admin scope).
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
}

fn instant(text: &str, flag: &str) -> anyhow::Result<i64> {
    if let Ok(ns) = text.parse::<i64>() {
        return Ok(ns);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .with_context(|| {
            format!(
                "{flag} {text:?} is not a time: expected RFC 3339 (2026-11-22T10:00:00Z) or nanoseconds since the epoch"
            )
        })
}

pub async fn run(command: RedactCommand) -> anyhow::Result<ExitCode> {
    let RedactCommand::Scan(args) = command;
    let now_ns = chrono::Utc::now()
        .timestamp_nanos_opt()
        .context("the clock is out of range")?;
    let (start_ns, end_ns) = match (&args.start, &args.end) {
        (Some(start), Some(end)) => (instant(start, "--start")?, instant(end, "--end")?),
        _ => {
            let back = sightline_model::parse_duration_ns(&args.since)
                .with_context(|| format!("--since {:?}", args.since))?;
            (now_ns.saturating_sub(back), now_ns.saturating_add(1))
        }
    };
    if end_ns <= start_ns {
        bail!("--end must be after --start");
    }
    let client = ApiClient::new(&args.url)?;
    let hours = ((end_ns - start_ns + HOUR_NS - 1) / HOUR_NS).max(1);
    let progress = std::io::stderr().is_terminal();
    let mut report = ScanReport::default();
    let mut from = start_ns;
    let mut done = 0;
    while from < end_ns {
        let to = from.saturating_add(HOUR_NS).min(end_ns);
        let answer = client
            .get(
                "/api/v1/admin/redaction/scan",
                &[("start", from.to_string()), ("end", to.to_string())],
                "scanning stored data",
            )
            .await?;
        let part: ScanReport = serde_json::from_value(answer)
            .context("the server's scan report has an unexpected shape")?;
        report.merge(part);
        done += 1;
        if progress {
            let rows: u64 = report.rows_scanned.values().sum();
            let found: u64 = report.findings.iter().map(|f| f.count).sum();
            eprint!("\rscanned {done}/{hours} hours: {rows} records, {found} matches");
            let _ = std::io::stderr().flush();
        }
        from = to;
    }
    if progress {
        eprintln!();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn when(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M UTC")
        .to_string()
}

/// The report as a person reads it.
pub fn render(report: &ScanReport) -> String {
    let rows = |t: &str| report.rows_scanned.get(t).copied().unwrap_or(0);
    let mut out = format!(
        "Scanned {} spans, {} log records and {} metric points from {} to {} for: {}.\n",
        rows("spans"),
        rows("logs"),
        rows("metrics"),
        when(report.start_ns),
        when(report.end_ns),
        if report.rules.is_empty() {
            "no rule (redaction is off)".to_string()
        } else {
            report.rules.join(", ")
        }
    );
    if !report.truncated.is_empty() {
        out.push_str(&format!(
            "Some hours of {} held more rows than one pass reads; those rows were not all scanned.\n",
            report.truncated.join(", ")
        ));
    }
    if report.findings.is_empty() {
        out.push_str("Nothing stored matches the redaction rules.\n");
        return out;
    }
    let total: u64 = report.findings.iter().map(|f| f.count).sum();
    out.push_str(&format!(
        "{total} stored values still match (written before a rule existed, or while redaction was off); retention drops them with their segments:\n"
    ));
    out.push_str(&table(
        &["rule", "column", "values", "rows", "examples (masked)"],
        report
            .findings
            .iter()
            .map(|f| {
                vec![
                    f.rule.clone(),
                    format!("{}.{}", f.table, f.column),
                    f.count.to_string(),
                    f.rows.to_string(),
                    f.examples.join("  "),
                ]
            })
            .collect(),
    ));
    out
}
