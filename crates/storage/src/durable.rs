//! Making file system changes durable: the log writer and the segment writer both create or
//! rename files, and neither counts as done until the folder that lists them is synced.

use std::fs::File;
use std::path::Path;

/// Makes a folder's entries (new or renamed files) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
