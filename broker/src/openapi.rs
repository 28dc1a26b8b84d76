//! The OpenAPI 3.1 document of the broker's public API, generated from the handlers.

use crate::{
    error,
    live::frames,
    routes::{account, admin, auth, chat, logs},
};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "microchat", description = "The public API of microchat, served by the broker."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::me, auth::users, account::delete_me,
        chat::rooms, chat::create_room, chat::join_room, chat::leave_room, chat::conversations,
        chat::open_direct, chat::history, chat::send, chat::mark_read, logs::logs,
        admin::users, admin::set_role, admin::deactivate, admin::reactivate
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail, frames::MessageView, frames::PresenceView)),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "users", description = "Users and presence"),
        (name = "chat", description = "Rooms, direct conversations and messages"),
        (name = "ops", description = "Logs and operations (administrators)"),
        (name = "admin", description = "Accounts, roles and deactivation (administrators; roles by owners)")
    )
)]
struct ApiDoc;

/// The document served at `/api/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
