//! Live delivery to sockets: the in-memory [`hub::Hub`], the per-broker [`feed`] from
//! chat, the wire [`frames`], each socket's [`outgoing`] queue, the per-user socket [`quota`],
//! and the per-[`socket`] loop.

pub mod feed;
pub mod frames;
pub mod hub;
pub mod outgoing;
pub mod quota;
pub mod socket;
