//! `sightline ship FILE…|- [--service S] [--follow]`: sends JSON log files (or standard input) to a
//! server's `POST /v1/logs` as JSON lines, in batches. A line that is not a JSON object is sent
//! as `{"message": line}`. With `--follow` it keeps reading as the files grow and follows them
//! when they are rotated (renamed and recreated, or truncated), as `tail -F` does. A checkpoint
//! file remembers, per file, how far the server has acknowledged, so a restart neither loses
//! nor sends again what was acknowledged. 429 and 503 (and an unreachable server) are retried
//! with backoff, honouring `Retry-After`; a progress line is drawn on a terminal.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

/// Lines per request at most.
const BATCH_LINES: usize = 2000;
/// Bytes per request at most (before gzip).
const BATCH_BYTES: usize = 4 << 20;
/// How often a followed file is looked at once it is read to its end.
const POLL: Duration = Duration::from_millis(200);
/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct ShipArgs {
    /// JSON log files to send, or `-` for standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The service of lines that name none (sent as `?service=`).
    #[arg(long)]
    pub service: Option<String>,
    /// Keep reading as the files grow, following rotations (Ctrl-C stops).
    #[arg(long)]
    pub follow: bool,
    /// Where acknowledged offsets are kept (not for standard input).
    #[arg(long, default_value = ".sightline-ship.json")]
    pub checkpoint: PathBuf,
    /// Sightline's OTLP/HTTP address.
    #[arg(
        long,
        env = "SIGHTLINE_OTLP_URL",
        default_value = "http://127.0.0.1:4318"
    )]
    pub url: String,
}

/// How far each file has been acknowledged: its identity (device and inode) and offset.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
struct Checkpoint {
    files: BTreeMap<String, Position>,
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq)]
struct Position {
    dev: u64,
    ino: u64,
    offset: u64,
}

impl Checkpoint {
    fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the checkpoint {} is not one sightline ship wrote; remove it to start over",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Written whole or not at all: a temporary file, synced, renamed over the old one.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write the checkpoint {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec(self)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot write the checkpoint {}", path.display()))?;
        Ok(())
    }
}

/// One file being read.
struct Source {
    key: String,
    path: Option<PathBuf>,
    reader: Box<dyn Read>,
    identity: (u64, u64),
    /// Bytes of the file consumed into lines (acknowledged or pending).
    offset: u64,
    partial: Vec<u8>,
    done: bool,
    /// A pipe: what a read brings is sent at once, not held for a full batch.
    streaming: bool,
}

impl Source {
    fn open(path: &Path, checkpoint: &Checkpoint) -> anyhow::Result<Self> {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let meta = file.metadata()?;
        let key = std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        let identity = (meta.dev(), meta.ino());
        let offset = match checkpoint.files.get(&key) {
            // The same file, not shorter than what was sent: go on from there.
            Some(p) if (p.dev, p.ino) == identity && p.offset <= meta.len() => p.offset,
            _ => 0,
        };
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            key,
            path: Some(path.to_path_buf()),
            reader: Box::new(file),
            identity,
            offset,
            partial: Vec::new(),
            done: false,
            streaming: false,
        })
    }

    fn stdin() -> Self {
        Self {
            key: "-".into(),
            path: None,
            reader: Box::new(std::io::stdin()),
            identity: (0, 0),
            offset: 0,
            partial: Vec::new(),
            done: false,
            streaming: true,
        }
    }

    /// Reads what is there; complete lines go to `out` (with the offset after each).
    fn read_lines(&mut self, out: &mut Vec<(Vec<u8>, u64)>, max: usize) -> anyhow::Result<usize> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0;
        while out.len() < max {
            let n = self.reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            read += n;
            let mut start = 0;
            for (i, b) in buf[..n].iter().enumerate() {
                if *b == b'\n' {
                    self.partial.extend_from_slice(&buf[start..i]);
                    self.offset += (self.partial.len() + 1) as u64;
                    out.push((std::mem::take(&mut self.partial), self.offset));
                    start = i + 1;
                }
            }
            self.partial.extend_from_slice(&buf[start..n]);
            if self.streaming && !out.is_empty() {
                break;
            }
        }
        Ok(read)
    }

    /// The last line without a newline, at the end of a file that is not followed.
    fn flush_partial(&mut self, out: &mut Vec<(Vec<u8>, u64)>) {
        if !self.partial.is_empty() {
            self.offset += self.partial.len() as u64;
            out.push((std::mem::take(&mut self.partial), self.offset));
        }
    }

    /// For `--follow`: true when the path now names another file, or this one was truncated.
    fn rotated(&self) -> bool {
        let Some(path) = &self.path else { return false };
        match std::fs::metadata(path) {
            Ok(meta) => (meta.dev(), meta.ino()) != self.identity || meta.len() < self.offset,
            Err(_) => false, // between the rename and the new file
        }
    }
}

/// A line as JSON lines carries it: JSON objects as they are, anything else as a message.
fn as_json_line(line: &[u8]) -> Vec<u8> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    if let Ok(serde_json::Value::Object(_)) = serde_json::from_slice::<serde_json::Value>(line) {
        return line.to_vec();
    }
    let text = String::from_utf8_lossy(line);
    serde_json::to_vec(&serde_json::json!({ "message": text })).unwrap_or_default()
}

struct Shipper {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    lines: u64,
    rejected: u64,
    first_rejection: Option<String>,
    progress: bool,
}

