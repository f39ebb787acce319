//! The management API: what `playstate cluster` and the nodes ask each other about
//! membership (status, route, join, leave, drain, metadata writes), its routes and their
//! messages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::endpoint::endpoint;
use super::ids::MemberState;
use super::types::{Request, Response};
use crate::domain::UserId;
use crate::worker::WorkerStatus;

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

/// A member as `cluster status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberReport {
    pub id: u64,
    pub player_addr: String,
    pub cluster_addr: String,
    /// `voter` or `learner`.
    pub role: String,
    pub state: MemberState,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MoveReport {
    pub shard: u32,
    pub from: u64,
    pub to: u64,
}

/// What `cluster status` prints, as one node sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_applied: u64,
    pub members: Vec<MemberReport>,
    /// Shards owned, by node id.
    pub shards: BTreeMap<String, usize>,
    pub handoffs: Vec<MoveReport>,
    /// Every node in the Raft membership (voters and learners), as this node knows it.
    pub raft_members: Vec<u64>,
    /// This node's log holds no entry at or below this index: it is in its snapshot.
    pub log_purged_upto: u64,
    /// Members the leader has not renewed for `failover_after` (known on the leader only).
    #[serde(default)]
    pub unreachable: Vec<u64>,
    /// Whether this node holds its ownership lease.
    #[serde(default)]
    pub lease_valid: bool,
    /// This node's background workers (`src/worker.rs`).
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
}

/// The answer to a join: where the cluster was when this node was added, so that the
/// node can tell when it has caught up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Joined {
    pub log_index: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub node_id: u64,
    pub player_addr: String,
    pub cluster_addr: String,
    /// The joining node's `ClusterSettings::shared_store`.
    pub store: Option<String>,
}

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
