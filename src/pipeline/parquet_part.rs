//! One Parquet part of a split: `id`, `text`, `ids` (list<int32>),
//! `masks` (list<int8>), `targets` (int64), in polars' layout and schema.
//!
//! Polars encodes the flat columns. The two token lists are encoded here:
//! polars' general nested writer walks every token through a level iterator
//! twice, which was most of the write stage's time, while a row's token list
//! has a fixed shape. A list column of this schema (optional list, optional
//! item) has repetition level 0 for a row's first token and 1 for the others,
//! and definition level 3 for every token (1 for an empty list). So a page's
//! levels are RLE runs, two a row and one for the page's definitions, and its
//! values are the tokens as they are.

use std::borrow::Borrow;

use polars::prelude::*;
use polars_parquet::parquet::CowBuffer;
use polars_parquet::parquet::error::ParquetError;
use polars_parquet::parquet::page::{DataPage, DataPageHeader, DataPageHeaderV1};
use polars_parquet::parquet::statistics::{PrimitiveStatistics, Statistics};
use polars_parquet::write::{
    CompressionOptions, Compressor, Descriptor, DynIter, DynStreamingIterator, Encoding, FallibleStreamingIterator,
    FileWriter, Page, RowGroupIterColumns, StatisticsOptions, Version, WriteOptions, array_to_columns,
    get_dtype_encoding, to_parquet_schema,
};

use super::artifacts::IdColumn;
use super::prefetch;
use super::processed_row::{ProcessedRow, RowContent, TokenIds};
use crate::error::{Error, Result};

/// Rows per row group, as polars' own writer cuts them.
const ROW_GROUP_ROWS: usize = 512 * 512;
/// Tokens per data page of a list column: 1 MiB of int32, polars' page size.
const PAGE_TOKENS: usize = 1 << 18;
/// Definition levels of a token list: an element present, and an empty list.
const TOKEN_PRESENT: u8 = 3;
const LIST_EMPTY: u8 = 1;

/// The part's bytes; `rows` are the rows or references to them, in order.
pub fn parquet_part<R: Borrow<ProcessedRow>>(rows: &[R], id_column: IdColumn) -> Result<Vec<u8>> {
    let mut fields = Vec::with_capacity(5);
    match id_column {
        IdColumn::Absent => {}
        IdColumn::Integer => fields.push(Field::new("id".into(), DataType::Int64)),
        IdColumn::Text => fields.push(Field::new("id".into(), DataType::String)),
    }
    fields.push(Field::new("text".into(), DataType::String));
    fields.push(Field::new("ids".into(), DataType::List(Box::new(DataType::Int32))));
    fields.push(Field::new("masks".into(), DataType::List(Box::new(DataType::Int8))));
    fields.push(Field::new("targets".into(), DataType::Int64));
    let schema = Schema::from_iter(fields).to_arrow(CompatLevel::newest());
    let parquet_schema = to_parquet_schema(&schema)?;
    let options = WriteOptions {
        statistics: StatisticsOptions::default(),
        version: Version::V1,
        compression: CompressionOptions::Zstd(None),
        data_page_size: None,
    };
    let encodings: Vec<Vec<Encoding>> = schema.iter_values().map(|f| get_dtype_encoding(&f.dtype)).collect();
    // Leaf columns in schema order: one per field, the lists' items included.
    let leaves: Vec<Descriptor> = parquet_schema.columns().iter().map(|c| c.descriptor.clone()).collect();
    let types = parquet_schema.fields().to_vec();

    let mut bytes = Vec::new();
    let mut writer = FileWriter::try_new(&mut bytes, schema.clone(), options)?;
    let mut groups = rows.chunks(ROW_GROUP_ROWS).peekable();
    // An empty part still has one (empty) row group, as polars writes it.
    let empty: [&[R]; 1] = [&[]];
    let groups: Box<dyn Iterator<Item = &[R]>> =
        if groups.peek().is_none() { Box::new(empty.into_iter()) } else { Box::new(groups) };
    for group in groups {
        let mut columns: Vec<RowGroupColumn> = Vec::with_capacity(5);
        let mut field = 0;
        let flat = |series: Series, field: &mut usize| -> Result<Vec<RowGroupColumn>> {
            let array = series.rechunk().to_arrow(0, CompatLevel::newest());
            let pages = array_to_columns(array, types[*field].clone(), options, &encodings[*field])?;
            *field += 1;
            Ok(pages.into_iter().map(|pages| compressed(pages, options)).collect())
        };
        match id_column {
            IdColumn::Absent => {}
            IdColumn::Integer => {
                let values: Vec<Option<i64>> = asking_ahead(group, RowContent::id_address)
                    .map(|r| r.content.id().and_then(IdColumn::integer))
                    .collect();
                columns.extend(flat(Series::new("id".into(), values), &mut field)?);
            }
            IdColumn::Text => {
                let values: Vec<Option<&str>> =
                    asking_ahead(group, RowContent::id_address).map(|r| r.content.id()).collect();
                columns.extend(flat(Series::new("id".into(), values), &mut field)?);
            }
        }
        let texts = asking_ahead(group, RowContent::text_address).map(|r| r.content.text());
        columns.extend(flat(StringChunked::from_iter_values("text".into(), texts).into_series(), &mut field)?);
        // The lists' leaves follow the flat columns before them one for one.
        let ids_leaf = &leaves[field];
        let masks_leaf = &leaves[field + 1];
        columns.push(compressed(token_pages(group, ids_leaf, TokenValues::Ids)?, options));
        columns.push(compressed(token_pages(group, masks_leaf, TokenValues::Ones)?, options));
        field += 2;
        let targets: Vec<i64> = group.iter().map(|r| i64::from(r.borrow().target)).collect();
        columns.extend(flat(Series::new("targets".into(), targets), &mut field)?);
        writer.write(group.len() as u64, DynIter::new(columns.into_iter()))?;
    }
    writer.end(None)?;
    drop(writer);
    Ok(bytes)
}

