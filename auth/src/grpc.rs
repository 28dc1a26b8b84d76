//! The tonic implementation of `microchat.auth.v1.Auth`: translates requests into
//! [`Accounts`] calls and [`AuthError`]s into gRPC statuses. No rules live here.

mod passwords;

use crate::{
    Accounts,
    accounts::{AuthError, Changed, Client, Issued},
    domain::{Role, Session, User},
    store::{StoreError, Taken},
};
use chrono::DateTime;
use platform::grpc::timestamp;
use platform::shutdown::Shutdown;
use proto::auth::v1::{self as pb, auth_server};
use std::{pin::Pin, sync::Arc};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// The gRPC face of auth.
#[derive(Clone)]
pub struct AuthApi {
    accounts: Arc<Accounts>,
    shutdown: Shutdown,
}

impl AuthApi {
    /// Serves `accounts`; revocation streams end when `shutdown` is cancelled.
    pub fn new(accounts: Arc<Accounts>, shutdown: Shutdown) -> Self {
        Self { accounts, shutdown }
    }
}

fn epoch_timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn user_message(user: User) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        username: user.username,
        email: user.email,
        created_at: Some(timestamp(user.created_at)),
        role: user.role.as_str().to_owned(),
        deactivated_at: user.deactivated_at.map(timestamp),
    }
}

fn session_message(session: &Session) -> pb::Session {
    pb::Session {
        id: session.id.to_string(),
        user_id: session.user_id.to_string(),
        created_at: Some(timestamp(session.created_at)),
        expires_at: Some(timestamp(session.expires_at)),
    }
}

fn issued_message(issued: Issued) -> pb::LoginResponse {
    pb::LoginResponse {
        access_token: issued.access_token,
        access_token_expires_at: Some(timestamp(issued.access_expires_at)),
        refresh_token: issued.refresh_token,
        session: Some(session_message(&issued.session)),
        user: Some(user_message(issued.user)),
        csrf_token: issued.csrf_token,
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match &error {
            AuthError::Invalid(_) => Status::invalid_argument(error.to_string()),
            AuthError::Taken(Taken::Username) => {
                Status::already_exists("username is already taken")
            }
            AuthError::Taken(Taken::Email) => Status::already_exists("email is already registered"),
            AuthError::BadCredentials | AuthError::Token(_) | AuthError::SessionEnded => {
                Status::unauthenticated(error.to_string())
            }
            AuthError::Throttled(retry_after) => {
                let mut status = Status::resource_exhausted(error.to_string());
                // Whole seconds, rounded up: a client that waits this long is let in.
                let seconds = retry_after
                    .as_secs()
                    .saturating_add(u64::from(retry_after.subsec_nanos() > 0))
                    .max(1)
                    .to_string();
                status.metadata_mut().insert(
                    "retry-after",
                    seconds.parse().expect("a decimal number is valid metadata"),
                );
                status
            }
            AuthError::Deactivated | AuthError::Forbidden(_) => {
                Status::permission_denied(error.to_string())
            }
            AuthError::Refused(_) | AuthError::Store(StoreError::LastOwner) => {
                Status::failed_precondition(error.to_string())
            }
            // BadLink: one answer for every token that opens nothing (wrong, used, expired,
            // another kind, malformed): the link is simply not there.
            AuthError::NotFound | AuthError::BadLink => Status::not_found(error.to_string()),
            AuthError::AlreadyVerified => Status::failed_precondition(error.to_string()),
            AuthError::Store(StoreError::Unavailable(_)) => {
                tracing::error!(%error, "database unavailable");
                Status::unavailable("the account database is unavailable")
            }
            AuthError::Store(_) => {
                tracing::error!(%error, "database failure");
                Status::internal("internal error")
            }
        }
    }
}

fn client_of<T>(request: &Request<T>, info: Option<&pb::ClientInfo>) -> Client {
    let ip = info
        .map(|info| info.ip.clone())
        .filter(|ip| !ip.is_empty())
        .or_else(|| request.remote_addr().map(|addr| addr.ip().to_string()))
        .unwrap_or_default();
    Client {
        ip,
        user_agent: info.map(|info| info.user_agent.clone()).unwrap_or_default(),
    }
}

