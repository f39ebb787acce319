//! Cluster metadata: which node owns which shard of users. This node-local version holds a
//! single-node table; the Raft-replicated table replaces it without changing callers.

pub mod router;

pub use router::{NodeId, Router, ShardId, ShardTable};
