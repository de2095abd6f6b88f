//! The write-ahead log: numbered files of checksummed records, each one Arrow IPC batch of one
//! signal. A record is `[len: u32 LE][crc32 of payload: u32 LE][payload]`, and the payload is
//! `[signal tag: u8][Arrow IPC stream]`. Files start with [`MAGIC`].
//!
//! Files are named by an increasing sequence number. Once the rows of every file below a
//! sequence number are in segments, the catalog records that number as the checkpoint and the
//! files below it are deleted; replay reads only files at or above the checkpoint, so it never
//! brings back rows that segments already hold.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use sightline_model::Signal;

use crate::error::{Error, Result};

/// The first bytes of every log file.
pub const MAGIC: &[u8; 8] = b"SLWAL\x00\x01\n";
const HEADER_BYTES: u64 = 8;
/// A record larger than this is treated as corruption (its length field is garbage).
const MAX_RECORD_BYTES: u32 = 1 << 30;

/// One decoded record of the log.
#[derive(Debug)]
pub struct WalRecord {
    /// Whose rows it holds.
    pub signal: Signal,
    /// The rows, in today's schema.
    pub batch: RecordBatch,
}

/// Encodes a batch as a record payload.
pub fn encode_record(signal: Signal, batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut payload = vec![signal.tag()];
    {
        let mut writer = StreamWriter::try_new(&mut payload, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    let mut framed = Vec::with_capacity(payload.len() + 8);
    let len = u32::try_from(payload.len()).map_err(|_| Error::WriteFailed {
        reason: format!(
            "a batch of {} bytes is too large for one log record",
            payload.len()
        ),
    })?;
    framed.extend_from_slice(&len.to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    framed.extend_from_slice(&payload);
    Ok(framed)
}

/// How a record that made Arrow's IPC reader panic is reported.
const ARROW_PANIC: &str = "the Arrow IPC reader failed on it";

/// Decodes a payload. Arrow's IPC reader can panic on some malformed buffers; a record that
/// makes it panic is reported as not decodable, so a corrupt log can never stop a start.
fn decode_payload(payload: &[u8]) -> std::result::Result<WalRecord, String> {
    std::panic::catch_unwind(|| decode_payload_unchecked(payload)).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown".into());
        Err(format!("{ARROW_PANIC} ({reason})"))
    })
}

/// Walks the IPC stream's messages and checks that every length they declare fits in the
/// payload, before Arrow's reader allocates what a corrupt length says.
fn check_ipc_framing(ipc: &[u8]) -> std::result::Result<(), String> {
    let word = |at: usize| -> std::result::Result<u32, String> {
        ipc.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format!("IPC stream cut short at byte {at}"))
    };
    let mut pos = 0usize;
    while pos < ipc.len() {
        let mut len = word(pos)?;
        pos += 4;
        if len == 0xFFFF_FFFF {
            len = word(pos)?;
            pos += 4;
        }
        if len == 0 {
            return Ok(()); // end of stream
        }
        let len = len as usize;
        let metadata = ipc.get(pos..pos.saturating_add(len)).ok_or_else(|| {
            format!("IPC message of {len} bytes at byte {pos} runs past the record")
        })?;
        let message = arrow::ipc::root_as_message(metadata)
            .map_err(|e| format!("IPC message at byte {pos} is not valid: {e}"))?;
        let body = usize::try_from(message.bodyLength())
            .map_err(|_| format!("IPC message at byte {pos} declares a negative body"))?;
        if let Some(schema) = message.header_as_schema() {
            check_ipc_schema(schema).map_err(|e| format!("IPC schema at byte {pos}: {e}"))?;
        }
        let batch = message.header_as_record_batch().or_else(|| {
            message
                .header_as_dictionary_batch()
                .and_then(|dictionary| dictionary.data())
        });
        if let Some(buffers) = batch.and_then(|b| b.buffers()) {
            // Arrow's reader slices each buffer out of the body without checking (and panics
            // on a buffer that lies outside it).
            for buffer in buffers {
                let end = buffer.offset().checked_add(buffer.length());
                if buffer.offset() < 0
                    || buffer.length() < 0
                    || end.is_none_or(|end| end as u64 > body as u64)
                {
                    return Err(format!(
                        "IPC message at byte {pos} has a buffer ({} bytes at {}) outside its body of {body} bytes",
                        buffer.length(),
                        buffer.offset()
                    ));
                }
            }
        }
        pos = pos
            .checked_add(len)
            .and_then(|p| p.checked_add(body))
            .filter(|end| *end <= ipc.len())
            .ok_or_else(|| {
                format!("IPC body of {body} bytes at byte {pos} runs past the record")
            })?;
    }
    Ok(())
}