type RowGroupColumn = <RowGroupIterColumns<'static, PolarsError> as Iterator>::Item;

/// A column's pages, compressed as the file writer takes them.
fn compressed(
    pages: impl Iterator<Item = PolarsResult<Page>> + Send + Sync + 'static,
    options: WriteOptions,
) -> RowGroupColumn {
    let pages = pages.map(|page| page.map_err(|e| ParquetError::FeatureNotSupported(e.to_string())));
    let compressor = Compressor::new(pages, options.compression, vec![]).map_err(PolarsError::from);
    Ok(DynStreamingIterator::new(compressor))
}

/// What a token list column holds for each token.
#[derive(Clone, Copy)]
enum TokenValues {
    /// The token's id.
    Ids,
    /// 1: the attention mask of a real token.
    Ones,
}

/// A token list column's data pages (v1, plain values, RLE levels): whole
/// rows per page, about `PAGE_TOKENS` tokens each.
fn token_pages<R: Borrow<ProcessedRow>>(
    rows: &[R],
    leaf: &Descriptor,
    values: TokenValues,
) -> Result<std::vec::IntoIter<PolarsResult<Page>>> {
    if (leaf.max_def_level, leaf.max_rep_level) != (i16::from(TOKEN_PRESENT), 1) {
        return Err(Error::internal(format!("a token list's levels are {leaf:?}")));
    }
    let mut pages = Vec::new();
    let mut rest = rows;
    loop {
        let mut tokens = 0;
        let take = rest
            .iter()
            .position(|row| {
                tokens += tokens_of(row.borrow());
                tokens > PAGE_TOKENS
            })
            .unwrap_or(rest.len())
            .max(1)
            .min(rest.len());
        let (page_rows, after) = rest.split_at(take);
        rest = after;
        pages.push(Ok(Page::Data(token_page(page_rows, leaf, values))));
        if rest.is_empty() {
            break;
        }
    }
    Ok(pages.into_iter())
}

/// A row's token count: known from the length of its packed content, so
/// counting does not read the row's memory.
fn tokens_of(row: &ProcessedRow) -> usize {
    row.content.token_ids().len()
}

