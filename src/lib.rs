//! prepd: turns a labelled text dataset into model-ready training artifacts,
//! and serves the very same preprocessing for single records.

pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod error;
pub mod jobs;
pub mod pipeline;
pub mod server;
pub mod store;

pub use error::{Error, ErrorKind, Result};
