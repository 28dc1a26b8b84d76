//! Account types and the rules for what a valid one is. Constructors validate, so an
//! invalid username, email or password cannot exist past the gRPC edge. No I/O here.

use chrono::{DateTime, Utc};
pub use platform::role::Role;
use std::fmt;
use uuid::Uuid;

/// Why a value from a client was refused; `field` names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The offending field, as the API names it.
    pub field: &'static str,
    /// What a valid value looks like.
    pub reason: &'static str,
}

/// A username: 3–32 of `a-z 0-9 _ . -`, stored lowercase so uniqueness ignores case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Bounds of a username, in characters.
    pub const LEN: std::ops::RangeInclusive<usize> = 3..=32;

    /// Trims surrounding spaces, folds ASCII case, and checks length and alphabet.
    /// Anything outside ASCII is refused before folding, so look-alike letters
    /// (Cyrillic `а`, the Kelvin sign, full-width forms, zero-width joiners) never pass.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        const REASON: &str = "must be 3 to 32 characters of a-z, 0-9, '_', '.' and '-'";
        let invalid = Invalid {
            field: "username",
            reason: REASON,
        };
        let trimmed = raw.trim();
        if !Self::LEN.contains(&trimmed.len()) || !trimmed.is_ascii() {
            return Err(invalid);
        }
        let name = trimmed.to_ascii_lowercase();
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c);
        if !name.chars().all(allowed) {
            return Err(invalid);
        }
        Ok(Self(name))
    }

    /// The username as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, trimmed and lowercased, at most 254 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Longest address SMTP allows.
    pub const MAX_LEN: usize = 254;

    /// Checks the syntax (RFC 5322 addr-spec, no display name) and the length.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let invalid = Invalid {
            field: "email",
            reason: "must be an email address such as ada@example.com",
        };
        let trimmed = raw.trim();
        if trimmed.len() > Self::MAX_LEN {
            return Err(invalid);
        }
        // The stored (lowercase) form is what must be valid: lowercasing can change an
        // address (`İ` becomes `i` and a combining dot), and a stored address must parse
        // again as itself (found by the account_input fuzz target).
        let lower = trimmed.to_lowercase();
        if lower.len() > Self::MAX_LEN
            || lower.chars().any(|c| c.is_whitespace() || c.is_control())
            || !email_address::EmailAddress::is_valid(&lower)
            || lower.starts_with('"')
            || !Self::deliverable_domain(&lower)
        {
            return Err(invalid);
        }
        Ok(Self(lower))
    }

    /// Whether the part after the last `@` is a DNS name mail can be addressed to: at
    /// least two labels, none empty, and a top-level label that is not all digits. No IP
    /// literals (`[127.0.0.1]`), bare addresses (`127.0.0.1`) or single labels
    /// (`localhost`): mail to those goes nowhere a user reads.
    fn deliverable_domain(address: &str) -> bool {
        let Some((_, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let labels: Vec<&str> = domain.split('.').collect();
        labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()))
    }

    /// The address as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password as typed: 8–128 characters. Never logged (see its `Debug`).
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Bounds of a password, in characters.
    pub const LEN: std::ops::RangeInclusive<usize> = 8..=128;

    /// Checks the length only: any character is allowed.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        // Bytes first, so a megabyte of input is refused without counting characters.
        if raw.len() > Self::LEN.end() * 4 || !Self::LEN.contains(&raw.chars().count()) {
            return Err(Invalid {
                field: "password",
                reason: "must be 8 to 128 characters",
            });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The password itself, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// What a user logs in with: a username or an email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// Anything without `@`.
    Username(Username),
    /// Anything with `@`.
    Email(Email),
}

impl Login {
    /// Reads a login; `None` when it cannot name any account (it is then treated as an
    /// unknown user, with the same answer and timing as a wrong password).
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.contains('@') {
            Email::parse(raw).ok().map(Self::Email)
        } else {
            Username::parse(raw).ok().map(Self::Username)
        }
    }

    /// The throttling key of the account this login names.
    pub fn throttle_key(&self) -> String {
        match self {
            Self::Username(name) => format!("user:{}", name.as_str()),
            Self::Email(email) => format!("email:{}", email.as_str()),
        }
    }
}

/// A registered user, without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// UUIDv7.
    pub id: Uuid,
    /// Unique, lowercase.
    pub username: String,
    /// Unique, lowercase.
    pub email: String,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// What they may do beyond chatting.
    pub role: Role,
    /// When an administrator deactivated the account, if one did (logins are refused).
    pub deactivated_at: Option<DateTime<Utc>>,
}

/// A user with the password hash, for checking a login.
#[derive(Debug, Clone)]
pub struct Account {
    /// The user.
    pub user: User,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
}

/// A login session; its access tokens carry its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// UUIDv7.
    pub id: Uuid,
    /// The user it belongs to.
    pub user_id: Uuid,
    /// When the user logged in.
    pub created_at: DateTime<Utc>,
    /// When it ends unless refreshed.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked (logout, account deletion), if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Session {
    /// True while tokens of this session may be issued.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_folded_to_lowercase() {
        assert_eq!(
            Username::parse("  Ada.Lovelace_1 ").map(|u| u.0),
            Ok("ada.lovelace_1".to_owned())
        );
    }

    #[test]
    fn usernames_outside_the_alphabet_or_length_are_refused() {
        let kelvin = "\u{212A}elvin";
        let cyrillic_a = "\u{0430}dmin";
        let zero_width = "ad\u{200B}min";
        let rtl = "admin\u{202E}";
        let fullwidth = "\u{FF41}dmin";
        let too_long = "a".repeat(10_000);
        for bad in [
            "ab",
            "with space",
            "semi;colon",
            "",
            kelvin,
            cyrillic_a,
            zero_width,
            rtl,
            fullwidth,
            &too_long,
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(Username::parse(&"a".repeat(32)).is_ok());
        assert!(Username::parse(&"a".repeat(33)).is_err());
    }

    #[test]
    fn emails_are_checked_and_lowercased() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").map(|e| e.0),
            Ok("ada@example.com".to_owned())
        );
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "a b@example.com",
            "ada@exa mple.com",
            "\"q\"@example.com",
            "x@[127.0.0.1]",
            "x@[ipv6:::1]",
            "x@127.0.0.1",
            "x@localhost",
            "x@example.",
            "x@-example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
        // Whatever is accepted is stored in a form that parses again as itself, also
        // where lowercasing changes the text (the fuzzer's find: İ → i + U+0307).
        for raw in [
            "HeirrExdi@Example.\u{130}M",
            "\u{130}da@example.com",
            "ADA@EXAMPLE.COM",
        ] {
            if let Ok(email) = Email::parse(raw) {
                assert_eq!(Email::parse(email.as_str()), Ok(email.clone()), "{raw:?}");
            }
        }
    }

    #[test]
    fn passwords_are_bounded_in_characters() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("long enough").is_ok());
        assert!(Password::parse(&"é".repeat(128)).is_ok());
        assert!(Password::parse(&"é".repeat(129)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("secret123").ok()),
            "Some(Password(***))"
        );
    }

    #[test]
    fn logins_name_a_username_or_an_email() {
        assert!(matches!(Login::parse("Ada"), Some(Login::Username(_))));
        assert!(matches!(
            Login::parse("ada@example.com"),
            Some(Login::Email(_))
        ));
        assert_eq!(Login::parse("x"), None);
    }
}
