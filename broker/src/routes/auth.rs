//! `/api/auth/*` and `/api/users`: accounts and sessions, served by the auth service.

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{
        ApiBytes, ApiJson, ApiQuery, AuthUser, Credential, REFRESH_COOKIE, SESSION_COOKIE,
        check_origin, cookie, require_json,
    },
    live::frames::time,
    middleware::ClientAddr,
};
use axum::{
    Extension,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use cookie::{Cookie, SameSite};
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `POST /api/auth/register` (no `Debug`: it holds a password).
#[derive(Deserialize, ToSchema)]
pub struct RegisterBody {
    /// 3–32 of a-z, 0-9, `_`, `.`, `-` (case is folded; spaces around are dropped).
    #[schema(
        pattern = "^[\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[A-Za-z0-9_.-]{3,32}[\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    username: String,
    /// An email address (it is stored lowercase).
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8–128 characters, any of them.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
}

/// `POST /api/auth/login`: `login` may also be sent as `username` or `email` (no
/// `Debug`: it holds a password). Its schema is written out in [`login_body_schema`]:
/// the derived one could not say "exactly one of the three names".
#[derive(Deserialize)]
pub struct LoginBody {
    /// A username or an email address.
    #[serde(alias = "username", alias = "email")]
    login: String,
    /// The password.
    password: String,
}

impl utoipa::PartialSchema for LoginBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        login_body_schema()
    }
}

impl ToSchema for LoginBody {}

/// The schema of [`LoginBody`]: a password and the login under exactly one of its names.
fn login_body_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let login =
        serde_json::json!({ "type": "string", "description": "A username or an email address." });
    crate::openapi::schema(serde_json::json!({
        "description": "A login (under exactly one of three names) and a password.",
        "allOf": [
            {
                "type": "object",
                "properties": {
                    "login": login,
                    "username": login,
                    "email": login,
                    "password": { "type": "string", "description": "The password." }
                },
                "required": ["password"]
            },
            // Exactly one subschema holds: exactly one of the names is sent.
            { "oneOf": [
                { "type": "object", "required": ["login"] },
                { "type": "object", "required": ["username"] },
                { "type": "object", "required": ["email"] }
            ] }
        ]
    }))
}

/// `POST /api/auth/refresh`: the refresh token, unless the refresh cookie carries it.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RefreshBody {
    /// As returned by login or the previous refresh.
    refresh_token: Option<String>,
}

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    id: String,
    username: String,
    email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<DateTime<Utc>>,
    /// Whether the address is verified (in `/api/auth/me`; absent when auth cannot say).
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
}

/// Another user, as everyone may see them.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicUserView {
    id: String,
    username: String,
    /// Whether they have a socket open (absent when chat cannot say).
    #[serde(skip_serializing_if = "Option::is_none")]
    online: Option<bool>,
    /// Online since, or last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<DateTime<Utc>>,
}

/// Answer of register.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredView {
    user: UserView,
}

/// A session as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
}

/// Answer of login and refresh.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginView {
    /// The access token, for `Authorization: Bearer` (also set as an HttpOnly cookie).
    token: String,
    token_expires_at: Option<DateTime<Utc>>,
    /// Trade it at `/api/auth/refresh` for the next token (also set as a cookie).
    refresh_token: String,
    /// Send it as `X-CSRF-Token` on cookie-authenticated writes.
    csrf_token: String,
    user: UserView,
    session: SessionView,
}

/// Answer of `GET /api/auth/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    user: UserView,
    /// What the caller may do beyond chatting.
    role: crate::routes::admin::RoleName,
    session: SessionView,
    /// Whether the caller is an administrator (reads logs; the dev mailbox asks this).
    is_admin: bool,
    /// For cookie-authenticated callers: send it as `X-CSRF-Token` on writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf_token: Option<String>,
}

/// Query of `GET /api/users`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// `true`: only the users online now (all of them, no paging).
    online: Option<bool>,
    /// Page size, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[param(
        pattern = "^([\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[A-Za-z0-9_.-]{3,32}[\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*)?$"
    )]
    cursor: Option<String>,
}

/// Answer of `GET /api/users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsersView {
    users: Vec<PublicUserView>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Whether `cursor` can be a `next_cursor` of `GET /api/users`: empty (the first page), or
/// a username as auth reads one (spaces around, 3–32 of a-z, A-Z, 0-9, `_`, `.`, `-`).
fn is_username_cursor(cursor: &str) -> bool {
    let name = cursor.trim();
    cursor.is_empty()
        || ((3..=32).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)))
}

fn user_view(user: pb::User) -> UserView {
    UserView {
        created_at: time(user.created_at.as_ref()),
        id: user.id,
        username: user.username,
        email: user.email,
        email_verified: None,
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the shape `map_err` calls it with"
)]
fn from_auth(status: tonic::Status) -> ApiError {
    ApiError::from_grpc("auth", &status)
}

/// The client a session is opened from, as auth records it.
pub(crate) fn client_info(client: ClientAddr, headers: &HeaderMap) -> pb::ClientInfo {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    pb::ClientInfo {
        ip: client.0.to_string(),
        user_agent: user_agent.chars().take(256).collect(),
    }
}

