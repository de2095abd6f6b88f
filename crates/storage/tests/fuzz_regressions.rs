//! Every input the write-ahead log fuzz target ever found a bug with (`fuzz/regressions/`), and
//! every seed it starts from (`fuzz/seeds/`), replayed through the same entry point.

use std::path::Path;

use sightline_storage::wal::fuzzing::read_any;

#[test]
fn wal_reader_inputs_replay_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for kind in ["regressions", "seeds"] {
        if let Ok(entries) = std::fs::read_dir(root.join(kind).join("wal_reader")) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    assert!(!files.is_empty(), "no seeds or regressions for wal_reader");
    files.sort();
    for path in files {
        let data = std::fs::read(&path).expect("readable input");
        let outcome = std::panic::catch_unwind(|| read_any(&data));
        assert!(outcome.is_ok(), "{} panics", path.display());
    }
}
