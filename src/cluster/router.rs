//! user → shard → node. Users hash into a fixed number of shards; shards, not users, are
//! what nodes own and what moves when membership changes.

use std::sync::Arc;

use crate::domain::UserId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct NodeId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ShardId(pub u32);

/// The shard of a user. xxh3 is specified and seedless, so every node and every version
/// of playstate agrees on it; changing this function re-homes every user.
pub fn shard_of(user: &str, shards: u32) -> ShardId {
    ShardId((xxhash_rust::xxh3::xxh3_64(user.as_bytes()) % u64::from(shards)) as u32)
}

/// Owner of every shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardTable {
    owners: Vec<NodeId>,
}

impl ShardTable {
    /// Every shard owned by `node`.
    pub fn single_node(shards: u32, node: NodeId) -> ShardTable {
        ShardTable {
            owners: vec![node; shards as usize],
        }
    }

    pub fn shards(&self) -> u32 {
        self.owners.len() as u32
    }

    pub fn owner(&self, shard: ShardId) -> NodeId {
        self.owners[shard.0 as usize]
    }
}

/// Where a user's requests must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Local,
    Remote(NodeId),
}

#[derive(Clone)]
pub struct Router {
    local: NodeId,
    table: Arc<ShardTable>,
}

impl Router {
    pub fn new(local: NodeId, table: ShardTable) -> Router {
        Router {
            local,
            table: Arc::new(table),
        }
    }

    pub fn local(&self) -> NodeId {
        self.local
    }

    pub fn route(&self, user: &UserId) -> Destination {
        let owner = self
            .table
            .owner(shard_of(user.as_str(), self.table.shards()));
        if owner == self.local {
            Destination::Local
        } else {
            Destination::Remote(owner)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_of_is_stable_across_runs_and_versions() {
        // Pinned values: if these change, every deployed user moves shard.
        let pinned: Vec<u32> = ["a", "user-1", "42"]
            .iter()
            .map(|u| shard_of(u, 1024).0)
            .collect();
        assert_eq!(pinned, [543, 457, 401]);
    }

    #[test]
    fn users_spread_over_shards() {
        let mut counts = vec![0u32; 64];
        for i in 0..64_000 {
            counts[shard_of(&format!("user-{i}"), 64).0 as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 800 && *max < 1200, "uneven spread: {min}..{max}");
    }

    #[test]
    fn single_node_table_routes_everyone_locally() {
        let router = Router::new(NodeId(1), ShardTable::single_node(1024, NodeId(1)));
        for i in 0..100 {
            let user = UserId::parse(&format!("u{i}")).unwrap();
            assert_eq!(router.route(&user), Destination::Local);
        }
        let elsewhere = Router::new(NodeId(2), ShardTable::single_node(8, NodeId(1)));
        let user = UserId::parse("u").unwrap();
        assert_eq!(elsewhere.route(&user), Destination::Remote(NodeId(1)));
    }
}