impl Shipper {
    /// Sends one batch until the server acknowledges it; 429, 503 and connection failures wait
    /// and retry (a refusal of the batch itself is an error).
    async fn send(&mut self, lines: &[Vec<u8>], follow: bool) -> anyhow::Result<()> {
        let mut body = Vec::new();
        for line in lines {
            let json = as_json_line(line);
            if !json.is_empty() {
                body.extend_from_slice(&json);
                body.push(b'\n');
            }
        }
        if body.is_empty() {
            return Ok(());
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body)?;
        let compressed = gz.finish()?;
        let mut backoff = Duration::from_millis(250);
        let mut failures = 0;
        loop {
            let mut request = self
                .http
                .post(&self.url)
                .header("Content-Type", "application/x-ndjson")
                .header("Content-Encoding", "gzip")
                .body(compressed.clone());
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let wait = match request.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
                    if let Some(partial) = answer.get("partialSuccess") {
                        let n = partial
                            .get("rejectedLogRecords")
                            .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64()))
                            .unwrap_or(0);
                        self.rejected += n;
                        if self.first_rejection.is_none() {
                            self.first_rejection = partial
                                .get("errorMessage")
                                .and_then(|m| m.as_str())
                                .map(str::to_string);
                        }
                    }
                    self.lines += lines.len() as u64;
                    return Ok(());
                }
                Ok(resp) if matches!(resp.status().as_u16(), 429 | 503) => resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(backoff),
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    bail!("the server refused a batch ({status}): {text}");
                }
                Err(e) => {
                    failures += 1;
                    if !follow && failures > 8 {
                        bail!(
                            "cannot reach Sightline at {} ({e}); is `sightline serve` running? (--url sets the address)",
                            self.url
                        );
                    }
                    backoff
                }
            };
            if self.progress {
                eprint!(
                    "\rwaiting {:.1} s for the server to take more…",
                    wait.as_secs_f64()
                );
            }
            tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn show(&self) {
        if self.progress {
            eprint!(
                "\rshipped {} lines ({} rejected)   ",
                self.lines, self.rejected
            );
            let _ = std::io::stderr().flush();
        }
    }
}

pub async fn run(args: ShipArgs) -> anyhow::Result<()> {
    let mut checkpoint = Checkpoint::load(&args.checkpoint)?;
    let mut sources = Vec::new();
    for path in &args.files {
        if path == Path::new("-") {
            sources.push(Source::stdin());
        } else {
            sources.push(Source::open(path, &checkpoint)?);
        }
    }
    let base = args.url.trim_end_matches('/');
    let url = match &args.service {
        Some(s) => format!("{base}/v1/logs?service={}", crate::url::encode_component(s)),
        None => format!("{base}/v1/logs"),
    };
    let mut shipper = Shipper {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        url,
        token: std::env::var("SIGHTLINE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        lines: 0,
        rejected: 0,
        first_rejection: None,
        progress: std::io::stderr().is_terminal(),
    };
    let mut last_show = Instant::now();
    loop {
        let mut idle = true;
        for source in sources.iter_mut().filter(|s| !s.done) {
            let mut lines = Vec::new();
            let read = source.read_lines(&mut lines, BATCH_LINES)?;
            if read == 0 {
                if !args.follow || source.path.is_none() {
                    source.flush_partial(&mut lines);
                    source.done = true;
                } else if source.rotated() {
                    // The old file is read to its end; go on with the new one from its start.
                    source.flush_partial(&mut lines);
                    let path = source.path.clone().expect("a followed file has a path");
                    checkpoint.files.remove(&source.key);
                    *source = Source::open(&path, &checkpoint)?;
                }
            }
            if lines.is_empty() {
                continue;
            }
            idle = false;
            // Batches by lines and bytes, each acknowledged before the checkpoint moves.
            let mut batch: Vec<Vec<u8>> = Vec::new();
            let mut bytes = 0;
            let mut end = 0;
            for (line, offset) in lines {
                bytes += line.len();
                batch.push(line);
                end = offset;
                if bytes >= BATCH_BYTES {
                    shipper.send(&batch, args.follow).await?;
                    save(&mut checkpoint, source, end, &args.checkpoint)?;
                    batch.clear();
                    bytes = 0;
                }
            }
            if !batch.is_empty() {
                shipper.send(&batch, args.follow).await?;
                save(&mut checkpoint, source, end, &args.checkpoint)?;
            }
        }
        if last_show.elapsed() > Duration::from_millis(200) {
            shipper.show();
            last_show = Instant::now();
        }
        if sources.iter().all(|s| s.done) {
            break;
        }
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = tokio::signal::ctrl_c() => break,
            }
        }
    }
    if shipper.progress {
        eprintln!();
    }
    eprintln!(
        "shipped {} lines to {}{}",
        shipper.lines,
        shipper.url,
        match &shipper.first_rejection {
            Some(reason) => format!(
                "; the server rejected {} (the first: {reason})",
                shipper.rejected
            ),
            None => String::new(),
        }
    );
    Ok(())
}

fn save(
    checkpoint: &mut Checkpoint,
    source: &Source,
    offset: u64,
    path: &Path,
) -> anyhow::Result<()> {
    if source.path.is_none() {
        return Ok(());
    }
    checkpoint.files.insert(
        source.key.clone(),
        Position {
            dev: source.identity.0,
            ino: source.identity.1,
            offset,
        },
    );
    checkpoint.save(path)
}
