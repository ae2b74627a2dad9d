//! Reading a dataset as a stream of row batches, whatever its format, with
//! errors that name the row or column.
//!
//! CSV is cut into chunks at record boundaries (a newline outside quotes)
//! and each chunk's records into fields ([`csv_fields`]), every column a
//! string, so types cannot change from one chunk to the next; a chunk not
//! in the plain form is read by polars, whose reading the fields match.
//! Parquet is read in row slices; JSON Lines line by line.

use std::io::{BufRead, BufReader, Cursor, Read};
use std::ops::{ControlFlow, Range};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use memmap2::Mmap;
use polars::prelude::*;

use sha2::{Digest, Sha256};

use super::compression::{Compression, DecompressionLimits, decompress};
use super::csv_fields;
use super::csv_records::for_each_record_end;
use super::in_order::{chunks_in_flight, map_in_order};
use super::spec::{InputFormat, JobSpec};
use crate::error::{Error, InputLocation, Result};

/// A dataset that can be read from the start as often as a job needs.
pub trait InputSource: Send + Sync {
    /// The file name, which may name the format.
    fn name(&self) -> &str;
    fn open(&self) -> Result<Box<dyn Read + Send>>;
    /// A local file holding the input, for formats read by random access.
    fn local_file(&self) -> Result<PathBuf>;
    /// The input's own file when it already is one on local disk: plain
    /// CSV is then mapped instead of read (see [`MappedCsv`]).
    fn file_on_disk(&self) -> Option<PathBuf> {
        None
    }
}

/// Rows `first_position..first_position + len()` of the input, reduced to
/// what the pipeline needs.
#[derive(Debug, Clone, Default)]
pub struct RowBatch {
    /// 0-based position of the first row in the input.
    pub first_position: u64,
    /// The text columns joined by one space (a null field counts as empty).
    pub texts: JoinedTexts,
    pub labels: Cells,
    pub ids: Option<Cells>,
    pub split_keys: Option<Cells>,
    /// Bytes of text in the rows; when the texts were left out, the bytes of
    /// input they came from (a bound, for sizing what the rows will take).
    pub text_bytes: u64,
}

impl RowBatch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row `i`'s id, if the input has an id column and the row a value.
    pub fn id(&self, i: usize) -> Option<&str> {
        self.ids.as_ref().and_then(|ids| ids.get(i))
    }
}

/// A batch's values of one column (labels, ids, split keys), each a string
/// or null, in one buffer: one allocation a batch rather than one a row,
/// made on a worker and freed on the thread that takes the rows in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cells {
    /// The values, a null one as empty: a joined text of one field.
    values: JoinedTexts,
    present: Vec<bool>,
}

impl Cells {
    pub fn push(&mut self, value: Option<&str>) {
        self.values.push_joined(std::iter::once(value));
        self.present.push(value.is_some());
    }

    pub fn get(&self, row: usize) -> Option<&str> {
        self.present[row].then(|| self.values.get(row))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Option<&str>> + '_ {
        (0..self.present.len()).map(|row| self.get(row))
    }

    pub fn len(&self) -> usize {
        self.present.len()
    }

    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }
}

impl<'a> FromIterator<Option<&'a str>> for Cells {
    fn from_iter<I: IntoIterator<Item = Option<&'a str>>>(values: I) -> Self {
        let mut cells = Cells::default();
        values.into_iter().for_each(|value| cells.push(value));
        cells
    }
}

/// Each row's text columns joined by one space, the rows' texts one after
/// the other in one buffer: a batch's texts are one allocation, made and
/// freed together, rather than one a row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinedTexts {
    bytes: String,
    /// Where each row's text ends in `bytes`.
    ends: Vec<usize>,
}

impl JoinedTexts {
    /// Appends a row's text: its fields joined by one space, a null field
    /// counting as empty (the reference's `title + " " + description`).
    pub fn push_joined<'a>(&mut self, fields: impl Iterator<Item = Option<&'a str>>) {
        push_joined(&mut self.bytes, fields);
        self.ends.push(self.bytes.len());
    }

    /// Room for `bytes` more bytes of text.
    pub fn reserve(&mut self, bytes: usize) {
        self.bytes.reserve(bytes);
    }

    pub fn get(&self, row: usize) -> &str {
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        &self.bytes[start..self.ends[row]]
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.ends.len()).map(|row| self.get(row))
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of text in all rows, the spaces joining fields included.
    pub fn bytes(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// The input's columns the job reads, checked against what the input has.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub text: Vec<String>,
    pub label: String,
    pub id: Option<String>,
    pub split_key: Option<String>,
}

impl ColumnPlan {
    fn resolve(spec: &JobSpec, available: &[String]) -> Result<Self> {
        let has = |name: &str| available.iter().any(|c| c == name);
        let require = |name: &str| {
            if has(name) {
                Ok(name.to_string())
            } else {
                Err(Error::bad_input(
                    InputLocation::column(name),
                    format!("no such column; the input has {}", quote_list(available)),
                ))
            }
        };
        let text = spec.text_columns.iter().map(|c| require(c)).collect::<Result<Vec<_>>>()?;
        let label = require(&spec.label_column)?;
        let id = match &spec.id_column {
            Some(column) => Some(require(column)?),
            None => has("id").then(|| "id".to_string()),
        };
        let split_key = spec.split_key.as_deref().map(require).transpose()?;
        Ok(Self { text, label, id, split_key })
    }

