//! Administration commands run against auth's database directly (the data directory's
//! SQLite file, or `AUTH_DATABASE_URL`), for what must work before anyone can sign in —
//! naming the first admins of an install that has none, or recovering one whose owner
//! left. Both `microchat admin …` (the all-in-one) and `auth admin …` (the cluster's
//! image) run them.

use crate::{
    domain::{Role, User, Username},
    store::{StoreError, UserStore},
};
use anyhow::Context;
use std::path::Path;

/// The administration commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Gives an account a role (admin unless --role says otherwise). Taking rights away
    /// signs the account out everywhere at once, also while microchat runs.
    Grant {
        /// A username or a user id.
        #[arg(value_name = "USER")]
        user: String,
        /// The role to give.
        #[arg(long, value_name = "ROLE", default_value = "admin", value_parser = ["owner", "admin", "member"])]
        role: String,
    },
}

/// Runs `command` against the auth database of `auth` (in `data_dir` unless it names
/// another); returns what it did, in a sentence.
pub async fn run(
    auth: &crate::Config,
    data_dir: &Path,
    command: &AdminCommand,
) -> anyhow::Result<String> {
    let AdminCommand::Grant { user, role } = command;
    let role = Role::parse(role).map_err(|error| anyhow::anyhow!("{error}"))?;
    let store = crate::store::connect(&auth.database_url(data_dir))
        .await
        .context("opening the auth database")?;
    let account = find(&store, user).await?;
    let change = match store.change_role(account.id, role).await {
        Ok(Some(change)) => change,
        Ok(None) => anyhow::bail!("no account {user:?} (it may be being deleted)"),
        Err(StoreError::LastOwner) => anyhow::bail!(
            "{} is the last active owner: make another account owner first",
            account.username
        ),
        Err(error) => return Err(error).context("changing the role"),
    };
    let ended = crate::end_sessions_after(&store, &change, auth.access_token_ttl)
        .await
        .context("ending the account's sessions")?;
    let mut said = format!(
        "{} ({}) is now {} (was {})",
        change.user.username, change.user.id, change.user.role, change.previous_role
    );
    if !ended.is_empty() {
        said.push_str(&format!("; {} session(s) ended", ended.len()));
    }
    if change.user.deactivated_at.is_some() {
        said.push_str("; the account is deactivated");
    }
    Ok(said)
}

/// The account a username or a user id names.
async fn find(store: &UserStore, user: &str) -> anyhow::Result<User> {
    let found = if let Ok(id) = uuid::Uuid::try_parse(user.trim()) {
        store.user(id).await?
    } else {
        let name = Username::parse(user).map_err(|error| anyhow::anyhow!("{error}"))?;
        store
            .account_by_username(&name)
            .await?
            .map(|account| account.user)
    };
    found.ok_or_else(|| anyhow::anyhow!("no account {user:?}"))
}
