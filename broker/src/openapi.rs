//! The OpenAPI 3.1 document of the broker's public API, generated from the handlers.

use crate::{
    error,
    live::frames,
    routes::{account, auth, chat, logs, passwords},
};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "microchat", description = "The public API of microchat, served by the broker."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::me, auth::users, account::delete_me,
        chat::rooms, chat::create_room, chat::join_room, chat::leave_room, chat::conversations,
        chat::open_direct, chat::history, chat::send, chat::mark_read, logs::logs,
        passwords::change_password, passwords::forgot_password, passwords::reset_password,
        passwords::my_sessions, passwords::end_session, passwords::end_other_sessions,
        passwords::verify_email, passwords::resend_verification
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail, frames::MessageView, frames::PresenceView)),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "users", description = "Users and presence"),
        (name = "chat", description = "Rooms, direct conversations and messages"),
        (name = "ops", description = "Logs and operations (administrators)")
    )
)]
struct ApiDoc;

/// The document served at `/api/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
