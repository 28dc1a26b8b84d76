//! The wire contracts between microchat services: gRPC services and their messages.
//!
//! Services never link each other's crates; this crate is the only thing they share
//! about each other.

/// The auth service: accounts, sessions and tokens.
pub mod auth {
    /// Version 1 of the auth API.
    pub mod v1 {
        tonic::include_proto!("microchat.auth.v1");
    }
}

/// The chat service: conversations, messages, presence, live events.
pub mod chat {
    /// Version 1 of the chat API.
    pub mod v1 {
        tonic::include_proto!("microchat.chat.v1");

        /// Most sends one `SendMessages` call may carry: 128 bodies of 4,000 characters
        /// stay well inside gRPC's 4 MB message limit.
        pub const MAX_SENDS_PER_CALL: usize = 128;
    }
}

/// Durable domain events: the envelope every producer writes to its outbox.
pub mod events {
    /// Version 1 of the event envelope.
    pub mod v1 {
        tonic::include_proto!("microchat.events.v1");
    }
}

/// The logger service: the structured log and audit store.
pub mod logger {
    /// Version 1 of the logger API.
    pub mod v1 {
        tonic::include_proto!("microchat.logger.v1");
    }
}

/// The mail service: templated mail.
pub mod mail {
    /// Version 1 of the mail API.
    pub mod v1 {
        tonic::include_proto!("microchat.mail.v1");
    }
}

/// Encoded `FileDescriptorSet` of every proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/microchat_descriptor.bin"));
