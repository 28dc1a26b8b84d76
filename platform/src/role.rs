//! What a user may do beyond chatting. Stored by user id in auth's database and carried
//! in access tokens, so every broker decides admin rights in memory; losing a role ends
//! the user's sessions (auth revokes them), which is what keeps that decision current.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A user's role, from most to least powerful.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everyone else.
    #[default]
    Member,
    /// Reads logs, deactivates members.
    Admin,
    /// Everything an admin does, and makes or unmakes admins and owners.
    Owner,
}

/// A role name that is not one of `owner`, `admin`, `member`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role: must be one of owner, admin, member")]
pub struct UnknownRole;

impl Role {
    /// The role's name, as stored and as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// Reads a role name (exact, lowercase).
    pub fn parse(name: &str) -> Result<Self, UnknownRole> {
        match name {
            "member" => Ok(Self::Member),
            "admin" => Ok(Self::Admin),
            "owner" => Ok(Self::Owner),
            _ => Err(UnknownRole),
        }
    }

    /// Whether the role carries administrator rights (admins and owners).
    pub fn is_admin(self) -> bool {
        self >= Self::Admin
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_back_their_own_names_and_nothing_else() {
        for role in [Role::Member, Role::Admin, Role::Owner] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        for bad in ["", "Owner", "root", "admin ", "superuser"] {
            assert_eq!(Role::parse(bad), Err(UnknownRole), "{bad:?}");
        }
    }

    #[test]
    fn only_admins_and_owners_are_administrators() {
        assert!(!Role::Member.is_admin());
        assert!(Role::Admin.is_admin());
        assert!(Role::Owner.is_admin());
    }
}