fn token_page<R: Borrow<ProcessedRow>>(rows: &[R], leaf: &Descriptor, values: TokenValues) -> DataPage {
    let tokens: usize = rows.iter().map(|r| tokens_of(r.borrow())).sum();
    let mut buffer = Vec::with_capacity(4 * tokens + 8 * rows.len() + 32);
    let mut levels = 0usize;

    // Repetition levels (bit width 1): 0 once a row, 1 for its other tokens.
    let start = begin_levels(&mut buffer);
    for row in rows.iter().map(R::borrow) {
        let tokens = tokens_of(row);
        rle_run(&mut buffer, 1, 0);
        if tokens > 1 {
            rle_run(&mut buffer, tokens - 1, 1);
        }
        levels += tokens.max(1);
    }
    end_levels(&mut buffer, start);

    // Definition levels (bit width 2): one run per stretch of non-empty rows.
    let start = begin_levels(&mut buffer);
    let mut present = 0;
    for row in rows.iter().map(R::borrow) {
        let tokens = tokens_of(row);
        if tokens == 0 {
            if present > 0 {
                rle_run(&mut buffer, present, TOKEN_PRESENT);
                present = 0;
            }
            rle_run(&mut buffer, 1, LIST_EMPTY);
        } else {
            present += tokens;
        }
    }
    if present > 0 {
        rle_run(&mut buffer, present, TOKEN_PRESENT);
    }
    end_levels(&mut buffer, start);

    let (min, max, encoding) = match values {
        TokenValues::Ids => {
            let (min, max) = plain_ids(&mut buffer, rows, tokens);
            (min, max, Encoding::Plain)
        }
        TokenValues::Ones => {
            delta_ones(&mut buffer, tokens);
            (1, 1, Encoding::DeltaBinaryPacked)
        }
    };
    // The file's other columns carry statistics, and a column chunk's come
    // from its pages: every page must have them.
    let statistics = PrimitiveStatistics {
        primitive_type: leaf.primitive_type.clone(),
        null_count: Some(0),
        distinct_count: None,
        min_value: (tokens > 0).then_some(min),
        max_value: (tokens > 0).then_some(max),
    };
    let header = DataPageHeaderV1 {
        num_values: levels as i32,
        encoding: encoding.into(),
        definition_level_encoding: Encoding::Rle.into(),
        repetition_level_encoding: Encoding::Rle.into(),
        statistics: Some(Statistics::Int32(statistics).serialize()),
    };
    DataPage::new(DataPageHeader::V1(header), CowBuffer::Owned(buffer), leaf.clone(), rows.len())
}

/// The rows' ids as plain int32, little-endian, and their least and
/// greatest. Written into a sized slice a row at a time, which compiles to
/// vector moves; pushed a token at a time, it did not.
fn plain_ids<R: Borrow<ProcessedRow>>(buffer: &mut Vec<u8>, rows: &[R], tokens: usize) -> (i32, i32) {
    let (mut min, mut max) = (i32::MAX, i32::MIN);
    let start = buffer.len();
    buffer.resize(start + 4 * tokens, 0);
    let mut out = buffer[start..].chunks_exact_mut(4);
    for row in asking_ahead(rows, RowContent::token_ids_address) {
        // The row's ids lead the zip, so no slot is taken past them.
        let mut put = |id: i32, slot: &mut [u8]| {
            slot.copy_from_slice(&id.to_le_bytes());
            min = min.min(id);
            max = max.max(id);
        };
        match row.content.token_ids() {
            TokenIds::Narrow(ids) => {
                for (id, slot) in ids.chunks_exact(2).zip(out.by_ref()) {
                    put(i32::from(u16::from_le_bytes([id[0], id[1]])), slot);
                }
            }
            TokenIds::Wide(ids) => {
                for (id, slot) in ids.chunks_exact(4).zip(out.by_ref()) {
                    put(u32::from_le_bytes([id[0], id[1], id[2], id[3]]) as i32, slot);
                }
            }
        }
    }
    (min, max)
}

/// `count` ones, DELTA_BINARY_PACKED: the first value, then one block per
/// `DELTA_BLOCK` values whose deltas are all 0, so every miniblock is 0
/// bits wide and takes no bytes. As plain int32 the masks were as many
/// bytes as the ids, all for the compressor to squeeze out again.
fn delta_ones(buffer: &mut Vec<u8>, count: usize) {
    const DELTA_BLOCK: usize = 4096;
    const MINIBLOCKS: usize = 4;
    uleb128(buffer, DELTA_BLOCK as u64);
    uleb128(buffer, MINIBLOCKS as u64);
    uleb128(buffer, count as u64);
    // The first value, zigzag-encoded: 1 as 2.
    uleb128(buffer, if count > 0 { 2 } else { 0 });
    for _ in 0..count.saturating_sub(1).div_ceil(DELTA_BLOCK) {
        // The block's least delta (zigzag 0), then each miniblock's bit width.
        buffer.push(0);
        buffer.extend_from_slice(&[0; MINIBLOCKS]);
    }
}

/// How far ahead of the row being written its successors' data is asked for.
const PREFETCH_ROWS_AHEAD: usize = 8;

/// The rows in order, each one's data at `address` (its id, its text or its
/// token ids) asked for `PREFETCH_ROWS_AHEAD` rows before it is visited. A
/// part's rows are in split order, so their contents lie scattered over the
/// heap: each column's pass would wait on a cache miss a row, where asked
/// ahead the misses overlap (the token lists' pass took an eighth less time
/// on the course data).
fn asking_ahead<R: Borrow<ProcessedRow>>(
    rows: &[R],
    address: impl Fn(&RowContent) -> *const u8,
) -> impl Iterator<Item = &ProcessedRow> {
    rows.iter().enumerate().map(move |(at, row)| {
        if let Some(later) = rows.get(at + PREFETCH_ROWS_AHEAD) {
            prefetch(address(&later.borrow().content));
        }
        row.borrow()
    })
}

