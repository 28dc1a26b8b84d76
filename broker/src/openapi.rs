//! The OpenAPI 3.1 document of the broker's public API, generated from the handlers.

use crate::{error, routes::auth};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "microchat", description = "The public API of microchat, served by the broker."),
    paths(auth::register, auth::login, auth::refresh, auth::logout, auth::me, auth::users),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    tags((name = "auth", description = "Accounts and sessions"), (name = "users", description = "Users"))
)]
struct ApiDoc;

/// The document served at `/api/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