/// Admits only the schemas the log writer produces (little-endian; timestamps in nanoseconds,
/// 32/64-bit signed integers, doubles, booleans, UTF-8 text and lists of numbers; no
/// dictionaries), whatever their columns: Arrow's schema decoding panics on many malformed or
/// unsupported type descriptions, and a log record never holds those.
fn check_ipc_schema(schema: arrow::ipc::Schema<'_>) -> std::result::Result<(), String> {
    if schema.endianness() != arrow::ipc::Endianness::Little {
        return Err("not little-endian".into());
    }
    let fields = schema.fields().ok_or("no fields")?;
    for field in fields {
        check_ipc_field(field, true)?;
    }
    Ok(())
}

fn check_ipc_field(field: arrow::ipc::Field<'_>, top: bool) -> std::result::Result<(), String> {
    use arrow::ipc::{Precision, TimeUnit, Type};
    let name = field.name().ok_or("a field without a name")?;
    if field.dictionary().is_some() {
        return Err(format!("field {name:?} is dictionary-encoded"));
    }
    let admitted = match field.type_type() {
        Type::Timestamp => field
            .type_as_timestamp()
            .is_some_and(|t| t.unit() == TimeUnit::NANOSECOND),
        Type::Int => field
            .type_as_int()
            .is_some_and(|i| i.is_signed() && matches!(i.bitWidth(), 32 | 64)),
        Type::FloatingPoint => field
            .type_as_floating_point()
            .is_some_and(|f| f.precision() == Precision::DOUBLE),
        Type::Bool => field.type_as_bool().is_some(),
        Type::Utf8 => field.type_as_utf_8().is_some(),
        Type::List if top => {
            let children = field.children().ok_or("a list without children")?;
            if field.type_as_list().is_none() || children.len() != 1 {
                return Err(format!("list field {name:?} must have exactly one child"));
            }
            check_ipc_field(children.get(0), false)?;
            true
        }
        _ => false,
    };
    if admitted {
        Ok(())
    } else {
        Err(format!(
            "field {name:?} has a type the log never holds ({:?})",
            field.type_type()
        ))
    }
}

fn decode_payload_unchecked(payload: &[u8]) -> std::result::Result<WalRecord, String> {
    let (&tag, ipc) = payload.split_first().ok_or("empty record")?;
    check_ipc_framing(ipc)?;
    let signal = Signal::from_tag(tag).ok_or_else(|| format!("unknown signal tag {tag}"))?;
    let reader = StreamReader::try_new(ipc, None).map_err(|e| e.to_string())?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(batch.map_err(|e| e.to_string())?);
    }
    let schema = sightline_model::schema::schema_for(signal.table());
    // A record from an older version may lack columns added since: they are filled with
    // nulls (where the column allows them), as for segments. Every row the log holds takes
    // bytes (its time alone takes eight), so a batch that claims more rows than the record
    // has bytes is corrupt, and filling its columns would allocate what the claim says.
    if let Some(b) = batches.iter().find(|b| b.num_rows() > ipc.len()) {
        return Err(format!(
            "a batch claims {} rows in a record of {} bytes",
            b.num_rows(),
            ipc.len()
        ));
    }
    let batches = batches
        .iter()
        .map(|b| sightline_model::schema::align_to_schema(b, &schema).map_err(|e| e.to_string()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let batch = arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string())?;
    Ok(WalRecord { signal, batch })
}