/// Levels in a v1 page are prefixed by their length in bytes (4, LE).
fn begin_levels(buffer: &mut Vec<u8>) -> usize {
    buffer.extend_from_slice(&[0; 4]);
    buffer.len()
}

fn end_levels(buffer: &mut [u8], start: usize) {
    let length = (buffer.len() - start) as u32;
    buffer[start - 4..start].copy_from_slice(&length.to_le_bytes());
}

/// One RLE run of the hybrid encoding, for bit widths up to 8: the run's
/// length shifted left once (ULEB128), then the value in one byte.
fn rle_run(buffer: &mut Vec<u8>, count: usize, value: u8) {
    uleb128(buffer, (count as u64) << 1);
    buffer.push(value);
}

fn uleb128(buffer: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            buffer.push(byte);
            break;
        }
        buffer.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every eleventh row has ids too large for two bytes each.
    fn row(n: usize, tokens: usize) -> ProcessedRow {
        let vocab = if n.is_multiple_of(11) { 250_000 } else { 30_522 };
        let ids: Vec<u32> = (0..tokens).map(|t| ((n * 7 + t) * 31 % vocab) as u32).collect();
        let id = (!n.is_multiple_of(5)).then(|| format!(" {n}"));
        let content = RowContent::new(id.as_deref(), &format!("text {n}"), &ids);
        ProcessedRow { order: (n as u64, n as u64), split_hash: 0, target: (n % 4) as u32, content }
    }

    fn read_back(bytes: Vec<u8>) -> DataFrame {
        ParquetReader::new(std::io::Cursor::new(bytes)).finish().unwrap()
    }

    fn lists<T: PolarsNumericType>(frame: &DataFrame, column: &str) -> Vec<Vec<T::Native>> {
        let lists = frame.column(column).unwrap().list().unwrap();
        (0..lists.len())
            .map(|i| lists.get_as_series(i).unwrap().unpack::<T>().unwrap().into_no_null_iter().collect())
            .collect()
    }

    #[test]
    fn token_lists_read_back_across_pages_row_groups_and_empty_lists() {
        // Long rows cross the pages' token budget; empty lists (which a
        // max_length of 0 would give) sit between and at the ends of stretches.
        let mut rows: Vec<ProcessedRow> =
            (0..2_000).map(|n| row(n, if n % 97 == 3 { 0 } else { 1 + n % 300 })).collect();
        rows.push(row(2_000, 0));
        // Enough two-token rows for a second row group.
        rows.extend((2_001..ROW_GROUP_ROWS + 10).map(|n| row(n, 2)));
        let frame = read_back(parquet_part(&rows, IdColumn::Integer).unwrap());
        assert_eq!(frame.get_column_names(), ["id", "text", "ids", "masks", "targets"]);
        assert_eq!(frame.height(), rows.len());
        let ids = lists::<Int32Type>(&frame, "ids");
        let masks = lists::<Int8Type>(&frame, "masks");
        for (i, row) in rows.iter().enumerate() {
            let expected: Vec<i32> = row.content.token_ids().iter().map(|id| id as i32).collect();
            assert_eq!(ids[i], expected, "row {i}");
            assert_eq!(masks[i], vec![1i8; expected.len()], "row {i}");
        }
        let read_ids = frame.column("id").unwrap().i64().unwrap().clone();
        let read_ids: Vec<Option<i64>> = (0..read_ids.len()).map(|i| read_ids.get(i)).collect();
        let expected_ids: Vec<Option<i64>> =
            rows.iter().map(|r| r.content.id().map(|s| s.trim().parse().unwrap())).collect();
        assert_eq!(read_ids, expected_ids);
        let targets: Vec<i64> = frame.column("targets").unwrap().i64().unwrap().into_no_null_iter().collect();
        assert_eq!(targets, rows.iter().map(|r| i64::from(r.target)).collect::<Vec<_>>());
    }

    #[test]
    fn an_empty_part_keeps_the_schema() {
        for (id_column, names) in [
            (IdColumn::Text, &["id", "text", "ids", "masks", "targets"][..]),
            (IdColumn::Absent, &["text", "ids", "masks", "targets"][..]),
        ] {
            let frame = read_back(parquet_part::<ProcessedRow>(&[], id_column).unwrap());
            assert_eq!(frame.height(), 0);
            assert_eq!(frame.get_column_names(), names);
            assert_eq!(frame.column("ids").unwrap().dtype(), &DataType::List(Box::new(DataType::Int32)));
            assert_eq!(frame.column("masks").unwrap().dtype(), &DataType::List(Box::new(DataType::Int8)));
        }
    }
}
