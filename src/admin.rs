//! `microchat admin …`: auth's administration commands (see [`auth::admin`]) on the
//! all-in-one's data directory.

pub use auth::admin::{AdminCommand, run};
