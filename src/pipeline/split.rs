//! The stratified train/validation split, decided by keyed hashes instead of
//! a random stream, so that membership and order do not depend on how many
//! workers, batches or retries there were.
//!
//! Per class of `n` rows, `ceil(test_size * n)` rows go to validation, as
//! scikit-learn's `train_test_split` computes it per group. The validation
//! rows are the ones with the smallest membership hashes, ties broken by the
//! row's position. A class that would leave train empty goes wholly to train
//! and is reported.
//!
//! The threshold is found without holding the rows: one pass counts each
//! class and histograms the top bits of its hashes ([`ClassTally`]), a second
//! keeps only the rows of the bucket where the threshold falls and selects it
//! exactly ([`Boundary`]).

use std::hash::Hasher;

use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;
use utoipa::ToSchema;

/// The key that identifies a row for hashing: where it is in the input, or
/// the value of the spec's `split_key` column.
#[derive(Debug, Clone, Copy)]
pub enum RowKey<'a> {
    /// Row `row` (0-based) of the file `file`: the file's path within a
    /// multi-file source, empty for a single file. Keying by the file's own
    /// path, not its rank, keeps a row's key when files are added beside it.
    Position {
        file: &'a str,
        row: u64,
    },
    Value(&'a str),
}

// Two fixed second halves of the SipHash key, so that the membership and
// order hashes of one row are independent.
const MEMBERSHIP_DOMAIN: u64 = 0x7072_6570_642d_7370; // "prepd-sp"
const ORDER_DOMAIN: u64 = 0x7072_6570_642d_6f72; // "prepd-or"

fn keyed_hash(seed: u64, domain: u64, key: RowKey<'_>) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(seed, domain);
    match key {
        RowKey::Position { file, row } => {
            hasher.write_u8(0);
            hasher.write(file.as_bytes());
            // Never part of UTF-8: the file name's end is unambiguous.
            hasher.write_u8(0xff);
            hasher.write(&row.to_le_bytes());
        }
        RowKey::Value(value) => {
            hasher.write_u8(1);
            hasher.write(value.as_bytes());
        }
    }
    hasher.finish()
}

/// Decides which side of the split a row falls on.
pub fn membership_hash(seed: u64, key: RowKey<'_>) -> u64 {
    keyed_hash(seed, MEMBERSHIP_DOMAIN, key)
}

/// Orders rows within a split: ascending `(order_hash, position)`.
pub fn order_hash(seed: u64, key: RowKey<'_>) -> u64 {
    keyed_hash(seed, ORDER_DOMAIN, key)
}

/// How many of a class's `n` rows go to validation: scikit-learn's
/// `ceil(test_size * n_samples)`, computed in the same floating point.
/// Zero when that would leave train empty (the class is then too small).
pub fn validation_count(test_size: f64, n: u64) -> u64 {
    let n_val = (test_size * n as f64).ceil() as u64;
    if n_val >= n { 0 } else { n_val }
}

/// The per-class rule that puts a row on the validation side: its
/// `(membership hash, position)` is below the class's threshold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassSplit {
    pub rows: u64,
    pub validation_rows: u64,
    /// The `(hash, position)` of the first row that stays in train; `None`
    /// when the whole class stays in train.
    threshold: Option<(u64, u64)>,
}

impl ClassSplit {
    pub fn is_validation(&self, membership_hash: u64, position: u64) -> bool {
        self.threshold.is_some_and(|t| (membership_hash, position) < t)
    }

    /// No row of the class went to validation (in exact mode: too few rows
    /// to leave train one after taking `ceil(test_size * n)`).
    pub fn too_small(&self) -> bool {
        self.validation_rows == 0
    }
}

/// Histogram buckets: the top bits of a membership hash. 4,096 buckets
/// keep a class's histogram (32 KiB) in the cache while a pass adds every
/// row to it at a random bucket (with 65,536 nearly every add missed it,
/// most of the time of the thread that numbers rows in order); the pass
/// after keeps the rows of one bucket, about `n / 4096` of a class's `n`.
const BUCKET_BITS: u32 = 12;