fn set_cookie(response: &mut Response, cookie: &Cookie<'_>) {
    let value = HeaderValue::from_str(&cookie.to_string())
        .expect("cookie names and token values are header-safe");
    response.headers_mut().append(header::SET_COOKIE, value);
}

fn session_cookies(
    state: &AppState,
    view: &LoginView,
    session_expires_at: Option<DateTime<Utc>>,
) -> [Cookie<'static>; 2] {
    let now = Utc::now();
    let seconds_until =
        |at: Option<DateTime<Utc>>| at.map_or(0, |at| (at - now).num_seconds().max(0));
    let access = Cookie::build((SESSION_COOKIE, view.token.clone()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.cookie_secure)
        .path("/")
        .max_age(cookie::time::Duration::seconds(seconds_until(
            view.token_expires_at,
        )))
        .build();
    let refresh = Cookie::build((REFRESH_COOKIE, view.refresh_token.clone()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.cookie_secure)
        .path("/api/auth")
        .max_age(cookie::time::Duration::seconds(seconds_until(
            session_expires_at,
        )))
        .build();
    [access, refresh]
}

fn logged_in(state: &AppState, answer: pb::LoginResponse) -> Result<Response, ApiError> {
    let (user, session) = answer.user.zip(answer.session).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "the auth service answered without a session",
        )
    })?;
    let session_expires_at = time(session.expires_at.as_ref());
    let view = LoginView {
        token: answer.access_token,
        token_expires_at: time(answer.access_token_expires_at.as_ref()),
        refresh_token: answer.refresh_token,
        csrf_token: answer.csrf_token,
        user: user_view(user),
        session: SessionView {
            id: session.id,
            expires_at: session_expires_at,
        },
    };
    let cookies = session_cookies(state, &view, session_expires_at);
    let mut response = ApiJson(view).into_response();
    for cookie in &cookies {
        set_cookie(&mut response, cookie);
    }
    Ok(response)
}

/// Create an account.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterBody,
    responses((status = 201, description = "Registered.", body = RegisteredView),
        (status = 403, description = "Sent from a page of another origin.", body = ErrorBody),
        (status = 409, description = "The username or email is taken.", body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<impl IntoResponse, ApiError> {
    check_origin(&state, &headers)?;
    let request = pb::RegisterRequest {
        username: body.username,
        email: body.email,
        password: body.password,
    };
    let answer = through_sign_in_gate(&state, state.auth.clone().register(request))
        .await?
        .map_err(from_auth)?
        .into_inner();
    let user = answer.user.ok_or_else(|| ApiError::unavailable("auth"))?;
    Ok((
        StatusCode::CREATED,
        ApiJson(RegisteredView {
            user: user_view(user),
        }),
    ))
}

/// Runs `call`, a sign-in's call to auth, through the broker's sign-in gate: refused at
/// once as `overloaded` with a retry hint when auth cannot serve it in time
/// ([`crate::admission`]; in a login storm the sign-ins queue no longer than the target,
/// the others come back later, and none of them waits out the deadline), else auth's
/// answer. The sign-in's place is given back when auth answered, and counts towards
/// auth's measured rate unless the call failed for want of auth.
pub(crate) async fn through_sign_in_gate<T>(
    state: &AppState,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<Result<T, tonic::Status>, ApiError> {
    let ticket = state
        .sign_ins
        .admit(std::time::Instant::now())
        .map_err(|refusal| {
            metrics::counter!("broker_sign_ins_refused_total", "reason" => refusal.reason)
                .increment(1);
            ApiError::sign_in_overloaded(refusal.retry_after)
        })?;
    let answer = call.await;
    let gone = answer.as_ref().is_err_and(|status| {
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        )
    });
    if !gone {
        ticket.finished();
    }
    Ok(answer)
}

/// Why auth refused a login: a deactivated account (told only after the right
/// password) gets its own code, so pages can say so.
fn login_refused(status: tonic::Status) -> ApiError {
    if status.code() == tonic::Code::PermissionDenied {
        return ApiError::forbidden("account_deactivated", status.message().to_owned());
    }
    from_auth(status)
}

/// Log in with a username or email and a password.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, description = "Logged in; the tokens are also set as cookies.", body = LoginView),
        (status = 401, description = "Wrong login or password.", body = ErrorBody),
        (status = 403, description = "Sent from a page of another origin, or `account_deactivated`: an administrator deactivated the account.", body = ErrorBody),
        (status = 429, description = "Too many logins from this client, or failed logins at this account (docs/SECURITY.md, login throttling)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait")))))]
pub async fn login(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    let request = pb::LoginRequest {
        login: body.login,
        password: body.password,
        client: Some(client_info(client, &headers)),
    };
    let answer = through_sign_in_gate(&state, state.auth.clone().login(request))
        .await?
        .map_err(login_refused)?
        .into_inner();
    logged_in(&state, answer)
}