    fn names(&self) -> Vec<String> {
        let mut names = self.text.clone();
        names.push(self.label.clone());
        names.extend(self.id.iter().cloned());
        names.extend(self.split_key.iter().cloned());
        names.sort();
        names.dedup();
        names
    }
}

fn quote_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", quoted.join(", "))
}

pub type BatchStream = Box<dyn Iterator<Item = Result<RowBatch>> + Send>;

/// An input opened for one pass.
pub struct OpenedInput {
    pub columns: ColumnPlan,
    pub batches: BatchStream,
}

/// How an input is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSettings {
    /// Rows per batch.
    pub batch_rows: usize,
    pub decompression: DecompressionLimits,
}

impl ReadSettings {
    pub fn new(batch_rows: usize, decompression: DecompressionLimits) -> Self {
        Self { batch_rows: batch_rows.max(1), decompression }
    }
}

/// Opens `source` for one pass over its rows in batches, parsed in order on
/// the calling thread.
pub fn open(source: &dyn InputSource, spec: &JobSpec, read: ReadSettings) -> Result<OpenedInput> {
    let chunked = open_chunks(source, spec, read)?;
    Ok(OpenedInput { columns: chunked.columns.clone(), batches: chunked.into_batches() })
}

/// Opens `source` for one pass over its rows as chunks that any thread can
/// parse: reading and cutting is sequential and cheap, parsing is not.
pub fn open_chunks(source: &dyn InputSource, spec: &JobSpec, read: ReadSettings) -> Result<ChunkedInput> {
    open_chunks_counting(source, spec, read, None)
}

/// The size and sha256 of a file's bytes as stored, taken as a pass reads them.
#[derive(Default)]
pub struct FileDigest {
    hasher: Sha256,
    bytes: u64,
}

impl FileDigest {
    /// Takes in the next bytes of the file, in order.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    /// Bytes and hex sha256 of what was read; call once the pass has read to the end.
    pub fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

struct DigestingReader {
    inner: Box<dyn Read + Send>,
    digest: Arc<Mutex<FileDigest>>,
}

impl Read for DigestingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.lock().unwrap().update(&buf[..n]);
        Ok(n)
    }
}

/// As [`open_chunks`], hashing the stored bytes into `digest` on the way, so
/// the first pass needs no read of its own for the checksum. Only for
/// uncompressed CSV and JSON Lines, which are read to their last byte.
pub fn open_chunks_counting(
    source: &dyn InputSource,
    spec: &JobSpec,
    read: ReadSettings,
    digest: Option<Arc<Mutex<FileDigest>>>,
) -> Result<ChunkedInput> {
    let (format, compression) = InputFormat::resolve(spec.format, source.name())?;
    let stored = || -> Result<Box<dyn Read + Send>> {
        let inner = source.open()?;
        Ok(match &digest {
            Some(digest) => Box::new(DigestingReader { inner, digest: digest.clone() }),
            None => inner,
        })
    };
    let stream = || -> Result<Box<dyn Read + Send>> { Ok(decompress(stored()?, compression, read.decompression)?) };
    if digest.is_some() && !digest_as_read(format, compression) {
        return Err(Error::internal("a checksum taken while reading needs an uncompressed CSV or JSON Lines file"));
    }
    match format {
        InputFormat::Csv => {
            // Plain CSV on local disk is mapped; anything else is streamed.
            let on_disk = if compression == Compression::None { source.file_on_disk() } else { None };
            let cutter = match on_disk {
                Some(path) => CsvCutter::Mapped(MappedCsv::open(&path, CSV_CHUNK_BYTES, digest)?),
                None => CsvCutter::Read(CsvRecordChunker::new(stream()?, CSV_CHUNK_BYTES)),
            };
            open_csv(cutter, spec, read.batch_rows)
        }
        InputFormat::Parquet => open_parquet(source.local_file()?, spec, read.batch_rows).map(ChunkedInput::parsed),
        InputFormat::Jsonl => open_jsonl(stream()?, spec, read.batch_rows).map(ChunkedInput::parsed),
    }
}

/// Whether a pass reads every stored byte of such a file, in order.
pub fn digest_as_read(format: InputFormat, compression: Compression) -> bool {
    format != InputFormat::Parquet && compression == Compression::None
}

/// Whole records of an input, not parsed yet. `index` numbers the chunks of
/// one pass from 0; the same input and settings cut the same chunks on
/// every pass.
pub struct RawChunk {
    pub index: usize,
    body: RawBody,
}

enum RawBody {
    Csv {
        bytes: ChunkBytes,
        records_before: u64,
    },
    /// Formats whose reader yields rows directly.
    Parsed(Box<RowBatch>),
}

/// What a chunk needs to become rows; cheap to share between threads.
#[derive(Clone)]
pub struct ChunkParser {
    csv: Option<Arc<CsvLayout>>,
    /// Leave the texts out (empty), for passes that only need labels and keys.
    without_texts: bool,
}

struct CsvLayout {
    schema: SchemaRef,
    plan: ColumnPlan,
    /// The plan's columns by position, for records cut by [`csv_fields`].
    positions: ColumnPositions,
    /// The columns a pass without texts parses: label, id, split key.
    without_texts: Arc<Vec<usize>>,
}

struct ColumnPositions {
    text: Vec<usize>,
    label: usize,
    id: Option<usize>,
    split_key: Option<usize>,
}

impl ColumnPositions {
    fn of(plan: &ColumnPlan, schema: &Schema) -> Result<Self> {
        let position = |name: &str| {
            schema
                .index_of(name)
                .ok_or_else(|| Error::internal(format!("column {name} is planned but not in the header")))
        };
        Ok(Self {
            text: plan.text.iter().map(|c| position(c)).collect::<Result<_>>()?,
            label: position(&plan.label)?,
            id: plan.id.as_deref().map(position).transpose()?,
            split_key: plan.split_key.as_deref().map(position).transpose()?,
        })
    }
}

