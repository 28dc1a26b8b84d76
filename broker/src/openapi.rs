//! The OpenAPI 3.1 document of the broker's public API, generated from the handlers.
//!
//! The document is the contract clients are generated from, and `make faults` holds the
//! server to it (schemathesis with every check). Each route documents what is its own:
//! its success answers, the refusals only it makes, and its security. [`Contract`] then
//! adds to every operation the answers the shared extractors and layers give, so no
//! route can forget them:
//!
//! | status | when | added to |
//! |--------|------|----------|
//! | 400 | a parameter or body that does not fit its schema | operations with parameters or a body |
//! | 401 | no valid token or session cookie | operations with a required `security` |
//! | 403 | a cookie-authenticated write without the session's `X-CSRF-Token` | secured writes |
//! | 404 | the resource a path id names does not exist | operations with a path parameter |
//! | 413 | a body over `BROKER_MAX_BODY_BYTES` | operations with a body |
//! | 415 | a body not sent as `application/json` | operations with a body |
//! | 429 | over the route's rate limit (with `Retry-After`) | every operation |
//! | 502 | a service behind the broker failed | every operation |
//! | 503 | a service behind the broker is down, or the request outlived its deadline (a send, registration, login or token refresh the server is too loaded to serve in time: `overloaded`, with `Retry-After`) | every operation |
//!
//! Every one of these answers carries the JSON error body [`error::ErrorBody`].

use crate::{
    error,
    live::frames,
    routes::{
        account, admin, attachments, auth, chat, compat, handle, logs, message_actions,
        notifications, passwords, search,
    },
};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, HttpMethod, RefOr, Response, ResponseBuilder,
        path::Operation,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

/// Name of the bearer-token security scheme, for `security(...)` on a route.
pub const BEARER: &str = "bearer";
/// Name of the session-cookie security scheme, for `security(...)` on a route.
pub const SESSION_COOKIE: &str = "session_cookie";

#[derive(OpenApi)]
#[openapi(
    info(title = "microchat", description = "The public API of microchat, served by the broker."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout, auth::me, auth::users, account::delete_me,
        chat::rooms, chat::create_room, chat::join_room, chat::leave_room, chat::conversations,
        chat::open_direct, chat::history, chat::send, chat::mark_read, logs::logs,
        admin::users, admin::set_role, admin::deactivate, admin::reactivate,
        compat::list, compat::show, compat::send, handle::handle,
        passwords::change_password, passwords::forgot_password, passwords::reset_password,
        passwords::my_sessions, passwords::end_session, passwords::end_other_sessions,
        passwords::verify_email, passwords::resend_verification,
        message_actions::edit, message_actions::delete, message_actions::add_reaction,
        message_actions::remove_reaction, message_actions::reaction_emoji,
        notifications::list, notifications::mark_read, search::search,
        attachments::upload, attachments::download, attachments::thumbnail
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail, frames::MessageView, frames::PresenceView)),
    modifiers(&Contract),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "users", description = "Users and presence"),
        (name = "chat", description = "Rooms, direct conversations and messages"),
        (name = "attachments", description = "Files in conversations: uploads, downloads, thumbnails"),
        (name = "ops", description = "Logs and operations (administrators)"),
        (name = "admin", description = "Accounts, roles and deactivation (administrators; roles by owners)"),
        (name = "compat", description = "The older APIs microchat grew from, kept for their clients")
    )
)]
struct ApiDoc;

/// The document served at `/api/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// A schema written out as JSON, for what the derive cannot say (e.g. "exactly one of").
/// utoipa's model drops keywords it has no field for (e.g. `oneOf` beside `properties`:
/// compose with `allOf`); a test checks that every such schema survives whole.
pub fn schema(value: serde_json::Value) -> RefOr<openapi::schema::Schema> {
    serde_json::from_value(value).expect("a hand-written schema is a valid schema object")
}

/// Adds the security schemes, and to every operation the answers of the shared
/// extractors and layers (the table in the module docs).
struct Contract;

impl Modify for Contract {
    fn modify(&self, api: &mut openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The `token` of login or refresh."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::extract::SESSION_COOKIE,
                "The HttpOnly cookie login sets (writes also need `X-CSRF-Token`).",
            ))),
        );
        text_or_files(components);
        for (path, item) in &mut api.paths.paths {
            let has_path_id = path.contains('{');
            for (method, operation) in operations(item) {
                add_shared_answers(operation, &method, has_path_id);
            }
        }
    }
}

/// A message is text or files or both: `NewMessageBody`'s `body` may be empty only with
/// at least one of `attachment_ids` (the derive states each field alone).
fn text_or_files(components: &mut openapi::Components) {
    use openapi::schema::{AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
    let Some(fields) = components.schemas.remove("NewMessageBody") else {
        return;
    };
    let text = ObjectBuilder::new()
        .property(
            "body",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1)),
        )
        .required("body");
    let files = ObjectBuilder::new()
        .property(
            "attachment_ids",
            ArrayBuilder::new()
                .items(ObjectBuilder::new().schema_type(Type::String))
                .min_items(Some(1)),
        )
        .required("attachment_ids");
    let either = AnyOfBuilder::new().item(text).item(files);
    components.schemas.insert(
        "NewMessageBody".to_owned(),
        AllOfBuilder::new().item(fields).item(either).into(),
    );
}

