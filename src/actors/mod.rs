//! Per-user actors: one `UserActor` per active user owns that user's state, so every
//! change to one user is serialized without a lock, and different users never contend.

mod backup;
mod command;
mod flusher;
mod registry;
mod services;
mod unflushed;
mod user;

pub use backup::BackupFeed;
pub use command::{CommandReply, LibraryError, UnexpectedReply, UserCommand};
pub use flusher::Flusher;
pub use registry::{ActorUnavailable, CallError, Registry, Tracked, UserHandoff};
pub use services::{ActorSettings, DirtyBudget, UserServices};
pub use unflushed::UnflushedMarker;
pub use user::UserActor;
