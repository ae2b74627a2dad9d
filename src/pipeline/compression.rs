//! Compressed inputs (`.csv.gz`, `.jsonl.zst`, ...), decompressed as a
//! stream, with caps on the output's size and on the compression ratio so
//! that a small upload cannot expand without bound (a decompression bomb).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, InputLocation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a file name's last extension names, and the name without it.
    pub fn split_name(name: &str) -> (Self, &str) {
        let lower = name.to_ascii_lowercase();
        for (suffix, compression) in
            [(".gz", Self::Gzip), (".gzip", Self::Gzip), (".zst", Self::Zstd), (".zstd", Self::Zstd)]
        {
            if lower.ends_with(suffix) {
                return (compression, &name[..name.len() - suffix.len()]);
            }
        }
        (Self::None, name)
    }
}

/// How far a compressed input may expand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecompressionLimits {
    /// Decompressed bytes at most.
    pub max_bytes: u64,
    /// Decompressed bytes per compressed byte at most, checked once the
    /// output passes [`RATIO_GRACE_BYTES`].
    pub max_ratio: u64,
}

impl Default for DecompressionLimits {
    fn default() -> Self {
        Self { max_bytes: 1 << 40, max_ratio: 250 }
    }
}

/// Output below this never trips the ratio check: small files compress well
/// and cannot hurt.
pub const RATIO_GRACE_BYTES: u64 = 64 << 20;

/// Counts the compressed bytes the decoder pulls.
struct Counted<R> {
    inner: R,
    consumed: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The decoder's output, checked against the limits.
struct Capped<R> {
    decoder: R,
    what: &'static str,
    produced: u64,
    consumed: Arc<AtomicU64>,
    limits: DecompressionLimits,
}

fn as_io(err: Error) -> io::Error {
    io::Error::other(err)
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read(buf).map_err(|e| {
            // The source's own failures pass through; anything else is a corrupt stream.
            if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
                e
            } else {
                as_io(Error::bad_input(InputLocation::default(), format!("not a valid {} stream: {e}", self.what)))
            }
        })?;
        self.produced += n as u64;
        if self.produced > self.limits.max_bytes {
            return Err(as_io(Error::bad_input(
                InputLocation::default(),
                format!(
                    "decompresses to more than {} bytes, the limit (PREPD_MAX_DECOMPRESSED_BYTES)",
                    self.limits.max_bytes
                ),
            )));
        }
        let consumed = self.consumed.load(Ordering::Relaxed).max(1);
        if self.produced > RATIO_GRACE_BYTES && self.produced / consumed > self.limits.max_ratio {
            return Err(as_io(Error::bad_input(
                InputLocation::default(),
                format!(
                    "expands more than {}-fold, the limit (PREPD_MAX_COMPRESSION_RATIO); refusing a possible decompression bomb",
                    self.limits.max_ratio
                ),
            )));
        }
        Ok(n)
    }
}

/// `reader` decompressed as `compression` says, within `limits`.
pub fn decompress(
    reader: Box<dyn Read + Send>,
    compression: Compression,
    limits: DecompressionLimits,
) -> io::Result<Box<dyn Read + Send>> {
    let consumed = Arc::new(AtomicU64::new(0));
    let counted = Counted { inner: reader, consumed: consumed.clone() };
    Ok(match compression {
        Compression::None => Box::new(counted),
        Compression::Gzip => Box::new(Capped {
            decoder: flate2::read::MultiGzDecoder::new(counted),
            what: "gzip",
            produced: 0,
            consumed,
            limits,
        }),
        Compression::Zstd => Box::new(Capped {
            decoder: zstd::stream::read::Decoder::new(counted)?,
            what: "zstd",
            produced: 0,
            consumed,
            limits,
        }),
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn read_all(bytes: Vec<u8>, compression: Compression, limits: DecompressionLimits) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        decompress(Box::new(Cursor::new(bytes)), compression, limits)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn names_split_into_compression_and_stem() {
        assert_eq!(Compression::split_name("d.csv.gz"), (Compression::Gzip, "d.csv"));
        assert_eq!(Compression::split_name("d.JSONL.ZST"), (Compression::Zstd, "d.JSONL"));
        assert_eq!(Compression::split_name("d.parquet"), (Compression::None, "d.parquet"));
    }

    #[test]
    fn round_trips_and_enforces_the_caps() {
        let data = b"id,title\n1,a\n".repeat(1000);
        let limits = DecompressionLimits::default();
        assert_eq!(read_all(gzip(&data), Compression::Gzip, limits).unwrap(), data);
        let zstd = zstd::encode_all(Cursor::new(&data), 3).unwrap();
        assert_eq!(read_all(zstd, Compression::Zstd, limits).unwrap(), data);

        let small = DecompressionLimits { max_bytes: 5000, ..limits };
        let err = read_all(gzip(&data), Compression::Gzip, small).unwrap_err();
        assert!(err.to_string().contains("PREPD_MAX_DECOMPRESSED_BYTES"), "{err}");

        let bomb = gzip(&vec![0u8; (RATIO_GRACE_BYTES + (1 << 20)) as usize]);
        let err = read_all(bomb, Compression::Gzip, limits).unwrap_err();
        assert!(err.to_string().contains("decompression bomb"), "{err}");

        let err = read_all(b"not gzip at all".to_vec(), Compression::Gzip, limits).unwrap_err();
        assert!(matches!(err, Error::BadInput { .. }), "{err:?}");
    }
}
