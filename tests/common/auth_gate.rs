//! A gRPC gate in front of auth: it forwards every call of the auth API to the real
//! service, but a test can make it refuse chosen methods with `UNAVAILABLE`, as a broker
//! sees auth when it cannot be reached. So one link can break while the others keep
//! working: a broker's revocation stream, or the last step of an account deletion.
//!
//! Only the auth API passes (not gRPC health checks), so a broker behind the gate reports
//! auth "unreachable" in `/readyz`; its other checks still say what they see.

use futures::{StreamExt, stream};
use platform::{
    grpc::TracedChannel,
    service_auth::{Service, ServiceKeys},
};
use proto::auth::v1::{self as pb, auth_client::AuthClient, auth_server};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};
use tokio::{sync::watch, task::JoinHandle};
use tonic::{Request, Response, Status, codegen::BoxStream, transport::server::TcpIncoming};

/// `WatchRevocations`: refusing it also ends every open revocation stream.
pub const WATCH_REVOCATIONS: &str = "WatchRevocations";
/// `VerifyToken`: the broker's per-request check while its stream is down.
pub const VERIFY_TOKEN: &str = "VerifyToken";
/// `CompleteAccountDeletion`: the last step of deleting an account.
pub const COMPLETE_ACCOUNT_DELETION: &str = "CompleteAccountDeletion";

/// The running gate; it stops when dropped.
pub struct AuthGate {
    /// The URL to give a broker instead of auth's.
    pub url: String,
    rules: Arc<Rules>,
    server: JoinHandle<()>,
}

/// What the gate does with each method, and what it has done.
#[derive(Default)]
struct Rules {
    methods: Mutex<HashMap<&'static str, Method>>,
    /// Bumped when open revocation streams must end.
    cuts: watch::Sender<u64>,
}

#[derive(Default)]
struct Method {
    refusing: bool,
    forwarded: usize,
    refused: usize,
}

impl Rules {
    fn method<T>(&self, name: &'static str, act: impl FnOnce(&mut Method) -> T) -> T {
        let mut methods = self
            .methods
            .lock()
            .expect("no test panics holding the gate");
        act(methods.entry(name).or_default())
    }

    /// Counts the call; `UNAVAILABLE` when the method is refused.
    fn pass(&self, name: &'static str) -> Result<(), Status> {
        self.method(name, |method| {
            if method.refusing {
                method.refused += 1;
                Err(Status::unavailable(format!("the test gate refuses {name}")))
            } else {
                method.forwarded += 1;
                Ok(())
            }
        })
    }
}

impl AuthGate {
    /// Listens on a free loopback port, forwarding to auth at `auth` as the broker (with
    /// its key in `keys`) would.
    pub fn start(auth: SocketAddr, keys: &ServiceKeys) -> Self {
        let channel = platform::testing::channel_as(
            keys,
            Service::Broker,
            Service::Auth,
            &format!("http://{auth}"),
        );
        let rules = Arc::new(Rules::default());
        let gate = Gate {
            auth: AuthClient::new(channel),
            rules: Arc::clone(&rules),
        };
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("an address"))
            .expect("a loopback port is free");
        let addr = incoming.local_addr().expect("bound");
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(auth_server::AuthServer::new(gate))
                .serve_with_incoming(incoming)
                .await
                .expect("the gate serves until it is dropped");
        });
        Self {
            url: format!("http://{addr}"),
            rules,
            server,
        }
    }

    /// Refuses `method` from now on; refusing `WatchRevocations` ends the open streams too.
    pub fn refuse(&self, method: &'static str) {
        self.rules.method(method, |method| method.refusing = true);
        if method == WATCH_REVOCATIONS {
            self.rules.cuts.send_modify(|cuts| *cuts += 1);
        }
    }

    /// Forwards `method` again.
    pub fn admit(&self, method: &'static str) {
        self.rules.method(method, |method| method.refusing = false);
    }

    /// How many calls of `method` reached auth.
    pub fn forwarded(&self, method: &'static str) -> usize {
        self.rules.method(method, |method| method.forwarded)
    }

    /// How many calls of `method` the gate refused.
    pub fn refused(&self, method: &'static str) -> usize {
        self.rules.method(method, |method| method.refused)
    }
}

impl Drop for AuthGate {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The auth API, forwarded to auth unless refused.
struct Gate {
    auth: AuthClient<TracedChannel>,
    rules: Arc<Rules>,
}

impl Gate {
    fn auth(&self) -> AuthClient<TracedChannel> {
        self.auth.clone()
    }
}

#[tonic::async_trait]
impl auth_server::Auth for Gate {
    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::AccountChangeResponse>, Status> {
        self.rules.pass("SetUserRole")?;
        self.auth().set_user_role(request).await
    }

