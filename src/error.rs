//! prepd's one error type. Each error says what kind of failure it is; the
//! HTTP layer turns a kind into a status with one table (`api::problem`), and
//! the domain never needs to know that table exists.

use std::fmt;

use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in the input a problem is: a 1-based data row (the header is not
/// counted), a column, or both; in a multi-file dataset, the file too (the
/// row is then the file's own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InputLocation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

impl InputLocation {
    pub fn row(row: u64) -> Self {
        Self { row: Some(row), ..Self::default() }
    }
    pub fn column(column: impl Into<String>) -> Self {
        Self { column: Some(column.into()), ..Self::default() }
    }
    pub fn cell(row: u64, column: impl Into<String>) -> Self {
        Self { row: Some(row), column: Some(column.into()), ..Self::default() }
    }
}

/// " in file 'b.csv' at row 3, column 'tag'", or nothing when the whole input is at fault.
impl fmt::Display for InputLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, " in file '{file}'")?;
        }
        match (&self.row, &self.column) {
            (Some(row), Some(column)) => write!(f, " at row {row}, column '{column}'"),
            (Some(row), None) => write!(f, " at row {row}"),
            (None, Some(column)) => write!(f, " at column '{column}'"),
            (None, None) => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request body that cannot be parsed at all.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A request or job spec field is wrong.
    #[error("invalid field '{field}': {reason}")]
    InvalidField { field: String, reason: String },
    /// The dataset itself is wrong at some place.
    #[error("bad input{location}: {reason}")]
    BadInput { location: InputLocation, reason: String },
    #[error("unsupported format: {0}")]
    UnsupportedFormat(String),
    #[error("source not allowed: {uri}: {reason}")]
    SourceNotAllowed { uri: String, reason: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// The thing exists but is not in a state that allows the request.
    #[error("{0}")]
    Conflict(String),
    #[error("body larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("too many requests in flight; retry shortly")]
    Overloaded,
    #[error("the job was cancelled")]
    Cancelled,
    /// A dependency (store, remote source, tokenizer hub) failed or is unreachable.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Malformed,
    InvalidRequest,
    InvalidInput,
    UnsupportedFormat,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    Overloaded,
    Cancelled,
    Unavailable,
    Internal,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Malformed(_) => ErrorKind::Malformed,
            Error::InvalidField { .. } => ErrorKind::InvalidRequest,
            Error::BadInput { .. } => ErrorKind::InvalidInput,
            Error::UnsupportedFormat(_) => ErrorKind::UnsupportedFormat,
            Error::SourceNotAllowed { .. } => ErrorKind::Forbidden,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::Overloaded => ErrorKind::Overloaded,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    pub fn invalid_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidField { field: field.into(), reason: reason.into() }
    }

    pub fn bad_input(location: InputLocation, reason: impl Into<String>) -> Self {
        Error::BadInput { location, reason: reason.into() }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    pub fn internal(err: impl fmt::Display) -> Self {
        Error::Internal(err.to_string())
    }

    /// Names the dataset file a bad-input error is about.
    pub fn in_file(self, file: &str) -> Self {
        match self {
            Error::BadInput { mut location, reason } => {
                location.file = Some(file.to_string());
                Error::BadInput { location, reason }
            }
            other => other,
        }
    }
}

impl From<object_store::Error> for Error {
    fn from(err: object_store::Error) -> Self {
        match err {
            object_store::Error::NotFound { path, .. } => Error::not_found(format!("object '{path}'")),
            other => Error::Unavailable(format!("object store: {other}")),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        // Readers bridged from the store carry the store's error inside.
        match err.downcast::<Error>() {
            Ok(inner) => inner,
            Err(err) => Error::Internal(format!("i/o: {err}")),
        }
    }
}

impl From<polars::error::PolarsError> for Error {
    fn from(err: polars::error::PolarsError) -> Self {
        Error::Internal(format!("polars: {err}"))
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(err: tokio::task::JoinError) -> Self {
        Error::Internal(format!("task failed: {err}"))
    }
}
