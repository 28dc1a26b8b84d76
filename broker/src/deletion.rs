//! Deleting an account is a saga over two services that must never leave an orphan:
//!
//! 1. auth marks the account (no more logins) and ends every session;
//! 2. chat deletes the user's private conversations, memberships and presence;
//! 3. auth deletes the account.
//!
//! Every step is idempotent and retried with backoff. If step 2 or 3 still fails, the
//! account stays marked (invisible, unusable) and a sweep in every broker finishes it
//! later; nothing is ever compensated by recreating data. Until step 3, chat data of a
//! marked account may still exist, but no one can use it, and it will go.

use crate::{AppState, error::ApiError};
use backon::{ExponentialBuilder, Retryable};
use platform::shutdown::Shutdown;
use proto::{auth::v1 as auth_pb, chat::v1 as chat_pb};
use std::time::Duration;
use uuid::Uuid;

/// How a deletion request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step is done.
    Done,
    /// The account is marked and unusable; the rest will finish in the background.
    Pending,
}

fn retries() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(3)
        .with_jitter()
}

/// Runs the saga for `user`. `Err` only when step 1 failed (nothing has changed).
pub async fn delete_account(state: &AppState, user: Uuid) -> Result<Outcome, ApiError> {
    let request = auth_pb::AccountDeletionRequest {
        user_id: user.to_string(),
    };
    let begin = || async {
        state
            .auth
            .clone()
            .begin_account_deletion(request.clone())
            .await
    };
    begin
        .retry(retries())
        .when(platform::grpc::is_unavailable)
        .await
        .map_err(|status| ApiError::from_grpc("auth", &status))?;
    match finish(state, user).await {
        Ok(()) => Ok(Outcome::Done),
        Err(status) => {
            tracing::warn!(user_id = %user, %status, "account deletion interrupted; the sweep will finish it");
            metrics::counter!("broker_account_deletions_pending_total").increment(1);
            Ok(Outcome::Pending)
        }
    }
}

/// Steps 2 and 3, for an account already marked.
async fn finish(state: &AppState, user: Uuid) -> Result<(), tonic::Status> {
    let data = chat_pb::DeleteUserDataRequest {
        user_id: user.to_string(),
    };
    let delete_data = || async { state.chat.clone().delete_user_data(data.clone()).await };
    delete_data
        .retry(retries())
        .when(platform::grpc::is_unavailable)
        .await?;
    let account = auth_pb::AccountDeletionRequest {
        user_id: user.to_string(),
    };
    let complete = || async {
        state
            .auth
            .clone()
            .complete_account_deletion(account.clone())
            .await
    };
    complete
        .retry(retries())
        .when(platform::grpc::is_unavailable)
        .await?;
    tracing::info!(user_id = %user, "account deleted everywhere");
    Ok(())
}

/// Finishes interrupted deletions every `every`, until shutdown.
pub async fn sweep(state: AppState, every: Duration, shutdown: Shutdown) {
    loop {
        if !platform::shutdown::pause(&shutdown, every).await {
            return;
        }
        let begun_before = chrono::Utc::now() - chrono::Duration::seconds(2);
        let request = auth_pb::ListPendingDeletionsRequest {
            begun_before: Some(prost_types::Timestamp {
                seconds: begun_before.timestamp(),
                nanos: 0,
            }),
            limit: 100,
        };
        let pending = match state.auth.clone().list_pending_deletions(request).await {
            Ok(answer) => answer.into_inner().user_ids,
            Err(status) => {
                tracing::debug!(%status, "cannot list pending account deletions");
                continue;
            }
        };
        for user in pending.iter().filter_map(|id| Uuid::try_parse(id).ok()) {
            if let Err(status) = finish(&state, user).await {
                tracing::warn!(user_id = %user, %status, "account deletion still cannot finish");
            }
        }
    }
}
