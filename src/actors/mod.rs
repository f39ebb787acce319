//! Per-user actors: one `UserActor` per active user owns that user's state, so every
//! change to one user is serialized without a lock, and different users never contend.

mod flusher;
mod registry;
mod services;
mod user;

pub use flusher::Flusher;
pub use registry::{ActorSettings, ActorUnavailable, Registry, Tracked};
pub use services::{DirtyBudget, UserServices};
pub use user::{
    ClearProgress, EditWatchlist, EndStream, GetProgress, GetWatchlist, Heartbeat, LibraryError,
    ListStreams, SetProgress, UserActor,
};