fn bucket_of(hash: u64) -> usize {
    (hash >> (64 - BUCKET_BITS)) as usize
}

/// A class keeps up to this many membership hashes themselves (8 bytes a
/// row); past it, a histogram over the buckets (8 bytes a bucket, 32 KiB).
/// So a class never costs more than the histogram, and a dataset of many
/// small classes costs about 8 bytes a row at most, not 32 KiB a class.
const HASHES_KEPT_UP_TO: usize = 4096;

#[derive(Debug, Clone)]
enum Spread {
    Hashes(Vec<u64>),
    Histogram(Box<[u64]>),
}

/// The first streaming pass over a class: its row count and how its
/// membership hashes spread over the buckets. Memory is bounded per class,
/// not grown per row.
#[derive(Debug, Clone)]
pub struct ClassTally {
    rows: u64,
    spread: Spread,
}

impl Default for ClassTally {
    fn default() -> Self {
        Self { rows: 0, spread: Spread::Hashes(Vec::new()) }
    }
}

impl ClassTally {
    pub fn add(&mut self, membership_hash: u64) {
        self.rows += 1;
        self.record(membership_hash);
    }

    fn record(&mut self, membership_hash: u64) {
        match &mut self.spread {
            Spread::Hashes(hashes) => {
                hashes.push(membership_hash);
                if hashes.len() > HASHES_KEPT_UP_TO {
                    self.histogram();
                }
            }
            Spread::Histogram(histogram) => histogram[bucket_of(membership_hash)] += 1,
        }
    }

    /// Turns the kept hashes into a histogram (once), and returns it.
    fn histogram(&mut self) -> &mut [u64] {
        if let Spread::Hashes(hashes) = &self.spread {
            let mut histogram = vec![0u64; 1 << BUCKET_BITS].into_boxed_slice();
            hashes.iter().for_each(|&h| histogram[bucket_of(h)] += 1);
            self.spread = Spread::Histogram(histogram);
        }
        match &mut self.spread {
            Spread::Histogram(histogram) => histogram,
            Spread::Hashes(_) => unreachable!("made a histogram above"),
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds another part of the same class (tallied from another file).
    pub fn merge(&mut self, other: &ClassTally) {
        self.rows += other.rows;
        match &other.spread {
            Spread::Hashes(hashes) => hashes.iter().for_each(|&h| self.record(h)),
            Spread::Histogram(theirs) => {
                self.histogram().iter_mut().zip(theirs.iter()).for_each(|(a, b)| *a += b);
            }
        }
    }

    /// What the second pass must look for in this class, in `mode`.
    pub fn boundary(&self, test_size: f64, mode: SplitMode) -> Boundary {
        match mode {
            SplitMode::Exact => self.exact_boundary(test_size),
            SplitMode::Stable => Boundary {
                rows: self.rows,
                validation_rows: 0,
                bucket: None,
                members: Vec::new(),
                stable_cut: Some(stable_cut(test_size)),
            },
        }
    }

    /// Where the class's first train row lies: which bucket, and its rank there.
    fn exact_boundary(&self, test_size: f64) -> Boundary {
        let validation_rows = validation_count(test_size, self.rows);
        let bucket = (validation_rows > 0).then(|| self.bucket_holding(validation_rows)).flatten();
        Boundary { rows: self.rows, validation_rows, bucket, members: Vec::new(), stable_cut: None }
    }

    /// The bucket of the row of rank `rank` (0-based) in hash order, and
    /// that row's rank within its bucket.
    fn bucket_holding(&self, rank: u64) -> Option<(usize, usize)> {
        match &self.spread {
            Spread::Hashes(hashes) => {
                let mut sorted = hashes.clone();
                sorted.sort_unstable();
                let bucket = bucket_of(*sorted.get(rank as usize)?);
                let before = sorted.partition_point(|&h| bucket_of(h) < bucket);
                Some((bucket, rank as usize - before))
            }
            Spread::Histogram(histogram) => {
                let mut before = 0u64;
                for (b, &count) in histogram.iter().enumerate() {
                    if before + count > rank {
                        return Some((b, (rank - before) as usize));
                    }
                    before += count;
                }
                None
            }
        }
    }
}

/// How rows are assigned to validation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SplitMode {
    /// Per class exactly `ceil(test_size * n)` rows: those with the smallest
    /// keyed hashes. Adding rows moves the boundary, so some rows change side.
    #[default]
    Exact,
    /// A row is in validation when its keyed hash is below `test_size` of the
    /// hash range: no row ever changes side as rows are added (with a
    /// `split_key`), and per-class counts are `test_size * n` only on average.
    Stable,
}

/// The hash below which a row goes to validation in stable mode.
fn stable_cut(test_size: f64) -> u64 {
    (test_size * 2f64.powi(64)).min(u64::MAX as f64) as u64
}

/// The second streaming pass over a class: only the rows in the boundary
/// bucket are kept (about `n / 4096` of them), then the exact threshold is
/// selected among them. What a part of the rows offered can be kept (as a
/// finished partition keeps it) and merged later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boundary {
    rows: u64,
    validation_rows: u64,
    /// The bucket holding the first train row, and that row's rank in it.
    bucket: Option<(usize, usize)>,
    members: Vec<(u64, u64)>,
    /// Stable mode: the fixed hash cut; the pass counts the rows below it.
    stable_cut: Option<u64>,
}

