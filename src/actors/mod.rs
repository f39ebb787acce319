//! Per-user actors: one `UserActor` per active user owns that user's state, so every
//! change to one user is serialized without a lock, and different users never contend.

mod registry;
mod user;

pub use registry::{ActorSettings, ActorUnavailable, Registry};
pub use user::{EndStream, Heartbeat, ListStreams, UserActor};