impl ChunkParser {
    /// A parser that leaves `texts` empty: CSV then skips building the text
    /// columns, the bulk of a row.
    pub fn without_texts(self) -> Self {
        Self { without_texts: true, ..self }
    }

    /// The chunk's rows, numbered from `first_position`.
    pub fn parse(&self, chunk: RawChunk, first_position: u64) -> Result<RowBatch> {
        match (chunk.body, &self.csv) {
            (RawBody::Parsed(mut batch), _) => {
                batch.first_position = first_position;
                Ok(*batch)
            }
            (RawBody::Csv { bytes, records_before }, Some(layout)) => {
                parse_csv_chunk(layout, bytes, records_before, first_position, self.without_texts)
            }
            (RawBody::Csv { .. }, None) => Err(Error::internal("a CSV chunk without a CSV layout")),
        }
    }
}

pub type ChunkStream = Box<dyn Iterator<Item = Result<RawChunk>> + Send>;

/// An input opened for one pass, as chunks and their parser.
pub struct ChunkedInput {
    pub columns: ColumnPlan,
    pub chunks: ChunkStream,
    pub parser: ChunkParser,
}

impl ChunkedInput {
    fn parsed(opened: OpenedInput) -> Self {
        let chunks = opened
            .batches
            .enumerate()
            .map(|(index, batch)| batch.map(|batch| RawChunk { index, body: RawBody::Parsed(Box::new(batch)) }));
        Self {
            columns: opened.columns,
            chunks: Box::new(chunks),
            parser: ChunkParser { csv: None, without_texts: false },
        }
    }

    /// The same chunks, parsed without their texts (see [`ChunkParser::without_texts`]).
    pub fn without_texts(self) -> Self {
        Self { parser: self.parser.without_texts(), ..self }
    }

    /// Batches in order, parsed on the calling thread; the first error ends them.
    pub fn into_batches(self) -> BatchStream {
        let parser = self.parser;
        let mut next_position = 0u64;
        let mut failed = false;
        let batches = self.chunks.map_while(move |chunk| {
            if failed {
                return None;
            }
            let batch = chunk.and_then(|chunk| parser.parse(chunk, next_position));
            match &batch {
                Ok(batch) => next_position += batch.len() as u64,
                Err(_) => failed = true,
            }
            Some(batch)
        });
        Box::new(batches)
    }

    /// Parses chunks on the threads of `pool` and hands the batches to
    /// `consume` in input order, numbered as one thread would number them.
    /// An error (reading, parsing or consuming) is the first in input
    /// order. Answers the rows of each chunk.
    pub fn for_each_in_order(
        self,
        pool: &rayon::ThreadPool,
        mut consume: impl FnMut(RowBatch) -> Result<()> + Send,
    ) -> Result<Vec<u64>> {
        let Self { chunks, parser, .. } = self;
        let mut chunk_rows = Vec::new();
        let mut next_position = 0u64;
        map_in_order(
            pool,
            chunks,
            chunks_in_flight(pool),
            |chunk| parser.parse(chunk, 0),
            |mut batch| {
                batch.first_position = next_position;
                next_position += batch.len() as u64;
                chunk_rows.push(batch.len() as u64);
                consume(batch)
            },
        )?;
        Ok(chunk_rows)
    }
}

// ---------------------------------------------------------------- CSV

/// Bytes of CSV aimed for in one chunk; a chunk always ends on a record.
const CSV_CHUNK_BYTES: usize = 4 << 20;
const READ_BLOCK: usize = 1 << 20;

/// Cuts a CSV byte stream into runs of whole records. RFC 4180 quoting is
/// tracked by parity: every `"` toggles, and a doubled `""` toggles twice.
struct CsvRecordChunker<R> {
    reader: R,
    pending: Vec<u8>,
    scanned: usize,
    in_quotes: bool,
    /// Ends (exclusive) of the complete records in `pending`.
    record_ends: Vec<usize>,
    /// Records (header included) handed out before `pending`.
    records_before: u64,
    eof: bool,
    target_bytes: usize,
}

impl<R: Read> CsvRecordChunker<R> {
    fn new(reader: R, target_bytes: usize) -> Self {
        Self {
            reader,
            pending: Vec::new(),
            scanned: 0,
            in_quotes: false,
            record_ends: Vec::new(),
            records_before: 0,
            eof: false,
            target_bytes,
        }
    }

    fn scan(&mut self) {
        let from = self.scanned;
        let record_ends = &mut self.record_ends;
        let _ = for_each_record_end(&self.pending[from..], &mut self.in_quotes, |offset| {
            record_ends.push(from + offset);
            ControlFlow::Continue(())
        });
        self.scanned = self.pending.len();
    }

    /// Hands out the first `records` complete records of `pending`.
    fn take_records(&mut self, records: usize) -> (Vec<u8>, u64) {
        let end = self.record_ends[records - 1];
        let rest = self.pending.split_off(end);
        let chunk = std::mem::replace(&mut self.pending, rest);
        self.record_ends.drain(..records);
        self.record_ends.iter_mut().for_each(|e| *e -= end);
        self.scanned -= end;
        let first = self.records_before;
        self.records_before += records as u64;
        (chunk, first)
    }

