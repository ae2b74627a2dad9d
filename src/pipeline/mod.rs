//! The domain: synchronous and free of HTTP. Spec, ingest, split, clean,
//! tokenize, the fitted preprocessor, artifact writers and the job runner.

pub mod artifacts;
pub mod clean;
pub mod clean_encode;
pub mod clean_text_wordpiece;
pub mod compression;
pub mod csv_fields;
pub mod csv_records;
pub mod in_order;
pub mod ingest;
mod one_pass;
pub mod parquet_part;
pub mod partitions;
pub mod preprocessor;
pub mod processed_row;
pub mod pyunicode;
pub mod runner;
pub mod sorted_runs;
pub mod spec;
pub mod split;
#[cfg(test)]
mod test_rng;
pub mod tokenize;
mod unicode_tables;
pub mod wordpiece_trainer;
mod write_stage;

/// Asks for the cache line at `data` ahead of its use, for scans whose
/// next reads the hardware cannot guess (scattered rows) or guesses late
/// (the start of every page).
#[inline]
fn prefetch<T>(data: *const T) {
    // SAFETY: a prefetch only hints the cache; it reads nothing and cannot
    // fault, whatever the address. SSE is part of every x86_64 target.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(data.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}
