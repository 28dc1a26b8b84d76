//! The gRPC face of passwords, sessions and email verification: translation only, the
//! rules live in `accounts/passwords.rs`.

use super::{AuthApi, client_of, parse_uuid};
use crate::EndedSessions;
use platform::grpc::timestamp;
use proto::auth::v1 as pb;
use tonic::{Request, Response, Status};

fn ended_message(ended: &EndedSessions) -> pb::EndedSessions {
    pb::EndedSessions {
        session_ids: ended.sessions.iter().map(ToString::to_string).collect(),
        forget_after: Some(super::epoch_timestamp(ended.forget_after)),
    }
}

type Answer<T> = Result<Response<T>, Status>;

impl AuthApi {
    pub(super) async fn change_password_call(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Answer<pb::EndedSessions> {
        let client = client_of(&request, request.get_ref().client.as_ref());
        let body = request.into_inner();
        let ended = self
            .accounts
            .change_password(
                &body.access_token,
                &body.old_password,
                &body.new_password,
                client,
            )
            .await?;
        Ok(Response::new(ended_message(&ended)))
    }

    pub(super) async fn request_password_reset_call(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Answer<pb::RequestPasswordResetResponse> {
        self.accounts
            .request_password_reset(&request.into_inner().email)
            .await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    pub(super) async fn reset_password_call(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Answer<pb::EndedSessions> {
        let client = client_of(&request, request.get_ref().client.as_ref());
        let body = request.into_inner();
        let ended = self
            .accounts
            .reset_password(&body.token, &body.new_password, client)
            .await?;
        Ok(Response::new(ended_message(&ended)))
    }

    pub(super) async fn list_sessions_call(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Answer<pb::ListSessionsResponse> {
        let user = parse_uuid("user_id", &request.into_inner().user_id)?;
        let sessions = self.accounts.sessions(user).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|record| pb::SessionInfo {
                    id: record.session.id.to_string(),
                    created_at: Some(timestamp(record.session.created_at)),
                    last_used_at: Some(timestamp(record.last_used_at)),
                    expires_at: Some(timestamp(record.session.expires_at)),
                    client: Some(pb::ClientInfo {
                        ip: record.client_ip,
                        user_agent: record.user_agent,
                    }),
                })
                .collect(),
        }))
    }

    pub(super) async fn end_session_call(
        &self,
        request: Request<pb::EndSessionRequest>,
    ) -> Answer<pb::EndedSessions> {
        let body = request.into_inner();
        let user = parse_uuid("user_id", &body.user_id)?;
        let session = parse_uuid("session_id", &body.session_id)?;
        let ended = self.accounts.end_session_of(user, session).await?;
        Ok(Response::new(ended_message(&ended)))
    }

    pub(super) async fn end_other_sessions_call(
        &self,
        request: Request<pb::EndOtherSessionsRequest>,
    ) -> Answer<pb::EndedSessions> {
        let body = request.into_inner();
        let user = parse_uuid("user_id", &body.user_id)?;
        let keep = parse_uuid("keep_session_id", &body.keep_session_id)?;
        let ended = self.accounts.end_other_sessions(user, keep).await?;
        Ok(Response::new(ended_message(&ended)))
    }

    pub(super) async fn verify_email_call(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Answer<pb::VerifyEmailResponse> {
        let user = self
            .accounts
            .verify_email(&request.into_inner().token)
            .await?;
        Ok(Response::new(pb::VerifyEmailResponse {
            user_id: user.id.to_string(),
            email: user.email,
        }))
    }

    pub(super) async fn resend_verification_call(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> Answer<pb::ResendVerificationResponse> {
        let user = parse_uuid("user_id", &request.into_inner().user_id)?;
        self.accounts.resend_verification(user).await?;
        Ok(Response::new(pb::ResendVerificationResponse {}))
    }

    pub(super) async fn get_email_status_call(
        &self,
        request: Request<pb::GetEmailStatusRequest>,
    ) -> Answer<pb::EmailStatus> {
        let user = parse_uuid("user_id", &request.into_inner().user_id)?;
        let account = self.accounts.user(user).await?;
        let verified = self.accounts.email_verified(user).await?;
        Ok(Response::new(pb::EmailStatus {
            email: account.email,
            verified,
        }))
    }
}