    /// The next run of whole records (at most `max_records`) and the number
    /// of records before it (header included), or `None` at the end.
    fn next_chunk(&mut self, max_records: usize) -> Result<Option<(Vec<u8>, u64)>> {
        loop {
            let complete = self.record_ends.len();
            if complete >= max_records {
                return Ok(Some(self.take_records(max_records)));
            }
            if complete > 0 && self.pending.len() >= self.target_bytes {
                return Ok(Some(self.take_records(complete)));
            }
            if self.eof {
                if self.in_quotes {
                    let row = (self.records_before + complete as u64).max(1);
                    return Err(Error::bad_input(InputLocation::row(row), "unterminated quoted field"));
                }
                if complete > 0 {
                    return Ok(Some(self.take_records(complete)));
                }
                if self.pending.iter().all(|b| b.is_ascii_whitespace()) {
                    return Ok(None);
                }
                // A last record without a final newline.
                let chunk = std::mem::take(&mut self.pending);
                let first = self.records_before;
                self.records_before += 1;
                self.scanned = 0;
                return Ok(Some((chunk, first)));
            }
            let start = self.pending.len();
            self.pending.resize(start + READ_BLOCK, 0);
            let n = read_fully(&mut self.reader, &mut self.pending[start..])?;
            self.pending.truncate(start + n);
            if n == 0 {
                self.eof = true;
            }
            self.scan();
        }
    }
}

/// A chunk's bytes: copied out of a stream, or a slice of a mapped file.
enum ChunkBytes {
    Read(Vec<u8>),
    Mapped(MappedRange),
}

impl AsRef<[u8]> for ChunkBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            ChunkBytes::Read(bytes) => bytes,
            ChunkBytes::Mapped(mapped) => &mapped.file[mapped.range.clone()],
        }
    }
}

/// A chunk's part of a mapped file. Once parsed, its pages leave the
/// process's resident set: otherwise every page of the file a pass has
/// touched would count in the job's RSS until the mapping goes, so peak RSS
/// would grow with the dataset.
struct MappedRange {
    file: Arc<Mmap>,
    range: Range<usize>,
}

impl Drop for MappedRange {
    fn drop(&mut self) {
        // The pages straddling the ends may hold a neighbouring chunk's bytes:
        // a thread still reading them faults them back in, unchanged.
        let page = page_size();
        let start = self.range.start / page * page;
        let end = self.range.end.div_ceil(page).saturating_mul(page).min(self.file.len());
        if end > start {
            // SAFETY: the mapping is shared and read-only, so dropping pages
            // loses nothing: the next read maps the file's same bytes again.
            let _ = unsafe { self.file.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }
}

fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf only reads a system constant.
    *PAGE.get_or_init(|| usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1))
}

/// Cuts a plain CSV file on local disk into runs of whole records without
/// reading it: the file is mapped, and a chunk is a slice of the mapping
/// that polars parses in place. Reading would copy every byte twice more
/// (kernel to buffer, buffer to chunk) on each of a job's passes.
///
/// The same records as [`CsvRecordChunker`] (quotes by parity), though not
/// cut at the same places: a file is always read the same way on every pass
/// of a job. The file must not shrink while a job reads it (the process
/// would take a bus error); prepd's own store never rewrites a dataset.
struct MappedCsv {
    file: Arc<Mmap>,
    /// Where the next chunk starts.
    at: usize,
    /// Records (header included) before `at`.
    records_before: u64,
    target_bytes: usize,
    /// Takes in every byte as chunks are cut, in order.
    digest: Option<Arc<Mutex<FileDigest>>>,
}

impl MappedCsv {
    fn open(path: &std::path::Path, target_bytes: usize, digest: Option<Arc<Mutex<FileDigest>>>) -> Result<Self> {
        let file = std::fs::File::open(path)?;
        // SAFETY: the mapping is only read, and prepd does not write its
        // inputs; a file truncated by another process meanwhile is outside
        // what a job supports (see above).
        let map = unsafe { Mmap::map(&file)? };
        Ok(Self { file: Arc::new(map), at: 0, records_before: 0, target_bytes, digest })
    }

    fn take(&mut self, end: usize, records: u64) -> (ChunkBytes, u64) {
        let range = self.at..end;
        if let Some(digest) = &self.digest {
            digest.lock().unwrap().update(&self.file[range.clone()]);
        }
        let first = self.records_before;
        self.records_before += records;
        self.at = end;
        (ChunkBytes::Mapped(MappedRange { file: self.file.clone(), range }), first)
    }

