//! A processed row as a job keeps it until the write stage: where it sorts,
//! its split hash and class, and its id, cleaned text and token ids packed
//! in one allocation.
//!
//! A job whose rows fit in memory keeps all of them, a million for the
//! course's benchmark. As three allocations (id, text, ids as `u32`) and a
//! 104-byte struct they took two fifths more memory for the kernel to fault
//! in and zero (about 350 bytes a course row against 250), three allocations
//! to make and free, and nearly twice the bytes for the sort to move. Token
//! ids take two bytes each when they fit, which they do for any vocabulary
//! under 65,536 pieces (BERT's has 30,522).

/// A row's id, cleaned text and token ids, packed. Built on a worker, before
/// the row's place in the split is known.
#[derive(Clone, PartialEq, Eq)]
pub struct RowContent {
    /// The id's bytes, the text's, then the token ids, little-endian: `u16`
    /// each, or `u32` each when one of them does not fit.
    packed: Box<[u8]>,
    /// The id's length, or [`NO_ID`].
    id_len: u32,
    /// The text's length, and [`WIDE_IDS`] when the ids take four bytes.
    text_len: u32,
}

const NO_ID: u32 = u32::MAX;
const WIDE_IDS: u32 = 1 << 31;

impl RowContent {
    /// # Panics
    /// On an id or a text of 2 GiB or more: no input format prepd reads
    /// holds such a cell.
    pub fn new(id: Option<&str>, text: &str, ids: &[u32]) -> Self {
        let wide = ids.iter().any(|&id| id > u32::from(u16::MAX));
        let id_bytes = id.map_or(&[][..], str::as_bytes);
        assert!(id_bytes.len() < WIDE_IDS as usize && text.len() < WIDE_IDS as usize, "a cell of 2 GiB or more");
        let width = if wide { 4 } else { 2 };
        let ids_start = id_bytes.len() + text.len();
        let mut packed = vec![0u8; ids_start + width * ids.len()].into_boxed_slice();
        packed[..id_bytes.len()].copy_from_slice(id_bytes);
        packed[id_bytes.len()..ids_start].copy_from_slice(text.as_bytes());
        // Written into sized slots, which compiles to vector moves.
        let slots = &mut packed[ids_start..];
        if wide {
            slots.chunks_exact_mut(4).zip(ids).for_each(|(slot, id)| slot.copy_from_slice(&id.to_le_bytes()));
        } else {
            slots.chunks_exact_mut(2).zip(ids).for_each(|(slot, &id)| slot.copy_from_slice(&(id as u16).to_le_bytes()));
        }
        let id_len = id.map_or(NO_ID, |_| id_bytes.len() as u32);
        let text_len = text.len() as u32 | if wide { WIDE_IDS } else { 0 };
        Self { packed, id_len, text_len }
    }

    pub fn id(&self) -> Option<&str> {
        (self.id_len != NO_ID).then(|| self.str_at(0, self.id_len as usize))
    }

    /// The cleaned text.
    pub fn text(&self) -> &str {
        self.str_at(self.text_start(), self.text_len())
    }

    /// The token ids, special tokens included.
    pub fn token_ids(&self) -> TokenIds<'_> {
        let bytes = &self.packed[self.text_start() + self.text_len()..];
        if self.text_len & WIDE_IDS != 0 { TokenIds::Wide(bytes) } else { TokenIds::Narrow(bytes) }
    }

    /// Where the id starts in memory, to ask the cache for it ahead.
    pub fn id_address(&self) -> *const u8 {
        self.packed.as_ptr()
    }

    /// Where the text starts in memory, to ask the cache for it ahead.
    pub fn text_address(&self) -> *const u8 {
        self.packed[self.text_start()..].as_ptr()
    }

    /// Where the token ids start in memory, to ask the cache for them ahead.
    pub fn token_ids_address(&self) -> *const u8 {
        self.packed[self.text_start() + self.text_len()..].as_ptr()
    }

    /// Appends the content as [`RowContent::read_from`] takes it back: its
    /// two lengths and its packed bytes, as they are in memory.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id_len.to_le_bytes());
        out.extend_from_slice(&self.text_len.to_le_bytes());
        out.extend_from_slice(&(self.packed.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.packed);
    }

    /// The content [`RowContent::write_to`] wrote at the start of `input`,
    /// which then starts after it; `None` if those bytes are not one (the
    /// lengths disagree, or the id or the text is not UTF-8).
    pub fn read_from(input: &mut &[u8]) -> Option<Self> {
        let u32_at = |input: &mut &[u8]| -> Option<u32> {
            let (head, rest) = input.split_first_chunk::<4>()?;
            *input = rest;
            Some(u32::from_le_bytes(*head))
        };
        let (id_len, text_len, packed_len) = (u32_at(input)?, u32_at(input)?, u32_at(input)? as usize);
        let packed = input.get(..packed_len)?;
        *input = &input[packed_len..];
        let content = Self { packed: packed.into(), id_len, text_len };
        let (text_start, text_end) = (content.text_start(), content.text_start() + content.text_len());
        let width = if text_len & WIDE_IDS != 0 { 4 } else { 2 };
        let whole = text_end <= packed_len && (packed_len - text_end).is_multiple_of(width);
        let utf8 = whole
            && std::str::from_utf8(&packed[..text_start]).is_ok()
            && std::str::from_utf8(&packed[text_start..text_end]).is_ok();
        utf8.then_some(content)
    }

    fn text_start(&self) -> usize {
        if self.id_len == NO_ID { 0 } else { self.id_len as usize }
    }

    fn text_len(&self) -> usize {
        (self.text_len & !WIDE_IDS) as usize
    }

    fn str_at(&self, start: usize, len: usize) -> &str {
        let bytes = &self.packed[start..start + len];
        // SAFETY: the id's and the text's bytes were copied from `&str`s in
        // `new`, at these places, and nothing writes `packed` afterwards.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }
}

