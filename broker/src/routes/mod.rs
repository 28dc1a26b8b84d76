//! The broker's routes and the layers around them.

pub mod account;
pub mod admin;
pub mod attachments;
pub mod auth;
pub mod chat;
pub mod compat;
pub mod handle;
pub mod live;
pub mod logs;
pub mod message_actions;
pub mod notifications;
pub mod ops;
pub mod passwords;
pub mod search;

use crate::{AppState, middleware, rate_limit::Limiters};
use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, Method, header},
    middleware::{from_fn, from_fn_with_state},
    response::IntoResponse,
    routing::{delete, get, patch, post, put},
};
use tower_http::{catch_panic::CatchPanicLayer, cors::CorsLayer};

/// The whole HTTP application.
pub fn router(state: AppState, limiters: &Limiters) -> Router {
    let config = &state.config;
    let (strict, api) = (config.rate_limit_auth, config.rate_limit_api);
    let routes = Router::new()
        .route(
            "/api/auth/register",
            limiters.limit(strict, post(auth::register)),
        )
        .route(
            "/api/auth/login",
            limiters.limit_logins(&state.login_limit, post(auth::login)),
        )
        .route(
            "/api/auth/refresh",
            limiters.limit(strict, post(auth::refresh)),
        )
        .route("/api/auth/logout", limiters.limit(api, post(auth::logout)))
        .route("/api/auth/me", limiters.limit(api, get(auth::me)))
        .route("/api/users", limiters.limit(api, get(auth::users)))
        // Passwords, sessions and email verification (routes/passwords.rs).
        .route(
            "/api/auth/password",
            limiters.limit(strict, post(passwords::change_password)),
        )
        .route(
            "/api/auth/password/forgot",
            limiters.limit(strict, post(passwords::forgot_password)),
        )
        .route(
            "/api/auth/password/reset",
            limiters.limit(strict, post(passwords::reset_password)),
        )
        .route(
            "/api/auth/sessions",
            limiters.limit(api, get(passwords::my_sessions)),
        )
        .route(
            "/api/auth/sessions/end-others",
            limiters.limit(api, post(passwords::end_other_sessions)),
        )
        .route(
            "/api/auth/sessions/{id}",
            limiters.limit(api, delete(passwords::end_session)),
        )
        .route(
            "/api/auth/email/verify",
            limiters.limit(strict, post(passwords::verify_email)),
        )
        .route(
            "/api/auth/email/resend",
            limiters.limit(strict, post(passwords::resend_verification)),
        )
        .route(
            "/api/users/me",
            limiters.limit(strict, delete(account::delete_me)),
        )
        .route(
            "/api/rooms",
            limiters.limit(api, get(chat::rooms).post(chat::create_room)),
        )
        .route(
            "/api/rooms/{id}/join",
            limiters.limit(api, post(chat::join_room)),
        )
        .route(
            "/api/rooms/{id}/leave",
            limiters.limit(api, post(chat::leave_room)),
        )
        .route(
            "/api/conversations",
            limiters.limit(api, get(chat::conversations).post(chat::open_direct)),
        )
        .route(
            "/api/conversations/{id}/messages",
            limiters.limit(api, get(chat::history).post(chat::send)),
        )
        .route(
            "/api/conversations/{id}/read",
            limiters.limit(api, post(chat::mark_read)),
        )
        .route("/api/search", limiters.limit(api, get(search::search)))
        .route(
            "/api/notifications",
            limiters.limit(api, get(notifications::list)),
        )
        .route(
            "/api/notifications/read",
            limiters.limit(api, post(notifications::mark_read)),
        )
        .route(
            "/apiv2/usersession/",
            limiters.limit(api, get(compat::list)),
        )
        .route(
            "/apiv2/usersession/{id}",
            limiters.limit(api, get(compat::show)),
        )
        .route(
            "/apiv2/usersession/{id}/message",
            limiters.limit(api, post(compat::send)),
        )
        .route("/api/logs", limiters.limit(api, get(logs::logs)))
        .route("/api/admin/users", limiters.limit(api, get(admin::users)))
        .route(
            "/api/admin/users/{id}/role",
            limiters.limit(api, put(admin::set_role)),
        )
        .route(
            "/api/admin/users/{id}/deactivate",
            limiters.limit(api, post(admin::deactivate)),
        )
        .route(
            "/api/admin/users/{id}/reactivate",
            limiters.limit(api, post(admin::reactivate)),
        )
        // Its `auth` action draws on the login limit, like `/api/auth/login`.
        .route("/handle", limiters.limit(api, post(handle::handle)))
        .route("/ws", limiters.limit(api, get(live::json_socket)))
        .route(
            "/ws/rooms/{id}/text",
            limiters.limit(api, get(live::text_socket)),
        )
        // Edits, deletes, reactions (routes/message_actions.rs).
        .route(
            "/api/conversations/{id}/messages/{message_id}",
            limiters.limit(
                api,
                patch(message_actions::edit).delete(message_actions::delete),
            ),
        )
        .route(
            "/api/conversations/{id}/messages/{message_id}/reactions/{emoji}",
            limiters.limit(
                api,
                put(message_actions::add_reaction).delete(message_actions::remove_reaction),
            ),
        )
        .route(
            "/api/reactions",
            limiters.limit(api, get(message_actions::reaction_emoji)),
        )
        .route("/api/openapi.json", get(ops::openapi))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route_layer(from_fn(middleware::metrics))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed);
    // Files stream for longer than a request may take, and their size is chat's to
    // check (against `Content-Length` before the body is read, then on the bytes).
    let transfers = Router::new()
        .route(
            "/api/conversations/{id}/attachments",
            limiters.limit(api, post(attachments::upload)),
        )
        .route(
            "/api/attachments/{id}",
            limiters.limit(api, get(attachments::download)),
        )
        .route(
            "/api/attachments/{id}/thumbnail",
            limiters.limit(api, get(attachments::thumbnail)),
        )
        .route_layer(from_fn(middleware::metrics))
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .layer(from_fn_with_state(
            config.transfer_timeout,
            middleware::deadline,
        ));
    routes
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(from_fn_with_state(
            config.request_timeout,
            middleware::deadline,
        ))
        .merge(transfers)
        .layer(cors(&config.allowed_origins))
        .layer(from_fn(middleware::no_store))
        .layer(CatchPanicLayer::custom(|_| {
            crate::error::ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .into_response()
        }))
        .layer(from_fn_with_state(
            config.trust_forwarded_for,
            middleware::trace,
        ))
        .with_state(state)
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| origin.parse().ok())
        .collect();
    CorsLayer::new()
        .allow_origin(origins)
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static(crate::extract::CSRF_HEADER),
            HeaderName::from_static(platform::trace::TRACEPARENT),
        ])
        .expose_headers([header::RETRY_AFTER, middleware::TRACE_ID_HEADER.clone()])
}