fn parse_uuid(field: &'static str, text: &str) -> Result<Uuid, Status> {
    Uuid::try_parse(text).map_err(|_| Status::invalid_argument(format!("{field}: must be a UUID")))
}

fn change_message(changed: Changed) -> pb::AccountChangeResponse {
    pb::AccountChangeResponse {
        user: Some(user_message(changed.user)),
        ended: changed
            .ended
            .iter()
            .map(|entry| pb::RevokedSession {
                session_id: entry.session_id.to_string(),
                forget_after: Some(epoch_timestamp(entry.forget_after)),
            })
            .collect(),
    }
}

type RevocationStream = Pin<Box<dyn Stream<Item = Result<pb::RevocationBatch, Status>> + Send>>;

fn batch(snapshot: bool, entries: impl IntoIterator<Item = (Uuid, i64)>) -> pb::RevocationBatch {
    pb::RevocationBatch {
        snapshot,
        sessions: entries
            .into_iter()
            .map(|(id, forget_after)| pb::RevokedSession {
                session_id: id.to_string(),
                forget_after: Some(epoch_timestamp(forget_after)),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl auth_server::Auth for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let body = request.into_inner();
        let user = self
            .accounts
            .register(&body.username, &body.email, &body.password)
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user_message(user)),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = client_of(&request, request.get_ref().client.as_ref());
        let body = request.into_inner();
        let issued = self
            .accounts
            .login(&body.login, &body.password, client)
            .await?;
        Ok(Response::new(issued_message(issued)))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = client_of(&request, request.get_ref().client.as_ref());
        let issued = self
            .accounts
            .refresh(&request.get_ref().refresh_token, client)
            .await?;
        Ok(Response::new(issued_message(issued)))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let client = client_of(&request, request.get_ref().client.as_ref());
        let claims = self
            .accounts
            .logout(&request.get_ref().access_token, client)
            .await?;
        let session = pb::Session {
            id: claims.sid.to_string(),
            user_id: claims.sub.to_string(),
            created_at: None,
            expires_at: None,
        };
        Ok(Response::new(pb::LogoutResponse {
            session: Some(session),
        }))
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::VerifyTokenResponse>, Status> {
        let claims = self.accounts.verify(&request.into_inner().access_token)?;
        Ok(Response::new(pb::VerifyTokenResponse {
            user: Some(pb::User {
                id: claims.sub.to_string(),
                username: claims.name.clone(),
                email: claims.email.clone(),
                created_at: None,
                role: claims.role.as_str().to_owned(),
                deactivated_at: None,
            }),
            session: Some(pb::Session {
                id: claims.sid.to_string(),
                user_id: claims.sub.to_string(),
                created_at: None,
                expires_at: None,
            }),
            access_token_expires_at: Some(epoch_timestamp(claims.exp)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let id = parse_uuid("id", &request.into_inner().id)?;
        Ok(Response::new(user_message(self.accounts.user(id).await?)))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let body = request.into_inner();
        let (users, next_page_token) = self
            .accounts
            .list_users(body.page_size, &body.page_token)
            .await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(user_message).collect(),
            next_page_token,
        }))
    }

    async fn begin_account_deletion(
        &self,
        request: Request<pb::AccountDeletionRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let id = parse_uuid("user_id", &request.into_inner().user_id)?;
        let user = self.accounts.user(id).await;
        self.accounts.begin_deletion(id).await?;
        // Already marked earlier: the account is hidden, answer with the id alone.
        let user = user.map_or_else(
            |_| pb::User {
                id: id.to_string(),
                ..Default::default()
            },
            user_message,
        );
        Ok(Response::new(user))
    }

    async fn complete_account_deletion(
        &self,
        request: Request<pb::AccountDeletionRequest>,
    ) -> Result<Response<pb::CompleteAccountDeletionResponse>, Status> {
        let id = parse_uuid("user_id", &request.into_inner().user_id)?;
        let deleted = self.accounts.complete_deletion(id).await?;
        Ok(Response::new(pb::CompleteAccountDeletionResponse {
            deleted,
        }))
    }

    async fn list_pending_deletions(
        &self,
        request: Request<pb::ListPendingDeletionsRequest>,
    ) -> Result<Response<pb::ListPendingDeletionsResponse>, Status> {
        let body = request.into_inner();
        let before = body
            .begun_before
            .and_then(|at| {
                DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
            })
            .ok_or_else(|| Status::invalid_argument("begun_before: required"))?;
        let ids = self.accounts.pending_deletions(before, body.limit).await?;
        Ok(Response::new(pb::ListPendingDeletionsResponse {
            user_ids: ids.iter().map(Uuid::to_string).collect(),
        }))
    }

    async fn get_public_keys(
        &self,
        _request: Request<pb::GetPublicKeysRequest>,
    ) -> Result<Response<pb::GetPublicKeysResponse>, Status> {
        let keys = self.accounts.keys();
        Ok(Response::new(pb::GetPublicKeysResponse {
            keys: vec![pb::PublicKey {
                kid: keys.kid().to_owned(),
                alg: "EdDSA".to_owned(),
                x: keys.public_x().to_owned(),
            }],
        }))
    }

    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::AccountChangeResponse>, Status> {
        let body = request.into_inner();
        let actor = parse_uuid("actor_id", &body.actor_id)?;
        let user = parse_uuid("user_id", &body.user_id)?;
        let role =
            Role::parse(&body.role).map_err(|error| Status::invalid_argument(error.to_string()))?;
        let changed = self.accounts.change_role(actor, user, role).await?;
        Ok(Response::new(change_message(changed)))
    }

    async fn set_user_active(
        &self,
        request: Request<pb::SetUserActiveRequest>,
    ) -> Result<Response<pb::AccountChangeResponse>, Status> {
        let body = request.into_inner();
        let actor = parse_uuid("actor_id", &body.actor_id)?;
        let user = parse_uuid("user_id", &body.user_id)?;
        let changed = self.accounts.set_active(actor, user, body.active).await?;
        Ok(Response::new(change_message(changed)))
    }

    async fn confirm_password(
        &self,
        request: Request<pb::ConfirmPasswordRequest>,
    ) -> Result<Response<pb::ConfirmPasswordResponse>, Status> {
        let client = client_of(&request, request.get_ref().client.as_ref());
        let body = request.into_inner();
        let user = parse_uuid("user_id", &body.user_id)?;
        self.accounts
            .confirm_password(user, &body.password, client)
            .await?;
        Ok(Response::new(pb::ConfirmPasswordResponse {}))
    }

    // --- Passwords, sessions and email verification (grpc/passwords.rs) ---

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::EndedSessions>, Status> {
        self.change_password_call(request).await
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        self.request_password_reset_call(request).await
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::EndedSessions>, Status> {
        self.reset_password_call(request).await
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.list_sessions_call(request).await
    }

    async fn end_session(
        &self,
        request: Request<pb::EndSessionRequest>,
    ) -> Result<Response<pb::EndedSessions>, Status> {
        self.end_session_call(request).await
    }

    async fn end_other_sessions(
        &self,
        request: Request<pb::EndOtherSessionsRequest>,
    ) -> Result<Response<pb::EndedSessions>, Status> {
        self.end_other_sessions_call(request).await
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        self.verify_email_call(request).await
    }

    async fn resend_verification(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> Result<Response<pb::ResendVerificationResponse>, Status> {
        self.resend_verification_call(request).await
    }

    async fn get_email_status(
        &self,
        request: Request<pb::GetEmailStatusRequest>,
    ) -> Result<Response<pb::EmailStatus>, Status> {
        self.get_email_status_call(request).await
    }

    type WatchRevocationsStream = RevocationStream;

    async fn watch_revocations(
        &self,
        _request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let feed = Arc::clone(self.accounts.revocations());
        let shutdown = self.shutdown.clone();
        let (sender, receiver) = mpsc::channel(16);
        // Owned by the stream: it ends when the watcher goes away or on shutdown.
        tokio::spawn(async move {
            let (snapshot, mut updates) = feed.watch();
            if sender.send(Ok(batch(true, snapshot))).await.is_err() {
                return;
            }
            loop {
                let update = tokio::select! {
                    () = shutdown.cancelled() => return,
                    update = updates.recv() => update,
                };
                let message = match update {
                    Ok(entry) => batch(false, [entry]),
                    // Fell behind: start over from a fresh snapshot rather than miss one.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let (snapshot, fresh) = feed.watch();
                        updates = fresh;
                        batch(true, snapshot)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
