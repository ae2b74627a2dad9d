//! The OpenAPI document (also committed at `openapi/openapi.json`) and the
//! interactive page at `/docs`, served from the binary (works offline).

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "prepd",
        description = "Turns a labelled text dataset into model-ready training artifacts, and serves the same preprocessing for single records.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::jobs::submit,
        super::jobs::list,
        super::jobs::get,
        super::jobs::delete,
        super::jobs::list_artifacts,
        super::jobs::get_artifact,
        super::preprocess::preprocess,
        super::preprocess::baseline,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
    ),
    tags(
        (name = "jobs", description = "Turn a dataset into training artifacts"),
        (name = "preprocess", description = "The same preprocessing, one request at a time"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The document as committed: pretty JSON with a final newline.
pub fn document() -> String {
    let mut json = ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serialises");
    json.push('\n');
    json
}

/// `/docs` (Swagger UI) and `/openapi.json`.
pub fn docs() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
