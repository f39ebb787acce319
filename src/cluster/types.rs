//! The Raft type configuration, and the commands and answers that go through the log.
//! Only metadata goes through Raft: members, the shard table, handoffs and trailers.

use std::io::Cursor;

use serde::{Deserialize, Deserializer, Serialize};

use super::ids::{MemberState, ShardMove};
use crate::domain::TrailerEntry;

/// How a node is reached, as openraft stores it in the membership. The addresses kept in
/// the state machine's member list win over these when they differ (a node restarted
/// on another port updates them through the log).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub player_addr: String,
    pub cluster_addr: String,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (players {})", self.cluster_addr, self.player_addr)
    }
}

/// A change to the cluster's metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Adds a member (active) or updates its addresses and marks it active again.
    Join { id: u64, addr: NodeAddr },
    /// Marks a member draining (it keeps its membership) or leaving (it will be removed).
    SetState { id: u64, state: MemberState },
    /// Removes a member for good: its id is never accepted again.
    Remove { id: u64 },
    /// Gives every shard to `id` (the first node of a new cluster).
    AssignAll { id: u64, shards: u32 },
    /// Starts moving shards: each stays with its owner until `FinishMoves`.
    BeginMoves { moves: Vec<ShardMove> },
    /// The new owners take over the shards (their epoch rises).
    FinishMoves { shards: Vec<u32> },
    /// Gives up moves that could not be done; the shards stay where they were.
    AbortMoves { shards: Vec<u32> },
    /// Moves the shards of `node`, which the leader could not reach for
    /// `failover_after`, each to the node given (its backup when it can be reached); the
    /// node stays a member. Shards it no longer owns are left alone.
    Failover { node: u64, shards: Vec<(u32, u64)> },
    /// Stores a trailer entry under its content key.
    PutTrailer { key: String, entry: TrailerEntry },
}

/// The answer to a `Request` once applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Applied,
    /// Not applied, and why.
    Refused(#[serde(deserialize_with = "Refusal::deserialize_any_release")] Refusal),
}

/// Why a `Request` was not applied. Refusals change nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// The member was removed; its id is never accepted again.
    #[error("node {node} was removed from the cluster")]
    Removed { node: u64 },
    #[error("node {node} is not a member")]
    NotMember { node: u64 },
    /// A member is removed only once its shards have gone to others.
    #[error("node {node} still owns shards")]
    OwnsShards { node: u64 },
    #[error("the shard table is already assigned")]
    AlreadyAssigned,
    /// From a node of an earlier release, which sent a refusal as text only.
    #[error("{reason}")]
    Unrecognized { reason: String },
}

impl Refusal {
    /// Reads a refusal as this release sends it, or as text, as earlier releases did (a
    /// rolling upgrade has both). Of those texts only a removal is told apart: it is the
    /// one a node acts on (it stops for good).
    fn deserialize_any_release<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Refusal, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum AnyRelease {
            Typed(Refusal),
            Text(String),
        }
        Ok(match AnyRelease::deserialize(deserializer)? {
            AnyRelease::Typed(refusal) => refusal,
            AnyRelease::Text(reason) => {
                let removed = reason
                    .strip_prefix("node ")
                    .and_then(|rest| rest.strip_suffix(" was removed from the cluster"))
                    .and_then(|node| node.parse().ok());
                match removed {
                    Some(node) => Refusal::Removed { node },
                    None => Refusal::Unrecognized { reason },
                }
            }
        })
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        Node = NodeAddr,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, NodeAddr>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, NodeAddr>;

/// Why Raft could not be opened on this node's data dir and started.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `raft.redb` is damaged, vanished or unreadable; the message says what to do.
    #[error(transparent)]
    File(#[from] crate::store::redb_file::RedbFileError),
    #[error("cannot create the state machine's table in raft.redb")]
    Table(#[from] redb::Error),
    #[error("cannot load the state machine's snapshot")]
    Snapshot(#[source] Box<StorageError>),
    #[error("Raft settings")]
    Settings(#[from] openraft::ConfigError),
    #[error("cannot start Raft")]
    Start(#[source] Box<openraft::error::Fatal<u64>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_its_kind_over_the_wire() {
        for refusal in [
            Refusal::Removed { node: 2 },
            Refusal::NotMember { node: 3 },
            Refusal::OwnsShards { node: 4 },
            Refusal::AlreadyAssigned,
        ] {
            let sent = serde_json::to_string(&(Response::Refused(refusal.clone()), 7u64)).unwrap();
            let received: (Response, u64) = serde_json::from_str(&sent).unwrap();
            assert_eq!(received, (Response::Refused(refusal), 7), "{sent}");
        }
    }

    #[test]
    fn a_refusal_from_an_earlier_release_is_read_and_a_removal_told_apart() {
        let removed = r#"{"Refused":"node 2 was removed from the cluster"}"#;
        assert_eq!(
            serde_json::from_str::<Response>(removed).unwrap(),
            Response::Refused(Refusal::Removed { node: 2 })
        );
        let other = r#"{"Refused":"node 3 still owns shards"}"#;
        assert_eq!(
            serde_json::from_str::<Response>(other).unwrap(),
            Response::Refused(Refusal::Unrecognized {
                reason: "node 3 still owns shards".into()
            })
        );
        assert_eq!(
            serde_json::from_str::<Response>(r#""Applied""#).unwrap(),
            Response::Applied
        );
    }
}
