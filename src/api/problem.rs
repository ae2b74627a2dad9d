//! Errors as RFC 9457 `application/problem+json`, through one table.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, ErrorKind, InputLocation};
use crate::jobs::kind_slug;

/// The one table from error kind to HTTP status.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Malformed => StatusCode::BAD_REQUEST,
        ErrorKind::InvalidRequest => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::UnsupportedFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Cancelled => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An RFC 9457 problem, with the place in the request or input it is about.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:prepd:problem:{kind}`.
    #[serde(rename = "type")]
    #[schema(example = "urn:prepd:problem:invalid-input")]
    pub type_: String,
    #[schema(example = "Unprocessable Entity")]
    pub title: String,
    #[schema(example = 422)]
    pub status: u16,
    #[schema(example = "bad input at column 'tag': no such column; the input has ['id', 'title', 'description']")]
    pub detail: String,
    /// The request field at fault (`test_size`, `records[2].title`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The dataset file at fault, in a multi-file dataset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The input's 1-based data row at fault (the file's own row in a multi-file dataset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// The input's column at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

/// The error type handlers return.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(err: E) -> Self {
        ApiError(err.into())
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let err = self.0;
        let kind = err.kind();
        let status = status_of(kind);
        let (location, field) = match &err {
            Error::BadInput { location, .. } => (location.clone(), None),
            Error::InvalidField { field, .. } => (InputLocation::default(), Some(field.clone())),
            _ => (InputLocation::default(), None),
        };
        let detail = if kind == ErrorKind::Internal {
            tracing::error!(error = %err, "internal error");
            "an internal error occurred; it has been logged".to_string()
        } else {
            err.to_string()
        };
        let problem = Problem {
            type_: format!("urn:prepd:problem:{}", kind_slug(kind)),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            field,
            file: location.file,
            row: location.row,
            column: location.column,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if matches!(kind, ErrorKind::Overloaded | ErrorKind::Unavailable) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
