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
