//! Every input the OTLP fuzz targets ever found a bug with (`fuzz/regressions/`), and every seed
//! they start from (`fuzz/seeds/`), replayed through the same entry point: none may panic.

use std::path::{Path, PathBuf};

use sightline_ingest::BodyEncoding;
use sightline_ingest::fuzzing::ingest_any;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for kind in ["regressions", "seeds"] {
        if let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

fn replay(target: &str, encoding: BodyEncoding) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no seeds or regressions for {target}");
    for path in files {
        let data = std::fs::read(&path).expect("readable input");
        let outcome = std::panic::catch_unwind(|| ingest_any(&data, encoding));
        assert!(outcome.is_ok(), "{} panics", path.display());
    }
}

#[test]
fn otlp_protobuf_inputs_replay_without_panics() {
    replay("otlp_protobuf", BodyEncoding::Protobuf);
}

#[test]
fn otlp_json_inputs_replay_without_panics() {
    replay("otlp_json", BodyEncoding::Json);
}
