//! What every microchat service shares, and nothing service-specific: typed settings
//! helpers, telemetry, trace ids that cross gRPC, gRPC client helpers, token
//! verification and the revoked-session list, SQL connection set-up, log shipping to the
//! logger, and shutdown.
//!
//! Services never link each other's crates; they share `proto` and this crate.

pub mod batch;
pub mod credentials;
pub mod disposition;
pub mod events;
pub mod grpc;
pub mod logship;
pub mod process;
pub mod revocation;
pub mod role;
pub mod service_auth;
pub mod settings;
pub mod shutdown;
pub mod sql;
pub mod telemetry;
pub mod token;
pub mod trace;

#[cfg(feature = "testing")]
pub mod testing;
