//! The cluster listener's routes as types. Each route is one `Endpoint`: its method, its
//! path, and the types of its request and reply. `Peers::call` sends one and reads its
//! reply; the route table (`api::cluster`) serves each at its path with its handler. So
//! neither side spells a path, and both read and write the same types.
//!
//! Each endpoint is defined beside its messages (the lease in `lease`, the handoff export
//! in `controller`, the admin routes in `management`, the forwarded commands and backups
//! in `users`, the handoff import in `api::cluster`): this module holds only the Raft
//! RPCs, and imports nothing of the modules that call it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::rpc;

/// How an endpoint is asked: a GET carries no body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// One route of the cluster listener. Bodies are JSON both ways.
pub trait Endpoint: 'static {
    /// Under `/cluster`, where the listener checks the secret.
    const PATH: &'static str;
    const METHOD: Method = Method::Post;
    type Request: Serialize + DeserializeOwned + 'static;
    type Reply: Serialize + DeserializeOwned + 'static;
}

macro_rules! endpoint {
    ($(#[$doc:meta])* $name:ident, $method:ident $path:literal, $request:ty => $reply:ty) => {
        $(#[$doc])*
        pub enum $name {}
        impl $crate::cluster::endpoint::Endpoint for $name {
            const PATH: &'static str = $path;
            const METHOD: $crate::cluster::endpoint::Method =
                $crate::cluster::endpoint::Method::$method;
            type Request = $request;
            type Reply = $reply;
        }
    };
}
pub(crate) use endpoint;

type RaftReply<T, E = openraft::error::Infallible> = Result<T, openraft::error::RaftError<u64, E>>;

endpoint!(
    /// Raft: a leader's log entries (or heartbeat) for a follower.
    RaftAppend, Post "/cluster/raft/append",
    rpc::AppendEntriesRequest => RaftReply<openraft::raft::AppendEntriesResponse<u64>>
);
endpoint!(
    /// Raft: a candidate asks for a vote.
    RaftVote, Post "/cluster/raft/vote",
    rpc::VoteRequest => RaftReply<openraft::raft::VoteResponse<u64>>
);
endpoint!(
    /// Raft: one chunk of a leader's snapshot for a follower that is too far behind.
    RaftSnapshot, Post "/cluster/raft/snapshot",
    rpc::InstallSnapshotRequest => RaftReply<
        openraft::raft::InstallSnapshotResponse<u64>,
        openraft::error::InstallSnapshotError,
    >
);
