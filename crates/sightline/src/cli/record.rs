//! `sightline record [--contract FILE] [--out DIR] [--config FILE] -- COMMAND…`: runs a command (a test suite, a
//! script, a service under a short load) with its OpenTelemetry exporters pointed at a Sightline
//! started for the run, on loopback ports of its own; then says what the command emitted and
//! judges it against a telemetry contract ([`sightline_query::contract`]).
//!
//! Exit status: the command's own when it failed (128 + the signal when a signal ended it);
//! otherwise 1 when a contract rule is broken (each one named), 0 when every rule holds; 2 when
//! it cannot answer (an invalid contract, a command that cannot start, a server that cannot).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use sightline_query::QueryEngine;
use sightline_query::contract::{self, Contract, Recorded, Verdict};

use crate::config::{FileConfig, Overrides, ServeConfig};

/// `sightline record`.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The telemetry contract (TOML): `[[span]]` rules, `[logs]`, `[forbid]`.
    #[arg(long, value_name = "FILE")]
    pub contract: Option<PathBuf>,
    /// Keep what was recorded in this data folder (`sightline serve --data-dir DIR` opens it);
    /// by default a temporary folder, removed at the end.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A server config file whose `[redaction]` and `[limits]` apply to the recording (a team's
    /// own rules); nothing else of it does (addresses, storage, tokens, monitor, scrape).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `text` for people, `json` for CI tooling (the command's own standard output then goes
    /// to standard error, so standard output holds the JSON alone).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// The command to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Reads and checks a contract file; a mistake names its key (`span[0].min_count`).
pub fn read_contract(path: &Path) -> anyhow::Result<Contract> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read contract file {}", path.display()))?;
    let parsed: Contract = crate::config::parse_toml(&text, "contract key")
        .with_context(|| format!("invalid contract file {}", path.display()))?;
    parsed
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid contract file {}: {e}", path.display()))?;
    Ok(parsed)
}

/// The environment that points the OpenTelemetry SDKs' OTLP exporters at `http`: the general
/// endpoint, and each signal's (which would otherwise win) over HTTP/protobuf.
pub fn exporter_environment(http: std::net::SocketAddr) -> Vec<(String, String)> {
    let base = format!("http://{http}");
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), base.clone()),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
            "http/protobuf".to_string(),
        ),
    ];
    for (signal, path) in [
        ("TRACES", "traces"),
        ("METRICS", "metrics"),
        ("LOGS", "logs"),
    ] {
        env.push((
            format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
            format!("{base}/v1/{path}"),
        ));
        env.push((
            format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"),
            "http/protobuf".to_string(),
        ));
    }
    env
}

/// How the command ended, as an exit status of its own.
fn status_code(status: std::process::ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(1);
        }
    }
    1
}

/// Runs the command under a recording server and judges what it sent; returns the exit status.
pub async fn run(args: RecordArgs) -> anyhow::Result<u8> {
    let contract = match &args.contract {
        Some(path) => Some(read_contract(path)?),
        None => None,
    };
    let temporary;
    let data_dir = match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --out folder {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temporary = tempfile::Builder::new()
                .prefix("sightline-record-")
                .tempdir()
                .context("cannot create a temporary data folder")?;
            temporary.path().to_path_buf()
        }
    };
    let file = match &args.config {
        Some(path) => {
            let full = crate::config::read_file_config(path)?;
            FileConfig {
                limits: full.limits,
                redaction: full.redaction,
                ..Default::default()
            }
        }
        None => FileConfig::default(),
    };
    let loopback = || Some("127.0.0.1:0".to_string());
    let config = ServeConfig::merge(
        Overrides {
            data_dir: Some(data_dir.clone()),
            otlp_grpc: loopback(),
            otlp_http: loopback(),
            listen: loopback(),
            redaction_key: std::env::var(sightline_ingest::redact::HASH_KEY_VARIABLE).ok(),
            ..Default::default()
        },
        file,
        args.config.clone(),
    )
    .with_context(|| match &args.config {
        Some(path) => format!("invalid configuration ({})", path.display()),
        None => "invalid configuration".to_string(),
    })?;
    let listeners = crate::app::Listeners::bind(&config).await?;
    let (http, grpc, api) = (
        listeners.otlp_http.local_addr()?,
        listeners.otlp_grpc.local_addr()?,
        listeners.api.local_addr()?,
    );
    let app = crate::app::App::open(config, Arc::new(sightline_model::SystemClock)).await?;
    let engine = app.engine().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(listeners, async move {
        let _ = stopped.await;
    }));
    eprintln!(
        "recording: OTLP/HTTP http://{http}, OTLP/gRPC http://{grpc}, UI http://{api} (while {} runs)",
        args.command[0]
    );

    let mut command = tokio::process::Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .envs(exporter_environment(http))
        .env("SIGHTLINE_URL", format!("http://{api}"))
        .kill_on_drop(true);
    if args.format == "json" {
        // Standard output holds the JSON answer alone: what the command prints goes to stderr.
        command.stdout(std::process::Stdio::from(std::io::stderr()));
    }
    // Ctrl-C reaches the command too (one process group): the recording outlives it, so that
    // what the command sent while it stopped is judged and kept.
    tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    let outcome = match command.spawn() {
        Ok(mut child) => child
            .wait()
            .await
            .with_context(|| format!("waiting for {}", args.command[0])),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot run {:?}: is it installed and on PATH?",
            args.command[0]
        ))),
    };
    // Whatever the command did, the server stops cleanly and flushes what it took.
    let judged = match &outcome {
        Ok(_) => Some(judge(&engine, contract.as_ref()).await),
        Err(_) => None,
    };
    let _ = stop.send(());
    let closed = server.await.context("the recording server failed")?;
    let status = outcome?;
    closed.context("the recording server could not close its data folder")?;
    let (recorded, verdicts) =
        judged.unwrap_or_else(|| Err(anyhow::anyhow!("the command did not run")))?;

    let code = status_code(status);
    let broken = verdicts.iter().filter(|v| !v.ok).count();
    if args.format == "json" {
        let answer = json!({
            "command": {"argv": args.command, "status": code},
            "recorded": recorded,
            "data_dir": args.out.as_ref().map(|_| data_dir.display().to_string()),
            "contract": args.contract.as_ref().map(|p| p.display().to_string()),
            "rules": verdicts,
            "ok": code == 0 && broken == 0,
        });
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!(
            "{}",
            report(
                &recorded,
                &verdicts,
                args.contract.as_deref(),
                args.out.as_deref()
            )
        );
        if code != 0 {
            println!("{} exited with status {code}", args.command[0]);
        }
    }
    Ok(if code != 0 {
        code
    } else {
        u8::from(broken > 0)
    })
}