    /// As [`CsvRecordChunker::next_chunk`].
    fn next_chunk(&mut self, max_records: usize) -> Result<Option<(ChunkBytes, u64)>> {
        let bytes = &self.file[..];
        let start = self.at;
        let mut in_quotes = false;
        let mut records = 0;
        let mut end = start;
        let _ = for_each_record_end(&bytes[start..], &mut in_quotes, |offset| {
            records += 1;
            end = start + offset;
            if records == max_records || offset >= self.target_bytes {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if records > 0 {
            return Ok(Some(self.take(end, records as u64)));
        }
        if in_quotes {
            let row = self.records_before.max(1);
            return Err(Error::bad_input(InputLocation::row(row), "unterminated quoted field"));
        }
        if bytes[start..].iter().all(|b| b.is_ascii_whitespace()) {
            self.take(bytes.len(), 0);
            return Ok(None);
        }
        // A last record without a final newline.
        Ok(Some(self.take(bytes.len(), 1)))
    }
}

/// How a CSV input is cut into chunks.
enum CsvCutter {
    Read(CsvRecordChunker<Box<dyn Read + Send>>),
    Mapped(MappedCsv),
}

impl CsvCutter {
    fn next_chunk(&mut self, max_records: usize) -> Result<Option<(ChunkBytes, u64)>> {
        match self {
            CsvCutter::Read(chunker) => {
                Ok(chunker.next_chunk(max_records)?.map(|(bytes, first)| (ChunkBytes::Read(bytes), first)))
            }
            CsvCutter::Mapped(mapped) => mapped.next_chunk(max_records),
        }
    }
}

fn read_fully(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

/// The chunk as text, or an error naming the data row (1-based, header not
/// counted) of the first byte that is not UTF-8.
fn utf8_chunk(chunk: &[u8], records_before: u64) -> Result<&str> {
    std::str::from_utf8(chunk).map_err(|e| {
        let valid = &chunk[..e.valid_up_to()];
        let mut in_quotes = false;
        let mut records = 0u64;
        for &b in valid {
            match b {
                b'"' => in_quotes = !in_quotes,
                b'\n' if !in_quotes => records += 1,
                _ => {}
            }
        }
        let row = (records_before + records).max(1);
        Error::bad_input(InputLocation::row(row), "invalid UTF-8")
    })
}

fn open_csv(mut chunker: CsvCutter, spec: &JobSpec, batch_rows: usize) -> Result<ChunkedInput> {
    let Some((header, _)) = chunker.next_chunk(1)? else {
        return Err(Error::bad_input(InputLocation::default(), "the file is empty"));
    };
    let header = header.as_ref();
    utf8_chunk(header, 0)?;
    let header = header.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(header).to_vec();
    let header_frame = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .into_reader_with_file_handle(Cursor::new(header))
        .finish()
        .map_err(|e| Error::bad_input(InputLocation::row(0), format!("unreadable header: {e}")))?;
    let names: Vec<String> = header_frame.get_column_names().iter().map(|n| n.to_string()).collect();
    let columns = ColumnPlan::resolve(spec, &names)?;
    let schema: SchemaRef = Arc::new(names.iter().map(|n| Field::new(n.as_str().into(), DataType::String)).collect());
    let positions = ColumnPositions::of(&columns, &schema)?;
    let without_texts = {
        let mut indices: Vec<usize> =
            std::iter::once(positions.label).chain(positions.id).chain(positions.split_key).collect();
        // The id and the split key may be one column.
        indices.sort_unstable();
        indices.dedup();
        Arc::new(indices)
    };
    let layout = Arc::new(CsvLayout { schema, plan: columns.clone(), positions, without_texts });
    let mut index = 0;
    let mut done = false;
    let chunks = std::iter::from_fn(move || {
        if done {
            return None;
        }
        match chunker.next_chunk(batch_rows.max(1)) {
            Ok(Some((bytes, records_before))) => {
                index += 1;
                Some(Ok(RawChunk { index: index - 1, body: RawBody::Csv { bytes, records_before } }))
            }
            Ok(None) => None,
            Err(e) => {
                done = true;
                Some(Err(e))
            }
        }
    });
    let parser = ChunkParser { csv: Some(layout), without_texts: false };
    Ok(ChunkedInput { columns, chunks: Box::new(chunks), parser })
}

fn parse_csv_chunk(
    layout: &CsvLayout,
    chunk: ChunkBytes,
    records_before: u64,
    first_position: u64,
    without_texts: bool,
) -> Result<RowBatch> {
    let text = utf8_chunk(chunk.as_ref(), records_before)?;
    if let Some(batch) = cut_batch(layout, text, first_position, without_texts) {
        return Ok(batch);
    }
    let chunk_bytes = chunk.as_ref().len() as u64;
    let first_row = records_before.max(1);
    let plan = &layout.plan;
    let projection = without_texts.then(|| layout.without_texts.clone());
    let frame = CsvReadOptions::default()
        .with_has_header(false)
        .with_schema(Some(layout.schema.clone()))
        .with_projection(projection)
        .into_reader_with_file_handle(Cursor::new(chunk))
        .finish()
        .map_err(|e| {
            Error::bad_input(InputLocation::row(first_row), format!("malformed CSV at or after this row: {e}"))
        })?;
    let mut batch = batch_from_frame(&frame, plan, first_position, without_texts)?;
    if without_texts {
        batch.text_bytes = chunk_bytes;
    }
    Ok(batch)
}

/// The chunk's rows from fields cut on this thread, or `None` when the
/// chunk is not in the plain form and is left to polars.
fn cut_batch(layout: &CsvLayout, chunk: &str, first_position: u64, without_texts: bool) -> Option<RowBatch> {
    let at = &layout.positions;
    let mut batch = RowBatch {
        first_position,
        ids: at.id.map(|_| Cells::default()),
        split_keys: at.split_key.map(|_| Cells::default()),
        ..RowBatch::default()
    };
    if !without_texts {
        // Joined texts are never longer than the records they come from:
        // one allocation, not a doubling and a copy at every few rows.
        batch.texts.reserve(chunk.len());
    }
    csv_fields::cut_records(chunk, layout.schema.len(), |fields| {
        if !without_texts {
            batch.texts.push_joined(at.text.iter().map(|&c| fields[c].as_deref()));
        }
        batch.labels.push(fields[at.label].as_deref());
        if let (Some(ids), Some(c)) = (&mut batch.ids, at.id) {
            ids.push(fields[c].as_deref());
        }
        if let (Some(keys), Some(c)) = (&mut batch.split_keys, at.split_key) {
            keys.push(fields[c].as_deref());
        }
    })
    .ok()?;
    batch.text_bytes = if without_texts { chunk.len() as u64 } else { batch.texts.bytes() };
    Some(batch)
}

fn text_column(frame: &DataFrame, name: &str, first_position: u64) -> Result<Column> {
    let column = frame.column(name).map_err(|e| Error::bad_input(InputLocation::column(name), e.to_string()))?;
    column.cast(&DataType::String).map_err(|e| {
        Error::bad_input(
            InputLocation::cell(first_position + 1, name),
            format!("cannot read {} as text: {e}", column.dtype()),
        )
    })
}

fn string_column(frame: &DataFrame, name: &str, first_position: u64) -> Result<Cells> {
    let column = text_column(frame, name, first_position)?;
    let values = column.str().map_err(Error::internal)?;
    Ok(values.iter().collect())
}

/// The text columns joined row by row, straight from the frame's strings.
fn joined_texts(frame: &DataFrame, plan: &ColumnPlan, first_position: u64) -> Result<JoinedTexts> {
    let columns = plan.text.iter().map(|c| text_column(frame, c, first_position)).collect::<Result<Vec<_>>>()?;
    let strings = columns.iter().map(|c| c.str().map_err(Error::internal)).collect::<Result<Vec<_>>>()?;
    let mut columns: Vec<_> = strings.iter().map(|s| s.iter()).collect();
    let mut texts = JoinedTexts::default();
    for _ in 0..frame.height() {
        texts.push_joined(columns.iter_mut().map(|c| c.next().flatten()));
    }
    Ok(texts)
}

fn batch_from_frame(
    frame: &DataFrame,
    plan: &ColumnPlan,
    first_position: u64,
    without_texts: bool,
) -> Result<RowBatch> {
    let texts = if without_texts { JoinedTexts::default() } else { joined_texts(frame, plan, first_position)? };
    Ok(RowBatch {
        text_bytes: texts.bytes(),
        first_position,
        texts,
        labels: string_column(frame, &plan.label, first_position)?,
        ids: plan.id.as_deref().map(|c| string_column(frame, c, first_position)).transpose()?,
        split_keys: plan.split_key.as_deref().map(|c| string_column(frame, c, first_position)).transpose()?,
    })
}

/// The reference's `title + " " + description`, over any number of columns;
/// a null field counts as empty text.
pub fn join_text<'a>(fields: impl Iterator<Item = Option<&'a str>> + Clone) -> String {
    let length = fields.clone().map(|f| f.map_or(0, str::len) + 1).sum::<usize>();
    let mut text = String::with_capacity(length.saturating_sub(1));
    push_joined(&mut text, fields);
    text
}

/// Appends [`join_text`] of `fields` to `out`.
fn push_joined<'a>(out: &mut String, fields: impl Iterator<Item = Option<&'a str>>) {
    for (n, field) in fields.enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(field.unwrap_or(""));
    }
}

// ---------------------------------------------------------------- Parquet

fn open_parquet(path: PathBuf, spec: &JobSpec, batch_rows: usize) -> Result<OpenedInput> {
    let not_parquet =
        |e: PolarsError| Error::bad_input(InputLocation::default(), format!("not a readable Parquet file: {e}"));
    let file = std::fs::File::open(&path)?;
    let mut reader = ParquetReader::new(file);
    let schema = reader.schema().map_err(not_parquet)?;
    let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    let total_rows = reader.num_rows().map_err(not_parquet)? as u64;
    let columns = ColumnPlan::resolve(spec, &names)?;
    let plan = columns.clone();
    let wanted = plan.names();
    let batch_rows = batch_rows.max(1) as u64;
    let batches = (0..total_rows.div_ceil(batch_rows)).map(move |n| {
        let first = n * batch_rows;
        let len = batch_rows.min(total_rows - first);
        let frame = ParquetReader::new(std::fs::File::open(&path)?)
            .with_columns(Some(wanted.clone()))
            .with_slice(Some((first as usize, len as usize)))
            .finish()
            .map_err(|e| Error::bad_input(InputLocation::row(first + 1), format!("unreadable Parquet: {e}")))?;
        batch_from_frame(&frame, &plan, first, false)
    });
    Ok(OpenedInput { columns, batches: Box::new(batches) })
}

// ---------------------------------------------------------------- JSON Lines

fn json_field_text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn open_jsonl(reader: Box<dyn Read + Send>, spec: &JobSpec, batch_rows: usize) -> Result<OpenedInput> {
    let mut lines = BufReader::with_capacity(READ_BLOCK, reader);
    let mut line_number = 0u64;
    // The first object names the columns the job can count on.
    let mut first_line = String::new();
    let first = loop {
        first_line.clear();
        match lines.read_line(&mut first_line) {
            Ok(0) => return Err(Error::bad_input(InputLocation::default(), "the file is empty")),
            Ok(_) => {
                line_number += 1;
                if !first_line.trim().is_empty() {
                    break parse_json_line(&first_line, line_number)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(Error::bad_input(InputLocation::row(line_number + 1), "invalid UTF-8"));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let names: Vec<String> = first.keys().cloned().collect();
    let columns = ColumnPlan::resolve(spec, &names)?;
    let plan = columns.clone();
    let mut pending = Some(first);
    let mut next_position = 0u64;
    let mut failed = false;
    let batches = std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let mut batch = RowBatch {
            first_position: next_position,
            ids: plan.id.as_ref().map(|_| Cells::default()),
            split_keys: plan.split_key.as_ref().map(|_| Cells::default()),
            ..RowBatch::default()
        };
        let mut line = String::new();
        while batch.len() < batch_rows {
            let object = match pending.take() {
                Some(object) => object,
                None => {
                    line.clear();
                    match lines.read_line(&mut line) {
                        Ok(0) => break,
                        Ok(_) => {
                            line_number += 1;
                            if line.trim().is_empty() {
                                continue;
                            }
                            match parse_json_line(&line, line_number) {
                                Ok(object) => object,
                                Err(e) => {
                                    failed = true;
                                    return Some(Err(e));
                                }
                            }
                        }
                        Err(e) => {
                            failed = true;
                            let err = if e.kind() == std::io::ErrorKind::InvalidData {
                                Error::bad_input(InputLocation::row(line_number + 1), "invalid UTF-8")
                            } else {
                                e.into()
                            };
                            return Some(Err(err));
                        }
                    }
                }
            };
            let texts: Vec<Option<String>> = plan.text.iter().map(|c| json_field_text(object.get(c))).collect();
            batch.texts.push_joined(texts.iter().map(Option::as_deref));
            batch.labels.push(json_field_text(object.get(&plan.label)).as_deref());
            if let (Some(ids), Some(c)) = (batch.ids.as_mut(), plan.id.as_ref()) {
                ids.push(json_field_text(object.get(c)).as_deref());
            }
            if let (Some(keys), Some(c)) = (batch.split_keys.as_mut(), plan.split_key.as_ref()) {
                keys.push(json_field_text(object.get(c)).as_deref());
            }
        }
        batch.text_bytes = batch.texts.bytes();
        next_position += batch.len() as u64;
        (!batch.is_empty()).then_some(Ok(batch))
    });
    Ok(OpenedInput { columns, batches: Box::new(batches) })
}

fn parse_json_line(line: &str, line_number: u64) -> Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(line) {
        Ok(serde_json::Value::Object(object)) => Ok(object),
        Ok(_) => Err(Error::bad_input(InputLocation::row(line_number), "a line must be a JSON object")),
        Err(e) => Err(Error::bad_input(InputLocation::row(line_number), format!("malformed JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bytes(Vec<u8>, &'static str);

    impl InputSource for Bytes {
        fn name(&self) -> &str {
            self.1
        }
        fn open(&self) -> Result<Box<dyn Read + Send>> {
            Ok(Box::new(Cursor::new(self.0.clone())))
        }
        fn local_file(&self) -> Result<PathBuf> {
            unreachable!()
        }
    }

    fn read_all(data: &str, name: &'static str, batch_rows: usize) -> Result<Vec<RowBatch>> {
        let source = Bytes(data.as_bytes().to_vec(), name);
        open(&source, &JobSpec::default(), ReadSettings::new(batch_rows, DecompressionLimits::default()))?
            .batches
            .collect()
    }

    const CSV: &str = "id,title,description,tag\n1,A,\"multi\nline, with \"\"quotes\"\"\",x\n2,B,,y\n3,C,d,\n";

    #[test]
    fn cells_keep_empty_values_apart_from_nulls() {
        let cells: Cells = [Some(""), None, Some("a b"), None, Some("c")].into_iter().collect();
        assert_eq!(cells.len(), 5);
        assert_eq!(cells.iter().collect::<Vec<_>>(), [Some(""), None, Some("a b"), None, Some("c")]);
    }

    #[test]
    fn csv_with_quoted_newlines_reads_at_any_batch_size() {
        for batch_rows in [1, 2, 100] {
            let batches = read_all(CSV, "d.csv", batch_rows).unwrap();
            let texts: Vec<&str> = batches.iter().flat_map(|b| b.texts.iter()).collect();
            assert_eq!(texts, ["A multi\nline, with \"quotes\"", "B ", "C d"], "batch_rows {batch_rows}");
            let labels: Vec<Option<&str>> = batches.iter().flat_map(|b| b.labels.iter()).collect();
            assert_eq!(labels, [Some("x"), Some("y"), None]);
            let positions: Vec<u64> = batches.iter().map(|b| b.first_position).collect();
            assert_eq!(positions[0], 0);
        }
    }

    fn read_in_parallel(data: &str, batch_rows: usize, threads: usize) -> Result<(Vec<RowBatch>, Vec<u64>)> {
        let source = Bytes(data.as_bytes().to_vec(), "d.csv");
        let read = ReadSettings::new(batch_rows, DecompressionLimits::default());
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut batches = Vec::new();
        let chunk_rows = open_chunks(&source, &JobSpec::default(), read)?.for_each_in_order(&pool, |batch| {
            batches.push(batch);
            Ok(())
        })?;
        Ok((batches, chunk_rows))
    }

    #[test]
    fn parallel_parsing_numbers_rows_as_one_thread_does() {
        let mut data = String::from("id,title,description,tag\n");
        for row in 0..500 {
            data.push_str(&format!("{row},t{row},\"line\n{row}\",c{}\n", row % 3));
        }
        let sequential = read_all(&data, "d.csv", 7).unwrap();
        for threads in [1, 2, 5] {
            let (parallel, chunk_rows) = read_in_parallel(&data, 7, threads).unwrap();
            assert_eq!(parallel.len(), sequential.len());
            for (p, s) in parallel.iter().zip(&sequential) {
                assert_eq!((p.first_position, &p.texts, &p.labels), (s.first_position, &s.texts, &s.labels));
            }
            assert_eq!(chunk_rows, sequential.iter().map(|b| b.len() as u64).collect::<Vec<_>>());
        }
        // The first bad record in input order is the error, whatever finishes first.
        let bad = data.clone() + "501,a,\"open,x\n";
        let err = read_in_parallel(&bad, 7, 4).unwrap_err();
        assert!(matches!(err, Error::BadInput { location: InputLocation { row: Some(501), .. }, .. }), "{err:?}");
    }

    /// The same bytes as a file on disk, which CSV reads by mapping it.
    struct OnDisk(tempfile::TempPath);

    impl OnDisk {
        fn new(data: &[u8]) -> Self {
            let file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
            std::fs::write(file.path(), data).unwrap();
            Self(file.into_temp_path())
        }
    }

    impl InputSource for OnDisk {
        fn name(&self) -> &str {
            "d.csv"
        }
        fn open(&self) -> Result<Box<dyn Read + Send>> {
            Ok(Box::new(std::fs::File::open(&self.0)?))
        }
        fn local_file(&self) -> Result<PathBuf> {
            Ok(self.0.to_path_buf())
        }
        fn file_on_disk(&self) -> Option<PathBuf> {
            Some(self.0.to_path_buf())
        }
    }

    /// Rows (position, text, label) of a whole pass, the checksum taken on
    /// the way, or the pass's error.
    type Pass = Result<(Vec<(u64, String, Option<String>)>, (u64, String))>;

    fn pass(source: &dyn InputSource, batch_rows: usize) -> Pass {
        let digest = Arc::new(Mutex::new(FileDigest::default()));
        let read = ReadSettings::new(batch_rows, DecompressionLimits::default());
        let opened = open_chunks_counting(source, &JobSpec::default(), read, Some(digest.clone()))?;
        let mut rows = Vec::new();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        opened.for_each_in_order(&pool, |batch| {
            for (i, (text, label)) in batch.texts.iter().zip(batch.labels.iter()).enumerate() {
                rows.push((batch.first_position + i as u64, text.to_string(), label.map(str::to_owned)));
            }
            Ok(())
        })?;
        let digest = std::mem::take(&mut *digest.lock().unwrap()).finish();
        Ok((rows, digest))
    }

    #[test]
    fn a_mapped_file_reads_as_the_stream_of_its_bytes_does() {
        let mut many = String::from("id,title,description,tag\n");
        for row in 0..300 {
            many.push_str(&format!("{row},t{row},\"line\n{row}, \"\"q\"\"\",c{}\n", row % 3));
        }
        let inputs = [
            CSV.to_string(),
            many,
            format!("\u{feff}{CSV}"),
            CSV.trim_end().to_string(),
            format!("{CSV}\n \n"),
            CSV.replace('\n', "\r\n"),
            "id,title,description,tag\n".to_string(),
            "id,title,description,tag\n1,a,\"open,x\n".to_string(),
            format!("{CSV}9,a,\"open,x\n"),
            String::new(),
        ];
        for data in &inputs {
            let streamed = Bytes(data.as_bytes().to_vec(), "d.csv");
            let mapped = OnDisk::new(data.as_bytes());
            for batch_rows in [1, 2, 7, 100] {
                let (a, b) = (pass(&streamed, batch_rows), pass(&mapped, batch_rows));
                match (&a, &b) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a, b, "{data:?} at {batch_rows} rows a batch");
                        assert_eq!(b.1.0, data.len() as u64);
                        assert_eq!(b.1.1, hex::encode(Sha256::digest(data.as_bytes())));
                    }
                    (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{data:?}"),
                    _ => panic!("{data:?} at {batch_rows}: streamed {a:?}, mapped {b:?}"),
                }
            }
        }
    }

    #[test]
    fn csv_errors_name_the_place() {
        let err = read_all("id,title,description,tag\n1,a,\"open,x\n", "d.csv", 10).unwrap_err();
        assert!(matches!(err, Error::BadInput { location: InputLocation { row: Some(1), .. }, .. }), "{err:?}");
        let err = read_all("id,title,tag\n1,a,x\n", "d.csv", 10).unwrap_err();
        assert!(
            matches!(&err, Error::BadInput { location, .. } if location.column.as_deref() == Some("description")),
            "{err:?}"
        );
        let err = read_all("", "d.csv", 10).unwrap_err();
        assert!(matches!(err, Error::BadInput { .. }));
        let bad = Bytes(b"id,title,description,tag\n1,a,b,x\n2,\xff,b,x\n".to_vec(), "d.csv");
        let read = ReadSettings::new(10, DecompressionLimits::default());
        let err = open(&bad, &JobSpec::default(), read).unwrap().batches.collect::<Result<Vec<_>>>().unwrap_err();
        assert!(matches!(err, Error::BadInput { location: InputLocation { row: Some(2), .. }, .. }), "{err:?}");
    }

    #[test]
    fn jsonl_reads_and_names_bad_lines() {
        let data = "{\"title\":\"a\",\"description\":null,\"tag\":\"x\"}\n\n{\"title\":\"b\",\"description\":\"c\",\"tag\":1}\n";
        let batches = read_all(data, "d.jsonl", 10).unwrap();
        assert_eq!(batches[0].texts.iter().collect::<Vec<_>>(), ["a ", "b c"]);
        assert_eq!(batches[0].labels.iter().collect::<Vec<_>>(), [Some("x"), Some("1")]);
        let err = read_all("{\"title\":\"a\",\"description\":\"\",\"tag\":\"x\"}\n{oops\n", "d.jsonl", 10).unwrap_err();
        assert!(matches!(err, Error::BadInput { location: InputLocation { row: Some(2), .. }, .. }), "{err:?}");
    }
}
