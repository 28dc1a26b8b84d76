//! `/api/admin/*`: administrators manage accounts — list them with role and state, change
//! a role (owners only), deactivate or reactivate an account. Auth decides who may do
//! what, from the roles it stores by user id; the broker passes the verified caller's id
//! and closes the sockets of the sessions a change ended.

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{AdminUser, ApiJson, ApiPath, ApiQuery},
    live::frames::time,
};
use axum::extract::State;
use chrono::{DateTime, Utc};
use platform::role::Role;
use proto::auth::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A role, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    /// Manages roles and everything an admin does.
    Owner,
    /// Reads logs, deactivates members.
    Admin,
    /// Chats.
    Member,
}

impl From<Role> for RoleName {
    fn from(role: Role) -> Self {
        match role {
            Role::Owner => Self::Owner,
            Role::Admin => Self::Admin,
            Role::Member => Self::Member,
        }
    }
}

impl From<RoleName> for Role {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::Owner => Self::Owner,
            RoleName::Admin => Self::Admin,
            RoleName::Member => Self::Member,
        }
    }
}

/// An account as administrators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserView {
    id: String,
    username: String,
    email: String,
    role: RoleName,
    /// False while deactivated: the account cannot sign in; its name stays taken.
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<DateTime<Utc>>,
    /// When it was deactivated (absent while active).
    #[serde(skip_serializing_if = "Option::is_none")]
    deactivated_at: Option<DateTime<Utc>>,
}

/// Answer of `GET /api/admin/users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUsersView {
    users: Vec<AdminUserView>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Query of `GET /api/admin/users`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminUsersQuery {
    /// Page size, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[param(
        pattern = "^([\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[A-Za-z0-9_.-]{3,32}[\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*)?$"
    )]
    cursor: Option<String>,
}

/// `PUT /api/admin/users/{id}/role`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// The new role.
    role: RoleName,
}

fn admin_view(user: pb::User) -> AdminUserView {
    // An unknown name from auth gives no rights in the view either.
    let role = Role::parse(&user.role).unwrap_or_default();
    AdminUserView {
        created_at: time(user.created_at.as_ref()),
        deactivated_at: time(user.deactivated_at.as_ref()),
        active: user.deactivated_at.is_none(),
        role: role.into(),
        id: user.id,
        username: user.username,
        email: user.email,
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the shape `map_err` calls it with"
)]
fn from_auth(status: tonic::Status) -> ApiError {
    ApiError::from_grpc("auth", &status)
}

/// Closes, on this broker, the sockets of the sessions a change ended (other brokers hear
/// of them through auth's revocation stream), and answers with the account.
fn applied(
    state: &AppState,
    answer: pb::AccountChangeResponse,
) -> Result<ApiJson<AdminUserView>, ApiError> {
    for ended in &answer.ended {
        if let Ok(session) = Uuid::try_parse(&ended.session_id) {
            let forget_after = ended
                .forget_after
                .as_ref()
                .map_or(i64::MAX, |at| at.seconds);
            state.sessions.record_revoked(session, forget_after);
        }
    }
    let user = answer.user.ok_or_else(|| ApiError::unavailable("auth"))?;
    Ok(ApiJson(admin_view(user)))
}

/// Every account, in username order, with its role and state.
#[utoipa::path(get, path = "/api/admin/users", tag = "admin", security(("bearer" = []), ("session_cookie" = [])), params(AdminUsersQuery),
    responses((status = 200, body = AdminUsersView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn users(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(query): ApiQuery<AdminUsersQuery>,
) -> Result<ApiJson<AdminUsersView>, ApiError> {
    let page_size = query.limit.unwrap_or(50);
    if !(1..=100).contains(&page_size) {
        return Err(ApiError::bad_request(
            "invalid_argument",
            "limit: must be 1 to 100",
        ));
    }
    let answer = crate::routes::auth::users_page(&state, page_size, query.cursor).await?;
    Ok(ApiJson(AdminUsersView {
        users: answer.users.into_iter().map(admin_view).collect(),
        next_cursor: Some(answer.next_page_token).filter(|token| !token.is_empty()),
    }))
}

/// Give an account a role (owners only). Losing admin rights signs the account out
/// everywhere at once; a gained role applies from its next token. The last active owner
/// cannot be demoted (409).
#[utoipa::path(put, path = "/api/admin/users/{id}/role", tag = "admin", security(("bearer" = []), ("session_cookie" = [])), request_body = RoleBody,
    params(("id" = Uuid, Path, description = "The account's user id")),
    responses((status = 200, body = AdminUserView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn set_role(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiPath(user): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<ApiJson<AdminUserView>, ApiError> {
    let request = pb::SetUserRoleRequest {
        actor_id: admin.claims.sub.to_string(),
        user_id: user.to_string(),
        role: Role::from(body.role).as_str().to_owned(),
    };
    let answer = state
        .auth
        .clone()
        .set_user_role(request)
        .await
        .map_err(from_auth)?
        .into_inner();
    // Whoever was promoted uses the new role from their next request here (other
    // brokers remember the old answer for at most `recent::FRESH_FOR`).
    state.forget_recent_roles();
    applied(&state, answer)
}

/// Deactivate an account: its sessions end and its sockets close at once, sign-in is
/// refused, its name and messages stay. Admins deactivate members; owners anyone but
/// themselves.
#[utoipa::path(post, path = "/api/admin/users/{id}/deactivate", tag = "admin", security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = Uuid, Path, description = "The account's user id")),
    responses((status = 200, body = AdminUserView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn deactivate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiPath(user): ApiPath<Uuid>,
) -> Result<ApiJson<AdminUserView>, ApiError> {
    set_active(&state, &admin, user, false).await
}

/// Reactivate a deactivated account: it may sign in again.
#[utoipa::path(post, path = "/api/admin/users/{id}/reactivate", tag = "admin", security(("bearer" = []), ("session_cookie" = [])),
    params(("id" = Uuid, Path, description = "The account's user id")),
    responses((status = 200, body = AdminUserView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn reactivate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiPath(user): ApiPath<Uuid>,
) -> Result<ApiJson<AdminUserView>, ApiError> {
    set_active(&state, &admin, user, true).await
}

async fn set_active(
    state: &AppState,
    admin: &crate::extract::AuthUser,
    user: Uuid,
    active: bool,
) -> Result<ApiJson<AdminUserView>, ApiError> {
    let request = pb::SetUserActiveRequest {
        actor_id: admin.claims.sub.to_string(),
        user_id: user.to_string(),
        active,
    };
    let answer = state
        .auth
        .clone()
        .set_user_active(request)
        .await
        .map_err(from_auth)?
        .into_inner();
    applied(state, answer)
}