impl std::fmt::Debug for RowContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowContent")
            .field("id", &self.id())
            .field("text", &self.text())
            .field("token_ids", &self.token_ids().iter().collect::<Vec<_>>())
            .finish()
    }
}

/// A row's token ids as they are packed.
#[derive(Debug, Clone, Copy)]
pub enum TokenIds<'a> {
    /// Two bytes each, little-endian.
    Narrow(&'a [u8]),
    /// Four bytes each, little-endian.
    Wide(&'a [u8]),
}

impl<'a> TokenIds<'a> {
    pub fn len(&self) -> usize {
        match self {
            TokenIds::Narrow(bytes) => bytes.len() / 2,
            TokenIds::Wide(bytes) => bytes.len() / 4,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(self) -> impl Iterator<Item = u32> + 'a {
        let (bytes, width) = match self {
            TokenIds::Narrow(bytes) => (bytes, 2),
            TokenIds::Wide(bytes) => (bytes, 4),
        };
        bytes.chunks_exact(width).map(|id| match *id {
            [a, b] => u32::from(u16::from_le_bytes([a, b])),
            [a, b, c, d] => u32::from_le_bytes([a, b, c, d]),
            _ => unreachable!("ids are two or four bytes"),
        })
    }
}

/// A processed row, as it goes into a split's Parquet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessedRow {
    /// Sort key within the split: `(order hash, position)`.
    pub order: (u64, u64),
    /// The row's membership hash: with its position, which side of the
    /// split it is on (decided once every row has been offered).
    pub split_hash: u64,
    /// The row's class: its index in the job's class mapping.
    pub target: u32,
    pub content: RowContent,
}

const _: () = assert!(std::mem::size_of::<ProcessedRow>() == 56);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_reads_back_as_packed() {
        for (id, text, ids) in [
            (Some("42"), "hello world", vec![101, 7592, 2088, 102]),
            (None, "hello", vec![101, 102]),
            (Some(""), "", vec![]),
            (None, "", vec![0, 65_535]),
            (Some("é-1"), "wide ids", vec![101, 65_536, u32::MAX, 102]),
        ] {
            let content = RowContent::new(id, text, &ids);
            assert_eq!(content.id(), id);
            assert_eq!(content.text(), text);
            assert_eq!(content.token_ids().len(), ids.len());
            assert_eq!(content.token_ids().iter().collect::<Vec<_>>(), ids);
            let wide = ids.iter().any(|&id| id > 65_535);
            assert_eq!(matches!(content.token_ids(), TokenIds::Wide(_)), wide, "{ids:?}");
            let mut written = Vec::new();
            content.write_to(&mut written);
            written.push(7);
            let mut input = written.as_slice();
            assert_eq!(RowContent::read_from(&mut input), Some(content), "{text:?}");
            assert_eq!(input, [7]);
        }
    }

    #[test]
    fn content_read_back_from_damaged_bytes_is_refused() {
        let mut written = Vec::new();
        RowContent::new(Some("7"), "héllo", &[101, 102]).write_to(&mut written);
        let refused = |bytes: &[u8]| RowContent::read_from(&mut &bytes[..]).is_none();
        assert!(!refused(&written));
        // Cut short anywhere.
        assert!((0..written.len()).all(|len| refused(&written[..len])));
        // The text's length wrong: 2 bytes cut the é, 7 leave the ids an
        // odd number of bytes.
        for text_len in [2u32, 7] {
            let mut damaged = written.clone();
            damaged[4..8].copy_from_slice(&text_len.to_le_bytes());
            assert!(refused(&damaged), "{text_len}");
        }
        // The id's length past the content.
        let mut damaged = written.clone();
        damaged[0..4].copy_from_slice(&100u32.to_le_bytes());
        assert!(refused(&damaged));
    }
}
