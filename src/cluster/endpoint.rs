//! The cluster listener's routes as types. Each route is one `Endpoint`: its method, its
//! path, and the types of its request and reply. `Peers::call` sends one and reads its
//! reply; the route table (`api::cluster`) serves each at its path with its handler. So
//! neither side spells a path, and both read and write the same types.
//!
//! Endpoints whose messages belong to a layer above this one are defined beside those
//! messages (the forwarded commands and backups in `users`, the handoff import in
//! `api::cluster`), so that this module imports nothing from there.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::controller::{ExportDone, ExportRequest};
use super::lease::{LeaseAnswer, LeaseRequest};
use super::node::{JoinRequest, Joined, StatusReport};
use super::rpc;
use super::types::{Request, Response};
use crate::domain::UserId;

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
endpoint!(
    /// A member asks the leader to renew its ownership lease.
    LeaseRenewal, Post "/cluster/lease", LeaseRequest => LeaseAnswer
);
endpoint!(
    /// The leader asks a shard's old owner to hand it to its new owner.
    HandoffExport, Post "/cluster/handoff/export", ExportRequest => ExportDone
);
endpoint!(
    /// The cluster as the node asked sees it (`playstate cluster status`).
    AdminStatus, Get "/cluster/admin/status", () => StatusReport
);
endpoint!(
    /// Where one user's commands go, as the node asked sees it. The user is the last
    /// segment of the path: for operators and tests, no node calls it.
    AdminRoute, Get "/cluster/admin/route/{user}", () => RouteReport
);
endpoint!(
    /// A node asks to be added; any member passes it on to the leader.
    AdminJoin, Post "/cluster/admin/join", JoinRequest => Joined
);
endpoint!(
    /// Drains a member, then removes it; any member passes it on to the leader.
    AdminLeave, Post "/cluster/admin/leave", NodeRequest => Left
);
endpoint!(
    /// Marks a member draining: its shards go to the others.
    AdminDrain, Post "/cluster/admin/drain", NodeRequest => Draining
);
endpoint!(
    /// A metadata change another node asks the leader to commit, answered with the log
    /// index it was committed at.
    AdminWrite, Post "/cluster/admin/write", Request => (Response, u64)
);

/// The member an admin request is about.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRequest {
    pub node_id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Left {
    pub left: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Draining {
    pub draining: u64,
}

/// Where a user's commands go.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouteReport {
    pub user: UserId,
    pub shard: u32,
    pub owner: Option<u64>,
    pub epoch: Option<u64>,
    pub backup: Option<u64>,
}
