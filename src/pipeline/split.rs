//! The stratified train/validation split, decided by keyed hashes instead of
//! a random stream, so that membership and order do not depend on how many
//! workers, batches or retries there were.
//!
//! Per class of `n` rows, `ceil(test_size * n)` rows go to validation, as
//! scikit-learn's `train_test_split` computes it per group. The validation
//! rows are the ones with the smallest membership hashes, ties broken by the
//! row's position. A class that would leave train empty goes wholly to train
//! and is reported.

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

/// The key that identifies a row for hashing: its position in the input, or
/// the value of the spec's `split_key` column.
#[derive(Debug, Clone, Copy)]
pub enum RowKey<'a> {
    Position(u64),
    Value(&'a str),
}

// Two fixed second halves of the SipHash key, so that the membership and
// order hashes of one row are independent.
const MEMBERSHIP_DOMAIN: u64 = 0x7072_6570_642d_7370; // "prepd-sp"
const ORDER_DOMAIN: u64 = 0x7072_6570_642d_6f72; // "prepd-or"

fn keyed_hash(seed: u64, domain: u64, key: RowKey<'_>) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(seed, domain);
    match key {
        RowKey::Position(position) => {
            hasher.write_u8(0);
            hasher.write(&position.to_le_bytes());
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
#[derive(Debug, Clone, Default)]
pub struct ClassSplit {
    pub rows: u64,
    pub validation_rows: u64,
    /// The `(hash, position)` of the first row that stays in train; `None`
    /// when the whole class stays in train.
    threshold: Option<(u64, u64)>,
}

impl ClassSplit {
    /// Fits the threshold from every `(membership hash, position)` of one class.
    pub fn fit(mut members: Vec<(u64, u64)>, test_size: f64) -> Self {
        let rows = members.len() as u64;
        let validation_rows = validation_count(test_size, rows);
        let threshold = (validation_rows > 0).then(|| {
            let (_, first_train, _) = members.select_nth_unstable(validation_rows as usize);
            *first_train
        });
        Self { rows, validation_rows, threshold }
    }

    pub fn is_validation(&self, membership_hash: u64, position: u64) -> bool {
        self.threshold.is_some_and(|t| (membership_hash, position) < t)
    }

    pub fn too_small(&self) -> bool {
        self.validation_rows == 0
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

    #[test]
    fn class_split_takes_exactly_the_count() {
        let members: Vec<(u64, u64)> = (0..1000u64).map(|p| (membership_hash(7, RowKey::Position(p)), p)).collect();
        let split = ClassSplit::fit(members.clone(), 0.25);
        let n_val = members.iter().filter(|&&(h, p)| split.is_validation(h, p)).count();
        assert_eq!(n_val, 250);
    }

    #[test]
    fn hashes_depend_on_seed_and_key_kind() {
        assert_ne!(membership_hash(1, RowKey::Position(3)), membership_hash(2, RowKey::Position(3)));
        assert_ne!(membership_hash(1, RowKey::Position(3)), order_hash(1, RowKey::Position(3)));
        assert_ne!(membership_hash(1, RowKey::Value("3")), membership_hash(1, RowKey::Position(3)));
    }

    #[test]
    fn single_row_class_stays_in_train() {
        let split = ClassSplit::fit(vec![(5, 0)], 0.2);
        assert!(split.too_small());
        assert!(!split.is_validation(0, 0));
    }
}