async fn judge(
    engine: &QueryEngine,
    contract: Option<&Contract>,
) -> anyhow::Result<(Recorded, Vec<Verdict>)> {
    let recorded = contract::recorded(engine)
        .await
        .context("counting what was recorded")?;
    let verdicts = match contract {
        Some(c) => contract::judge(engine, c)
            .await
            .context("judging the contract")?,
        None => Vec::new(),
    };
    Ok((recorded, verdicts))
}

/// The text report: what was recorded, then each rule.
fn report(
    recorded: &Recorded,
    verdicts: &[Verdict],
    contract: Option<&Path>,
    out: Option<&Path>,
) -> String {
    let mut text = format!(
        "recorded {} span(s), {} log line(s) and {} metric point(s) from {} service(s){}\n",
        recorded.spans,
        recorded.logs,
        recorded.metric_points,
        recorded.services.len(),
        if recorded.services.is_empty() {
            String::new()
        } else {
            format!(": {}", recorded.services.join(", "))
        }
    );
    if let Some(path) = contract {
        let held = verdicts.iter().filter(|v| v.ok).count();
        text.push_str(&format!(
            "contract {}: {held} of {} rule(s) hold\n",
            path.display(),
            verdicts.len()
        ));
        for v in verdicts {
            text.push_str(&format!(
                "  {:<5} {}: {}\n",
                if v.ok { "ok" } else { "FAIL" },
                v.rule,
                v.summary
            ));
            for e in &v.examples {
                text.push_str(&format!("          {e}\n"));
            }
        }
    }
    if let Some(dir) = out {
        text.push_str(&format!(
            "kept in {} (sightline serve --data-dir {} to look)\n",
            dir.display(),
            dir.display()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_contract_is_read_by_the_real_contract_reader() {
        let block = crate::cli::readme_toml_blocks()
            .into_iter()
            .find(|b| b.starts_with(crate::cli::README_CONTRACT_MARK))
            .expect("the README shows a contract");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("telemetry.toml");
        std::fs::write(&path, &block).expect("write");
        let contract = read_contract(&path).unwrap_or_else(|e| panic!("{e:#}\n{block}"));
        assert_eq!(contract.rules(), 5, "{contract:?}");
        std::fs::write(&path, "[[span]]\nname = \"a\"\nmin_count = -1\n").expect("write");
        let err = format!("{:#}", read_contract(&path).expect_err("negative count"));
        assert!(err.contains("contract key span[0].min_count"), "{err}");
    }

    #[test]
    fn every_signal_is_pointed_at_the_recording_server_over_http() {
        let env: std::collections::HashMap<_, _> =
            exporter_environment("127.0.0.1:4999".parse().expect("addr"))
                .into_iter()
                .collect();
        assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://127.0.0.1:4999");
        assert_eq!(
            env["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"],
            "http://127.0.0.1:4999/v1/logs"
        );
        assert!(
            env.iter()
                .filter(|(k, _)| k.ends_with("_PROTOCOL"))
                .all(|(_, v)| v == "http/protobuf")
        );
        assert_eq!(env.len(), 8);
    }
}
