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

        /// The emoji a reaction may use, each in its canonical (fully qualified) spelling,
        /// in the order a picker shows them. Part of the contract: chat validates against
        /// it (`chat::domain::ReactionEmoji`), the broker states it in the OpenAPI document
        /// and serves it to the pages. Each is one code point, or one code point and the
        /// emoji variation selector U+FE0F; chat also accepts the spelling without the
        /// selector and stores the canonical one.
        pub const REACTION_EMOJI: &[&str] = &[
            "\u{1f44d}",        // thumbs up
            "\u{1f44e}",        // thumbs down
            "\u{1f600}",        // grinning face
            "\u{1f602}",        // tears of joy
            "\u{1f923}",        // rolling on the floor laughing
            "\u{1f605}",        // grinning with sweat
            "\u{1f60a}",        // smiling eyes
            "\u{1f609}",        // winking
            "\u{1f60d}",        // heart eyes
            "\u{1f970}",        // smiling with hearts
            "\u{1f60e}",        // sunglasses
            "\u{1f914}",        // thinking
            "\u{1f643}",        // upside down
            "\u{1f644}",        // rolling eyes
            "\u{1f62e}",        // open mouth
            "\u{1f62f}",        // hushed
            "\u{1f622}",        // crying
            "\u{1f62d}",        // sobbing
            "\u{1f621}",        // pouting
            "\u{1f631}",        // screaming in fear
            "\u{1f92f}",        // exploding head
            "\u{1f973}",        // partying face
            "\u{1f634}",        // sleeping
            "\u{1f917}",        // hugging
            "\u{1f937}",        // shrugging
            "\u{1f926}",        // facepalm
            "\u{1f64f}",        // folded hands
            "\u{1f44f}",        // clapping
            "\u{1f64c}",        // raising hands
            "\u{1f4aa}",        // flexed biceps
            "\u{1f44b}",        // waving
            "\u{1f44c}",        // OK hand
            "\u{270c}\u{fe0f}", // victory hand
            "\u{1f91d}",        // handshake
            "\u{1f440}",        // eyes
            "\u{2764}\u{fe0f}", // red heart
            "\u{1f494}",        // broken heart
            "\u{1f4af}",        // hundred points
            "\u{1f525}",        // fire
            "\u{2728}",         // sparkles
            "\u{2b50}",         // star
            "\u{1f389}",        // party popper
            "\u{1f38a}",        // confetti ball
            "\u{1f680}",        // rocket
            "\u{2705}",         // check mark button
            "\u{274c}",         // cross mark
            "\u{26a0}\u{fe0f}", // warning
            "\u{2753}",         // question mark
            "\u{2757}",         // exclamation mark
            "\u{1f4a1}",        // light bulb
            "\u{1f4cc}",        // pushpin
            "\u{1f41b}",        // bug
            "\u{1f355}",        // pizza
            "\u{2615}",         // hot beverage
            "\u{1f37b}",        // clinking beer mugs
            "\u{1f308}",        // rainbow
            "\u{2600}\u{fe0f}", // sun
        ];
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
