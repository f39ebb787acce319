//! Everything `Users` can ask of a user's actor, as data: one enum in, one enum out. Being
//! data is what lets a node that does not own a user forward the very same command to the
//! node that does (serialized), and what gives the actor a single way in.

use serde::{Deserialize, Serialize};

use crate::domain::{
    Accepted, AssetId, LimitReached, Origin, Seconds, SessionId, Slot, SlotRequest, Timestamp,
};
use crate::store::StoreError;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum UserCommand {
    /// Take or renew a slot.
    Heartbeat(SlotRequest),
    /// Free a slot.
    EndStream { origin: Origin, session: SessionId },
    /// The live slots, oldest first.
    ListStreams,
    /// Progress of one asset, or of all (`None`).
    GetProgress(Option<AssetId>),
    /// Record progress (write-behind).
    SetProgress { asset: AssetId, seconds: Seconds },
    /// Clear progress (write-behind); clearing what is not there is a no-op.
    ClearProgress(AssetId),
    /// The watchlist, oldest addition first.
    GetWatchlist,
    /// Add to (`add`) or remove from the watchlist, acknowledged once stored.
    EditWatchlist { asset: AssetId, add: bool },
}

impl UserCommand {
    /// Whether the actor answers it from memory alone: stream commands never touch the
    /// store; library commands may (loading a library, writing a watchlist edit through).
    pub fn is_memory_only(&self) -> bool {
        matches!(
            self,
            UserCommand::Heartbeat(_) | UserCommand::EndStream { .. } | UserCommand::ListStreams
        )
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            UserCommand::Heartbeat(_) => "heartbeat",
            UserCommand::EndStream { .. } => "end_stream",
            UserCommand::ListStreams => "list_streams",
            UserCommand::GetProgress(_) => "get_progress",
            UserCommand::SetProgress { .. } => "set_progress",
            UserCommand::ClearProgress(_) => "clear_progress",
            UserCommand::GetWatchlist => "get_watchlist",
            UserCommand::EditWatchlist { .. } => "edit_watchlist",
        }
    }
}

/// Why a library operation could not be done; nothing changed.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum LibraryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("too many unflushed progress updates on this node")]
    TooManyUnflushed,
    #[error("too many undelivered events on this node")]
    OutboxFull,
}

/// The answer to a `UserCommand`, one variant per kind of answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum CommandReply {
    Heartbeat(Result<Accepted, LimitReached>),
    /// `true` if a live slot was freed.
    Released(bool),
    Streams(Vec<Slot>),
    Progress(Result<Vec<(AssetId, Seconds)>, LibraryError>),
    Watchlist(Result<Vec<(AssetId, Timestamp)>, LibraryError>),
    /// A library change: done, or why not (nothing changed).
    Done(Result<(), LibraryError>),
}

/// A reply of another kind than its command asks for: only a node running another
/// version of the forwarding protocol could send one.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the owning node answered {command} with a reply of another kind")]
pub struct UnexpectedReply {
    pub command: &'static str,
}

macro_rules! reply_accessor {
    ($name:ident, $variant:ident, $ty:ty) => {
        pub fn $name(self, command: &'static str) -> Result<$ty, UnexpectedReply> {
            match self {
                CommandReply::$variant(value) => Ok(value),
                _ => Err(UnexpectedReply { command }),
            }
        }
    };
}

impl CommandReply {
    reply_accessor!(heartbeat, Heartbeat, Result<Accepted, LimitReached>);
    reply_accessor!(released, Released, bool);
    reply_accessor!(streams, Streams, Vec<Slot>);
    reply_accessor!(
        progress,
        Progress,
        Result<Vec<(AssetId, Seconds)>, LibraryError>
    );
    reply_accessor!(
        watchlist,
        Watchlist,
        Result<Vec<(AssetId, Timestamp)>, LibraryError>
    );
    reply_accessor!(done, Done, Result<(), LibraryError>);
}