/// The path of log file `seq` in `dir`.
pub fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// The sequence numbers of the log files in `dir`, ascending.
pub fn list_files(dir: &Path) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    let entries = fs::read_dir(dir).map_err(|source| Error::WalIo {
        path: dir.into(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::WalIo {
            path: dir.into(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = name
            .strip_suffix(".wal")
            .and_then(|s| s.parse::<u64>().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// What reading one log file found.
#[derive(Debug, Default)]
pub struct FileReplay {
    /// The intact records, in order.
    pub records: Vec<WalRecord>,
    /// Set when the file ends in a torn or corrupt record: where and why. Everything from that
    /// offset on was dropped.
    pub torn_tail: Option<(u64, String)>,
}

/// Reads every intact record of a log file, stopping at the first torn or corrupt one.
pub fn read_file(path: &Path) -> Result<FileReplay> {
    let file = File::open(path).map_err(|source| Error::WalIo {
        path: path.into(),
        source,
    })?;
    Ok(read_from(BufReader::new(file)))
}

/// Reads every intact record of a log, whatever the bytes: a torn or corrupt record ends the
/// read and is reported, never a panic.
pub fn read_from(mut reader: impl Read) -> FileReplay {
    let mut out = FileReplay::default();
    let mut magic = [0u8; 8];
    match reader.read_exact(&mut magic) {
        Ok(()) if &magic == MAGIC => {}
        Ok(()) => {
            out.torn_tail = Some((0, "file does not start with the log header".into()));
            return out;
        }
        Err(_) => {
            out.torn_tail = Some((0, "file is shorter than the log header".into()));
            return out;
        }
    }
    let mut offset = HEADER_BYTES;
    loop {
        let mut head = [0u8; 8];
        match read_full(&mut reader, &mut head) {
            Ok(0) => break,
            Ok(8) => {}
            Ok(n) => {
                out.torn_tail = Some((offset, format!("record header cut short after {n} bytes")));
                break;
            }
            Err(e) => {
                out.torn_tail = Some((offset, format!("read failed: {e}")));
                break;
            }
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > MAX_RECORD_BYTES {
            out.torn_tail = Some((offset, format!("record length {len} is not plausible")));
            break;
        }
        // Read through `take`, so a length that promises more than the file holds allocates only
        // what is there.
        let mut payload = Vec::new();
        match (&mut reader).take(u64::from(len)).read_to_end(&mut payload) {
            Ok(n) if n == len as usize => {}
            Ok(n) => {
                out.torn_tail = Some((
                    offset,
                    format!("record cut short: {n} of {len} bytes present"),
                ));
                break;
            }
            Err(e) => {
                out.torn_tail = Some((offset, format!("read failed: {e}")));
                break;
            }
        }
        if crc32fast::hash(&payload) != crc {
            out.torn_tail = Some((offset, "checksum mismatch".into()));
            break;
        }
        match decode_payload(&payload) {
            Ok(record) => out.records.push(record),
            Err(reason) => {
                out.torn_tail = Some((offset, format!("record does not decode: {reason}")));
                break;
            }
        }
        offset += 8 + u64::from(len);
    }
    out
}

/// Decodes one record's payload (signal tag and Arrow IPC); for the fuzzer and the reader.
pub fn decode_record(payload: &[u8]) -> std::result::Result<WalRecord, String> {
    decode_payload(payload)
}

/// The entry point of the write-ahead log fuzz target (`fuzz/`) and its regression tests.
pub mod fuzzing {
    use super::{MAGIC, decode_record, encode_record, read_from};

    /// Reads `data` as a whole log file; then frames `data[1..]` as one record with a right
    /// checksum (cut short when the first byte is odd), so that the Arrow IPC decoding behind
    /// the checksum is reached too. A record that decodes must encode again and read back
    /// with the same rows. A panic inside Arrow that the reader catches (and reports as a
    /// record that does not decode) is not a failure; any other panic is.
    pub fn read_any(data: &[u8]) {
        let _ = read_from(data);
        let Some((&mode, payload)) = data.split_first() else {
            return;
        };
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        file.extend_from_slice(payload);
        if mode % 2 == 1 {
            file.truncate(file.len() - usize::from(mode / 2).min(file.len()));
        }
        let replay = read_from(file.as_slice());
        assert!(replay.records.len() <= 1, "one record framed, more read");
        if let Ok(record) = decode_record(payload) {
            let framed = encode_record(record.signal, &record.batch)
                .expect("a decoded record encodes again");
            let again = decode_record(&framed[8..]).expect("an encoded record decodes");
            assert_eq!(again.signal, record.signal);
            assert_eq!(again.batch.num_rows(), record.batch.num_rows());
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The log file being appended to.
#[derive(Debug)]
pub struct WalWriter {
    dir: PathBuf,
    seq: u64,
    file: File,
    /// Bytes known to be written and intact; a failed append is cut back to here.
    len_bytes: u64,
}

impl WalWriter {
    /// Creates log file `seq` (it must not exist) and makes its creation durable.
    pub fn create(dir: &Path, seq: u64) -> Result<Self> {
        let path = file_path(dir, seq);
        let io = |source| Error::WalIo {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.write_all(MAGIC).map_err(io)?;
        file.sync_all().map_err(io)?;
        crate::durable::sync_dir(dir).map_err(io)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            seq,
            file,
            len_bytes: HEADER_BYTES,
        })
    }

    /// The file's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Bytes written and intact so far, the header's included.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Appends framed records and syncs them to disk. On failure the file is cut back to its
    /// last intact length so that later appends stay readable.
    pub fn append_and_sync(&mut self, framed: &[&[u8]]) -> Result<()> {
        self.write_framed(framed, true)
    }

    /// Appends framed records without waiting for the disk: they survive the process but not
    /// the machine. The store never uses it; it exists to measure what the sync costs.
    pub fn append_unsynced(&mut self, framed: &[&[u8]]) -> Result<()> {
        self.write_framed(framed, false)
    }

    fn write_framed(&mut self, framed: &[&[u8]], sync: bool) -> Result<()> {
        let path = file_path(&self.dir, self.seq);
        let result = (|| {
            for record in framed {
                self.file.write_all(record)?;
            }
            if sync {
                self.file.sync_data()?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.len_bytes += framed.iter().map(|r| r.len() as u64).sum::<u64>();
                Ok(())
            }
            Err(source) => {
                let _ = self.file.set_len(self.len_bytes);
                let _ = self.file.sync_data();
                use std::io::Seek;
                let _ = self.file.seek(std::io::SeekFrom::Start(self.len_bytes));
                Err(Error::WalIo { path, source })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_model::schema::{LogRow, logs_to_batch};

    /// A small deterministic generator, so the mutation test below needs no extra crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    #[test]
    fn mutated_records_never_panic_the_reader_or_the_decoder() {
        let framed = encode_record(Signal::Logs, &batch(3)).expect("encode");
        let payload = &framed[8..];
        let mut rng = Lcg(7);
        for round in 0..20_000 {
            let mut bytes = payload.to_vec();
            for _ in 0..=(rng.next() % 8) {
                let at = (rng.next() as usize) % bytes.len();
                bytes[at] = rng.next() as u8;
            }
            if round % 3 == 0 {
                let cut = (rng.next() as usize) % bytes.len();
                bytes.truncate(cut.max(1));
            }
            // Either a record or a reason; a panic fails the test.
            let _ = decode_record(&bytes);
            // And the same bytes, framed with a valid checksum, through the whole reader.
            let mut file = MAGIC.to_vec();
            file.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            file.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
            file.extend_from_slice(&bytes);
            let replay = read_from(file.as_slice());
            assert!(replay.records.len() + usize::from(replay.torn_tail.is_some()) == 1);
        }
    }

    #[test]
    fn a_length_beyond_the_file_allocates_only_what_is_there() {
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&(MAX_RECORD_BYTES).to_le_bytes());
        file.extend_from_slice(&0u32.to_le_bytes());
        file.extend_from_slice(b"short");
        let replay = read_from(file.as_slice());
        let (offset, reason) = replay.torn_tail.expect("torn");
        assert_eq!(offset, HEADER_BYTES);
        assert!(reason.contains("cut short: 5 of"), "{reason}");
    }

    fn batch(n: usize) -> RecordBatch {
        let rows: Vec<LogRow> = (0..n)
            .map(|i| LogRow {
                time_ns: i as i64,
                observed_time_ns: i as i64,
                severity: "info",
                severity_number: 9,
                body: format!("line {i}"),
                service_name: "s".into(),
                attributes: "{}".into(),
                resource_attributes: "{}".into(),
                ..Default::default()
            })
            .collect();
        logs_to_batch(&rows).expect("valid rows")
    }

    #[test]
    fn a_record_without_columns_added_since_reads_back_with_nulls() {
        let full = batch(3);
        // As an older version wrote it: without the last (nullable) column.
        let older = full
            .project(&(0..full.num_columns() - 1).collect::<Vec<_>>())
            .expect("project");
        let framed = encode_record(Signal::Logs, &older).expect("encode");
        let record = decode_record(&framed[8..]).expect("an older record decodes");
        assert_eq!(record.batch.schema(), full.schema());
        assert_eq!(record.batch.num_rows(), 3);
        assert_eq!(record.batch.column(full.num_columns() - 1).null_count(), 3);
    }

    #[test]
    fn replay_reads_back_what_was_appended() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = WalWriter::create(dir.path(), 7).expect("create");
        let a = encode_record(Signal::Logs, &batch(3)).expect("encode");
        let b = encode_record(Signal::Logs, &batch(2)).expect("encode");
        writer.append_and_sync(&[&a, &b]).expect("append");
        let replay = read_file(&file_path(dir.path(), 7)).expect("read");
        assert!(replay.torn_tail.is_none());
        let rows: Vec<usize> = replay.records.iter().map(|r| r.batch.num_rows()).collect();
        assert_eq!(rows, vec![3, 2]);
        assert_eq!(list_files(dir.path()).expect("list"), vec![7]);
    }

    #[test]
    fn replay_discards_torn_tail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = WalWriter::create(dir.path(), 1).expect("create");
        let a = encode_record(Signal::Logs, &batch(3)).expect("encode");
        let b = encode_record(Signal::Logs, &batch(4)).expect("encode");
        writer.append_and_sync(&[&a]).expect("append");
        let path = file_path(dir.path(), 1);
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&b[..b.len() / 2])
            .expect("write half a record");
        let replay = read_file(&path).expect("read");
        assert_eq!(replay.records.len(), 1);
        let (offset, reason) = replay.torn_tail.expect("torn tail reported");
        assert_eq!(offset, HEADER_BYTES + a.len() as u64);
        assert!(reason.contains("cut short"), "{reason}");
    }

    #[test]
    fn replay_detects_a_flipped_bit_by_checksum() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = WalWriter::create(dir.path(), 1).expect("create");
        let mut a = encode_record(Signal::Logs, &batch(3)).expect("encode");
        let last = a.len() - 5;
        a[last] ^= 0x40;
        writer.append_and_sync(&[&a]).expect("append");
        let replay = read_file(&file_path(dir.path(), 1)).expect("read");
        assert!(replay.records.is_empty());
        assert_eq!(
            replay.torn_tail.map(|t| t.1),
            Some("checksum mismatch".to_string())
        );
    }

    #[test]
    fn replay_never_panics_on_garbage() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("00000000000000000001.wal");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[0xff; 64]);
        fs::write(&path, &bytes).expect("write");
        let replay = read_file(&path).expect("read");
        assert!(replay.records.is_empty() && replay.torn_tail.is_some());
        fs::write(&path, b"xx").expect("write");
        assert!(read_file(&path).expect("read").torn_tail.is_some());
    }
}