/// The operations of a path, with their methods.
fn operations(item: &mut openapi::PathItem) -> Vec<(HttpMethod, &mut Operation)> {
    [
        (HttpMethod::Get, &mut item.get),
        (HttpMethod::Post, &mut item.post),
        (HttpMethod::Put, &mut item.put),
        (HttpMethod::Patch, &mut item.patch),
        (HttpMethod::Delete, &mut item.delete),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|operation| (method, operation)))
    .collect()
}

fn add_shared_answers(operation: &mut Operation, method: &HttpMethod, has_path_id: bool) {
    let has_body = operation.request_body.is_some();
    let has_input = has_body || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    // `security: [{}]` (or none) means anyone may call it.
    let secured = operation.security.as_ref().is_some_and(|requirements| {
        !requirements.is_empty()
            && !requirements
                .iter()
                .any(|requirement| requirement == &Default::default())
    });
    let writes = !matches!(method, HttpMethod::Get | HttpMethod::Head);
    let shared = [
        (has_input, "400", "The input does not fit its schema."),
        (secured, "401", "No valid bearer token or session cookie."),
        (
            secured && writes,
            "403",
            "A cookie-authenticated write without the session's X-CSRF-Token.",
        ),
        (has_path_id, "404", "Nothing has that id."),
        (
            has_body,
            "413",
            "The body is larger than the broker accepts.",
        ),
        (has_body, "415", "The body is not sent as application/json."),
        (
            true,
            "429",
            "Over the rate limit: retry after Retry-After seconds.",
        ),
        (true, "502", "A service behind the broker failed."),
        (
            true,
            "503",
            "A service behind the broker is unavailable, or the request took too long; `overloaded` (with Retry-After seconds): the server is too loaded to serve it in time, retry then.",
        ),
    ];
    for (applies, status, description) in shared {
        if applies && !operation.responses.responses.contains_key(status) {
            operation
                .responses
                .responses
                .insert(status.to_owned(), error_answer(description));
        }
    }
}

/// An answer carrying the JSON error body.
fn error_answer(description: &str) -> RefOr<Response> {
    let body = openapi::ContentBuilder::new()
        .schema(Some(RefOr::Ref(openapi::Ref::from_schema_name(
            "ErrorBody",
        ))))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", body)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> serde_json::Value {
        serde_json::to_value(document()).expect("the document serializes")
    }

    #[test]
    fn every_public_route_is_in_the_document() {
        let spec = spec();
        for (path, method) in [
            ("/api/auth/register", "post"),
            ("/api/conversations/{id}/messages", "post"),
            ("/apiv2/usersession/", "get"),
            ("/apiv2/usersession/{id}", "get"),
            ("/apiv2/usersession/{id}/message", "post"),
            ("/handle", "post"),
        ] {
            assert!(spec["paths"][path][method].is_object(), "{method} {path}");
        }
    }

    #[test]
    fn every_operation_documents_the_shared_refusals() {
        let spec = spec();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                let answers = operation["responses"].as_object().expect("responses");
                let has = |status: &str| answers.contains_key(status);
                let name = format!("{method} {path}");
                assert!(has("429") && has("503"), "{name}");
                if operation.get("requestBody").is_some() {
                    assert!(has("400") && has("413") && has("415"), "{name}");
                }
                if operation["security"].as_array().is_some_and(|s| {
                    s.iter()
                        .all(|r| r.as_object().is_some_and(|r| !r.is_empty()))
                }) {
                    assert!(has("401"), "{name}");
                }
                if path.contains('{') {
                    assert!(has("404"), "{name}");
                }
            }
        }
    }

    #[test]
    fn hand_written_schemas_are_served_whole() {
        use utoipa::PartialSchema;
        let served = |schema| serde_json::to_value(schema).expect("serializes");
        for (name, schema) in [
            ("LoginBody", served(auth::LoginBody::schema())),
            ("NewMessage", served(compat::NewMessage::schema())),
        ] {
            let alternatives = &schema["allOf"][1]["oneOf"];
            assert!(
                alternatives.as_array().is_some_and(|a| a.len() >= 2)
                    && alternatives[0]["required"].is_array(),
                "{name}: {schema}"
            );
        }
    }

    #[test]
    fn parameters_are_where_the_route_reads_them() {
        let spec = spec();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    let name = parameter["name"].as_str().expect("a name");
                    let placeholder = format!("{{{name}}}");
                    let in_path = parameter["in"] == "path";
                    assert_eq!(
                        in_path,
                        path.contains(&placeholder),
                        "{method} {path}: parameter {name} is documented in {}",
                        parameter["in"]
                    );
                    // A query parameter is absent or a value: "null" means nothing in a URL.
                    let types = &parameter["schema"]["type"];
                    assert!(
                        !types.as_array().is_some_and(|t| t.contains(&"null".into())),
                        "{method} {path}: {name} is nullable"
                    );
                }
            }
        }
    }
}