/// Trade a refresh token (body or cookie) for a new access token.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    request_body(content = RefreshBody, description = "Optional: without it, the refresh cookie is used."),
    responses((status = 200, description = "The next tokens; also set as cookies.", body = LoginView),
        (status = 401, description = "No refresh token, or not a live one.", body = ErrorBody),
        (status = 403, description = "Sent from a page of another origin.", body = ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    let body: RefreshBody = if body.iter().all(u8::is_ascii_whitespace) {
        RefreshBody::default()
    } else {
        require_json(&headers)?;
        serde_json::from_slice(&body)
            .map_err(|error| ApiError::bad_request("invalid_body", error.to_string()))?
    };
    let token = body
        .refresh_token
        .or_else(|| cookie(&headers, REFRESH_COOKIE).map(str::to_owned))
        .ok_or_else(|| ApiError::unauthorized("no refresh token"))?;
    let request = pb::RefreshRequest {
        refresh_token: token,
        client: Some(client_info(client, &headers)),
    };
    let answer = through_sign_in_gate(&state, state.auth.clone().refresh(request))
        .await?
        .map_err(from_auth)?
        .into_inner();
    logged_in(&state, answer)
}

/// End the caller's session everywhere, at once.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 204, description = "Logged out; the session cookies are removed.")))]
pub async fn logout(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    caller: AuthUser,
) -> Result<Response, ApiError> {
    let request = pb::LogoutRequest {
        access_token: caller.token,
        client: Some(client_info(client, &headers)),
    };
    state
        .auth
        .clone()
        .logout(request)
        .await
        .map_err(from_auth)?;
    state
        .sessions
        .record_revoked(caller.claims.sid, caller.claims.exp + 1);
    let mut response = StatusCode::NO_CONTENT.into_response();
    crate::routes::account::clear_session_cookies(&mut response);
    Ok(response)
}

/// The caller.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "The caller, their role and their session.", body = MeView)))]
pub async fn me(State(state): State<AppState>, caller: AuthUser) -> ApiJson<MeView> {
    let claims = &caller.claims;
    let role = state.current_role(claims).await;
    let email_verified = crate::routes::passwords::email_verified(&state, claims.sub).await;
    ApiJson(MeView {
        is_admin: role.is_admin(),
        user: UserView {
            id: claims.sub.to_string(),
            username: claims.name.clone(),
            email: claims.email.clone(),
            created_at: None,
            email_verified,
        },
        role: role.into(),
        session: SessionView {
            id: claims.sid.to_string(),
            expires_at: DateTime::from_timestamp(claims.exp, 0),
        },
        csrf_token: (caller.credential == Credential::Cookie).then(|| claims.csrf.clone()),
    })
}

/// Users in username order, a page at a time, with presence; or everyone online.
#[utoipa::path(get, path = "/api/users", tag = "users", params(UsersQuery), security(("bearer" = []), ("session_cookie" = [])),
    responses((status = 200, description = "A page of users.", body = UsersView)))]
pub async fn users(
    State(state): State<AppState>,
    _caller: AuthUser,
    ApiQuery(query): ApiQuery<UsersQuery>,
) -> Result<ApiJson<UsersView>, ApiError> {
    let page_size = query.limit.unwrap_or(50);
    if !(1..=100).contains(&page_size) {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "limit: must be 1 to 100",
        ));
    }
    // Checked even when `online` makes it unused: a malformed query is refused alike.
    if let Some(cursor) = &query.cursor
        && !is_username_cursor(cursor)
    {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "cursor: must be the next_cursor of an earlier page",
        ));
    }
    if query.online == Some(true) {
        let online = crate::routes::chat::online_users(&state).await?;
        let users = online
            .into_iter()
            .map(|presence| PublicUserView {
                id: presence.user_id,
                username: presence.username,
                online: Some(presence.online),
                since: presence.since,
            })
            .collect();
        return Ok(ApiJson(UsersView {
            users,
            next_cursor: None,
        }));
    }
    let answer = users_page(&state, page_size, query.cursor).await?;
    let ids = answer.users.iter().map(|user| user.id.clone()).collect();
    // Presence is a nicety here: without chat, the list still answers.
    let presence = crate::routes::chat::presence_of(&state, ids).await.ok();
    let users = answer
        .users
        .into_iter()
        .map(|user| {
            let seen = presence
                .as_ref()
                .map(|all| all.iter().find(|p| p.user_id == user.id));
            PublicUserView {
                online: seen.map(|p| p.is_some_and(|p| p.online)),
                since: seen.flatten().and_then(|p| time(p.since.as_ref())),
                id: user.id,
                username: user.username,
            }
        })
        .collect();
    Ok(ApiJson(UsersView {
        users,
        next_cursor: Some(answer.next_page_token).filter(|token| !token.is_empty()),
    }))
}

/// One page of accounts from auth, in username order, after `cursor`.
pub(crate) async fn users_page(
    state: &AppState,
    page_size: u32,
    cursor: Option<String>,
) -> Result<pb::ListUsersResponse, ApiError> {
    let request = pb::ListUsersRequest {
        page_size,
        page_token: cursor.unwrap_or_default(),
    };
    Ok(state
        .auth
        .clone()
        .list_users(request)
        .await
        .map_err(from_auth)?
        .into_inner())
}
