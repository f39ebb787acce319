//! The cluster: which node owns which shard of users, kept by Raft (openraft).
//!
//! Raft keeps metadata only (members, the shard table, moves in progress, trailers);
//! user state stays in the user actors of the owning node and never goes through the
//! log. Laid out as openraft's examples are: `types` (type configuration and commands),
//! `log_store` and `state_machine` (storage), `endpoint` (the cluster listener's routes)
//! and `network` (calling them),
//! `node` (formation and the management operations), `controller` (what the leader does:
//! promotions, rebalancing, removals, failovers), `lease` (fenced ownership), `ids` (the
//! names and states the rest speaks of), plus the pure `state`, `balance` and `router`.

pub mod balance;
pub mod controller;
pub mod endpoint;
mod ids;
pub mod lease;
mod log_store;
pub mod management;
pub mod network;
mod node;
mod ownership;
pub mod peer_health;
pub mod router;
pub mod state;
mod state_machine;
mod trailer_cache;
mod types;

pub use controller::{ExportDone, ExportRequest};
pub use ids::{MemberState, NodeId, ShardId, ShardMove};
pub use management::{JoinRequest, Joined, MemberReport, StatusReport};
pub use network::{PeerError, Peers};
pub use node::{Cluster, ClusterError, ClusterSettings};
pub use ownership::OwnershipLease;
pub use router::{Destination, Router, ShardTable, shard_of};
pub use state::ClusterState;
pub use state_machine::Replica;
pub use trailer_cache::ReplicatedTrailerCache;
pub use types::{NodeAddr, Refusal, Request, Response};

/// Raft RPC payloads, for the cluster listener's handlers.
pub mod rpc {
    use super::types::TypeConfig;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type VoteRequest = openraft::raft::VoteRequest<u64>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
}