impl Boundary {
    pub fn offer(&mut self, membership_hash: u64, position: u64) {
        if let Some(cut) = self.stable_cut {
            self.validation_rows += u64::from(membership_hash < cut);
        } else if self.bucket.is_some_and(|(b, _)| b == bucket_of(membership_hash)) {
            self.members.push((membership_hash, position));
        }
    }

    /// Adds what another pass over other rows of the class collected.
    pub fn merge(&mut self, other: Boundary) {
        if self.stable_cut.is_some() {
            self.validation_rows += other.validation_rows;
        }
        self.members.extend(other.members);
    }

    pub fn finish(mut self) -> ClassSplit {
        if let Some(cut) = self.stable_cut {
            // A class that would leave train empty stays wholly in train, as in exact mode.
            let whole_class = self.validation_rows == self.rows;
            return ClassSplit {
                rows: self.rows,
                validation_rows: if whole_class { 0 } else { self.validation_rows },
                threshold: (!whole_class && self.validation_rows > 0).then_some((cut, 0)),
            };
        }
        let threshold = self.bucket.map(|(_, rank)| *self.members.select_nth_unstable(rank).1);
        ClassSplit { rows: self.rows, validation_rows: self.validation_rows, threshold }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_counts_match_sklearn() {
        // sklearn: n_test = ceil(test_size * n_samples)
        assert_eq!(validation_count(0.2, 310), 62);
        assert_eq!(validation_count(0.2, 63), 13);
        assert_eq!(validation_count(0.2, 5), 1);
        assert_eq!(validation_count(0.2, 1), 0);
        assert_eq!(validation_count(0.5, 2), 1);
        assert_eq!(validation_count(0.3, 10), 3);
        assert_eq!(validation_count(0.7, 10), 7);
    }

    /// Two streaming passes, as the runner makes them.
    fn streamed(members: &[(u64, u64)], test_size: f64) -> ClassSplit {
        let mut tally = ClassTally::default();
        members.iter().for_each(|&(h, _)| tally.add(h));
        let mut boundary = tally.boundary(test_size, SplitMode::Exact);
        members.iter().for_each(|&(h, p)| boundary.offer(h, p));
        boundary.finish()
    }

    #[test]
    fn streamed_selection_takes_exactly_the_smallest_hashes() {
        for (n, test_size, seed) in [(1000u64, 0.25, 7), (1, 0.2, 1), (2, 0.5, 3), (70_001, 0.2, 9), (10, 0.99, 4)] {
            let mut members: Vec<(u64, u64)> =
                (0..n).map(|p| (membership_hash(seed, RowKey::Position { file: "", row: p }), p)).collect();
            let split = streamed(&members, test_size);
            let expected = validation_count(test_size, n);
            let chosen = members.iter().filter(|&&(h, p)| split.is_validation(h, p)).count() as u64;
            assert_eq!(chosen, expected, "n {n}");
            // Exactly the `expected` smallest (hash, position) pairs.
            members.sort_unstable();
            for (rank, &(h, p)) in members.iter().enumerate() {
                assert_eq!(split.is_validation(h, p), (rank as u64) < expected, "n {n} rank {rank}");
            }
        }
    }

    #[test]
    fn kept_hashes_and_histogram_find_the_same_boundary() {
        let hashes: Vec<u64> =
            (0..3000u64).map(|p| membership_hash(11, RowKey::Position { file: "", row: p })).collect();
        let small = {
            let mut tally = ClassTally::default();
            hashes.iter().for_each(|&h| tally.add(h));
            tally
        };
        let mut dense = small.clone();
        dense.histogram();
        for test_size in [0.001, 0.2, 0.5, 0.999] {
            let (a, b) = (small.boundary(test_size, SplitMode::Exact), dense.boundary(test_size, SplitMode::Exact));
            assert_eq!((a.bucket, a.validation_rows), (b.bucket, b.validation_rows), "{test_size}");
        }
        // Merging parts of either kind keeps the count and the spread.
        let (mut merged, mut part) = (ClassTally::default(), ClassTally::default());
        hashes[..100].iter().for_each(|&h| part.add(h));
        merged.merge(&part);
        merged.merge(&dense);
        assert_eq!(merged.rows(), 3100);
        assert!(matches!(merged.spread, Spread::Histogram(_)));
    }

    #[test]
    fn ties_in_the_hash_break_by_position() {
        let members: Vec<(u64, u64)> = (0..10).map(|p| (42, p)).collect();
        let split = streamed(&members, 0.3);
        let chosen: Vec<u64> = members.iter().filter(|&&(h, p)| split.is_validation(h, p)).map(|&(_, p)| p).collect();
        assert_eq!(chosen, [0, 1, 2]);
    }

    #[test]
    fn stable_mode_cuts_the_hash_range() {
        let members: Vec<(u64, u64)> =
            (0..20_000u64).map(|p| (membership_hash(5, RowKey::Position { file: "", row: p }), p)).collect();
        let mut tally = ClassTally::default();
        members.iter().for_each(|&(h, _)| tally.add(h));
        let mut boundary = tally.boundary(0.2, SplitMode::Stable);
        members.iter().for_each(|&(h, p)| boundary.offer(h, p));
        let split = boundary.finish();
        let chosen = members.iter().filter(|&&(h, p)| split.is_validation(h, p)).count() as u64;
        assert_eq!(chosen, split.validation_rows);
        assert!((3700..4300).contains(&chosen), "{chosen}");
        for &(h, p) in &members {
            assert_eq!(split.is_validation(h, p), h < stable_cut(0.2));
        }
    }

    #[test]
    fn hashes_depend_on_seed_and_key_kind() {
        assert_ne!(
            membership_hash(1, RowKey::Position { file: "", row: 3 }),
            membership_hash(2, RowKey::Position { file: "", row: 3 })
        );
        assert_ne!(
            membership_hash(1, RowKey::Position { file: "", row: 3 }),
            order_hash(1, RowKey::Position { file: "", row: 3 })
        );
        assert_ne!(membership_hash(1, RowKey::Value("3")), membership_hash(1, RowKey::Position { file: "", row: 3 }));
    }

    #[test]
    fn single_row_class_stays_in_train() {
        let split = streamed(&[(5, 0)], 0.2);
        assert!(split.too_small());
        assert!(!split.is_validation(0, 0));
    }
}