    async fn set_user_active(
        &self,
        request: Request<pb::SetUserActiveRequest>,
    ) -> Result<Response<pb::AccountChangeResponse>, Status> {
        self.rules.pass("SetUserActive")?;
        self.auth().set_user_active(request).await
    }

    async fn confirm_password(
        &self,
        request: Request<pb::ConfirmPasswordRequest>,
    ) -> Result<Response<pb::ConfirmPasswordResponse>, Status> {
        self.rules.pass("ConfirmPassword")?;
        self.auth().confirm_password(request).await
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.rules.pass("Register")?;
        self.auth().register(request).await
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        self.rules.pass("Login")?;
        self.auth().login(request).await
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        self.rules.pass("Refresh")?;
        self.auth().refresh(request).await
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        self.rules.pass("Logout")?;
        self.auth().logout(request).await
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::VerifyTokenResponse>, Status> {
        self.rules.pass(VERIFY_TOKEN)?;
        self.auth().verify_token(request).await
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        self.rules.pass("GetUser")?;
        self.auth().get_user(request).await
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.rules.pass("ListUsers")?;
        self.auth().list_users(request).await
    }

    async fn begin_account_deletion(
        &self,
        request: Request<pb::AccountDeletionRequest>,
    ) -> Result<Response<pb::User>, Status> {
        self.rules.pass("BeginAccountDeletion")?;
        self.auth().begin_account_deletion(request).await
    }

    async fn complete_account_deletion(
        &self,
        request: Request<pb::AccountDeletionRequest>,
    ) -> Result<Response<pb::CompleteAccountDeletionResponse>, Status> {
        self.rules.pass(COMPLETE_ACCOUNT_DELETION)?;
        self.auth().complete_account_deletion(request).await
    }

    async fn list_pending_deletions(
        &self,
        request: Request<pb::ListPendingDeletionsRequest>,
    ) -> Result<Response<pb::ListPendingDeletionsResponse>, Status> {
        self.rules.pass("ListPendingDeletions")?;
        self.auth().list_pending_deletions(request).await
    }

    async fn get_public_keys(
        &self,
        request: Request<pb::GetPublicKeysRequest>,
    ) -> Result<Response<pb::GetPublicKeysResponse>, Status> {
        self.rules.pass("GetPublicKeys")?;
        self.auth().get_public_keys(request).await
    }

    // Passwords, sessions and email verification: forwarded like the rest.

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::EndedSessions>, Status> {
        self.rules.pass("ChangePassword")?;
        self.auth().change_password(request).await
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        self.rules.pass("RequestPasswordReset")?;
        self.auth().request_password_reset(request).await
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::EndedSessions>, Status> {
        self.rules.pass("ResetPassword")?;
        self.auth().reset_password(request).await
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.rules.pass("ListSessions")?;
        self.auth().list_sessions(request).await
    }

    async fn end_session(
        &self,
        request: Request<pb::EndSessionRequest>,
    ) -> Result<Response<pb::EndedSessions>, Status> {
        self.rules.pass("EndSession")?;
        self.auth().end_session(request).await
    }

    async fn end_other_sessions(
        &self,
        request: Request<pb::EndOtherSessionsRequest>,
    ) -> Result<Response<pb::EndedSessions>, Status> {
        self.rules.pass("EndOtherSessions")?;
        self.auth().end_other_sessions(request).await
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        self.rules.pass("VerifyEmail")?;
        self.auth().verify_email(request).await
    }

    async fn resend_verification(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> Result<Response<pb::ResendVerificationResponse>, Status> {
        self.rules.pass("ResendVerification")?;
        self.auth().resend_verification(request).await
    }

    async fn get_email_status(
        &self,
        request: Request<pb::GetEmailStatusRequest>,
    ) -> Result<Response<pb::EmailStatus>, Status> {
        self.rules.pass("GetEmailStatus")?;
        self.auth().get_email_status(request).await
    }

    type WatchRevocationsStream = BoxStream<pb::RevocationBatch>;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let mut cut = self.rules.cuts.subscribe();
        self.rules.pass(WATCH_REVOCATIONS)?;
        let batches = self.auth().watch_revocations(request).await?.into_inner();
        let cut = async move {
            let _ = cut.changed().await;
        };
        let ended = stream::once(async {
            Err(Status::unavailable(
                "the test gate cut the revocation stream",
            ))
        });
        Ok(Response::new(Box::pin(
            batches.take_until(cut).chain(ended),
        )))
    }
}
