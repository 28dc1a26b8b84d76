//! Service-to-service authentication: every gRPC call between microchat's services carries
//! a short-lived token that names its caller, signed with the caller's own Ed25519 key, and
//! every gRPC server accepts only callers whose public key it holds and only for the
//! methods [`policy`] grants them. A process on the network without a service key gets
//! `UNAUTHENTICATED`; a known service calling outside its grant gets `PERMISSION_DENIED`.
//! Health checks and server reflection stay open to operators (they reveal no data).
//!
//! Why tokens rather than mutual TLS, and how the keys are distributed, is in
//! docs/ARCHITECTURE.md ("Service-to-service authentication").
//!
//! - [`keys`]: the key directory (`<name>.key` for the services this process runs,
//!   `<name>.pub` for every service it trusts), generated for the all-in-one.
//! - [`token`]: minting tokens on the calling side ([`Credentials`], renewed before expiry).
//! - [`guard`]: checking them on the serving side, as a tower layer ([`Guard`]).
//! - [`policy`]: which service may call which method, in one table.

pub mod guard;
pub mod keys;
pub mod policy;
pub mod token;

pub use guard::{Caller, Guard};
pub use keys::{KeyError, KeysConfig, ServiceKeys};
pub use token::Credentials;

use std::{fmt, str::FromStr};

/// A microchat service that calls or serves gRPC: its name is its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// Accounts, sessions, tokens.
    Auth,
    /// Conversations, messages, presence.
    Chat,
    /// The public gateway: the only service that acts for a user.
    Broker,
    /// Structured logs and the audit trail.
    Logger,
    /// Templated mail.
    Mail,
    /// The event consumer: welcome and sign-out mails, chat sessions, audits.
    Listener,
}

impl Service {
    /// Every service, in a fixed order.
    pub const ALL: [Service; 6] = [
        Service::Auth,
        Service::Chat,
        Service::Broker,
        Service::Logger,
        Service::Mail,
        Service::Listener,
    ];

    /// The service's name: its key files' stem and the `iss`/`aud` of its tokens.
    pub const fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Chat => "chat",
            Service::Broker => "broker",
            Service::Logger => "logger",
            Service::Mail => "mail",
            Service::Listener => "listener",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = ();

    fn from_str(name: &str) -> Result<Self, ()> {
        Service::ALL
            .into_iter()
            .find(|service| service.name() == name)
            .ok_or(())
    }
}
