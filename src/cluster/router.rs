//! user → shard → node. Users hash into a fixed number of shards; shards, not users, are
//! what nodes own and what moves when membership changes. Every node routes from its own
//! replica of the shard table, published here by the state machine after each change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::state::{ClusterState, ShardOwner, backup_among};
use crate::domain::UserId;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u32);

/// The shard of a user. xxh3 is specified and seedless, so every node and every version
/// of playstate agrees on it; changing this function re-homes every user.
pub fn shard_of(user: &str, shards: u32) -> ShardId {
    ShardId((xxhash_rust::xxh3::xxh3_64(user.as_bytes()) % u64::from(shards)) as u32)
}

/// What routing needs of the cluster state: owners and how to reach them.
#[derive(Debug, Default)]
pub struct ShardTable {
    /// Rises with every published table.
    pub version: u64,
    owners: Vec<ShardOwner>,
    /// Cluster listener of every member.
    cluster_addrs: HashMap<NodeId, Arc<str>>,
    /// Shards being handed over, by shard, to whom.
    moving: HashMap<ShardId, NodeId>,
    /// The backup node of every shard (see `ClusterState::backup_of`).
    backups: Vec<Option<NodeId>>,
}

impl ShardTable {
    pub fn from_state(state: &ClusterState, version: u64) -> ShardTable {
        ShardTable {
            version,
            owners: state.shards.clone(),
            cluster_addrs: state
                .members
                .iter()
                .map(|(id, m)| (*id, Arc::from(m.addr.cluster_addr.as_str())))
                .collect(),
            moving: state.moves.iter().map(|(s, m)| (*s, m.to)).collect(),
            backups: {
                let active = state.active_members();
                state
                    .shards
                    .iter()
                    .enumerate()
                    .map(|(s, owner)| backup_among(&active, owner.node, ShardId(s as u32)))
                    .collect()
            },
        }
    }

    /// Every shard owned by `node`, epoch 1 (a single node that runs without Raft).
    pub fn single_node(shards: u32, node: NodeId) -> ShardTable {
        ShardTable {
            version: 1,
            owners: vec![
                ShardOwner {
                    node,
                    epoch: 1,
                    by_failover: false
                };
                shards as usize
            ],
            cluster_addrs: HashMap::new(),
            moving: HashMap::new(),
            backups: vec![None; shards as usize],
        }
    }

    pub fn is_assigned(&self) -> bool {
        !self.owners.is_empty()
    }

    pub fn owner(&self, shard: ShardId) -> Option<ShardOwner> {
        self.owners.get(shard.0 as usize).copied()
    }

    pub fn cluster_addr(&self, node: NodeId) -> Option<&Arc<str>> {
        self.cluster_addrs.get(&node)
    }

    pub fn is_moving(&self, shard: ShardId) -> bool {
        self.moving.contains_key(&shard)
    }

    /// Where a shard is being moved to, if it is.
    pub fn moving_to(&self, shard: ShardId) -> Option<NodeId> {
        self.moving.get(&shard).copied()
    }

    /// Whether any shard has a backup (the cluster has more than one active member).
    pub fn has_backups(&self) -> bool {
        self.backups.iter().any(Option::is_some)
    }

    pub fn backup_of(&self, shard: ShardId) -> Option<NodeId> {
        self.backups.get(shard.0 as usize).copied().flatten()
    }

    pub fn shards(&self) -> u32 {
        self.owners.len() as u32
    }

    /// Shards owned by `node`.
    pub fn owned_by(&self, node: NodeId) -> impl Iterator<Item = ShardId> + '_ {
        self.owners
            .iter()
            .enumerate()
            .filter(move |(_, o)| o.node == node)
            .map(|(i, _)| ShardId(i as u32))
    }
}

/// Where a user's command must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// This node owns the shard.
    Local { shard: ShardId, epoch: u64 },
    /// Another node does.
    Remote {
        shard: ShardId,
        node: NodeId,
        epoch: u64,
    },
    /// No table yet (a node still joining): wait for one.
    Unassigned { shard: ShardId },
}

#[derive(Clone)]
pub struct Router {
    local: NodeId,
    shards: u32,
    table: Arc<ArcSwap<ShardTable>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Router {
    /// A router with no table yet; `shards` is the configured shard count.
    pub fn new(local: NodeId, shards: u32) -> Router {
        Router {
            local,
            shards,
            table: Arc::new(ArcSwap::from_pointee(ShardTable::default())),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    pub fn local(&self) -> NodeId {
        self.local
    }

    /// The table as it is now (cheap: no lock is taken).
    pub fn table(&self) -> Arc<ShardTable> {
        self.table.load_full()
    }

    /// Installs a newer table and wakes whoever waits for one.
    pub fn publish(&self, table: ShardTable) {
        let version = table.version;
        if let Some(shards) = table.is_assigned().then_some(table.owners.len() as u32)
            && shards != self.shards
        {
            // Users would hash into other shards than the cluster's: refuse to guess.
            tracing::error!(
                configured = self.shards,
                cluster = shards,
                "cluster.shards differs from the cluster's shard table: set it to the \
                 cluster's; requests for shards this node cannot place get 503"
            );
        }
        self.table.store(Arc::new(table));
        self.changed.send_replace(version);
    }

    /// Wakes waiters without a new table (a shard stopped or resumed serving here).
    pub fn nudge(&self) {
        self.changed.send_modify(|_| {});
    }

    pub fn shard_of(&self, user: &UserId) -> ShardId {
        shard_of(user.as_str(), self.shards)
    }

    pub fn route(&self, user: &UserId) -> Destination {
        let table = self.table.load();
        let shard = self.shard_of(user);
        match table.owner(shard) {
            None => Destination::Unassigned { shard },
            Some(owner) if owner.node == self.local => Destination::Local {
                shard,
                epoch: owner.epoch,
            },
            Some(owner) => Destination::Remote {
                shard,
                node: owner.node,
                epoch: owner.epoch,
            },
        }
    }

    /// Waits until something changes (a new table, or a shard's serving state here) or
    /// `timeout` passes; `false` on timeout.
    pub async fn changed_within(
        &self,
        seen: &mut tokio::sync::watch::Receiver<u64>,
        timeout: Duration,
    ) -> bool {
        matches!(
            tokio::time::timeout(timeout, seen.changed()).await,
            Ok(Ok(()))
        )
    }

    /// Waits until `done` holds: checked at once, then after every change (a new table,
    /// or a shard's serving state here). The table it held for, or `None` once
    /// `deadline` has passed.
    pub async fn wait_for(
        &self,
        mut done: impl FnMut(&ShardTable) -> bool,
        deadline: tokio::time::Instant,
    ) -> Option<Arc<ShardTable>> {
        let mut changes = self.subscribe();
        loop {
            let table = self.table();
            if done(&table) {
                return Some(table);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // The deadline, or the router is gone (the node is stopping).
                _ => return None,
            }
        }
    }

    /// A receiver to wait on with `changed_within`; subscribe before reading the table,
    /// so a change in between is not missed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
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
    fn routes_by_the_published_table() {
        let router = Router::new(NodeId(1), 1024);
        let user = UserId::parse("u").unwrap();
        assert!(matches!(
            router.route(&user),
            Destination::Unassigned { .. }
        ));
        router.publish(ShardTable::single_node(1024, NodeId(1)));
        assert!(matches!(
            router.route(&user),
            Destination::Local { epoch: 1, .. }
        ));
        let elsewhere = Router::new(NodeId(2), 8);
        elsewhere.publish(ShardTable::single_node(8, NodeId(1)));
        assert!(matches!(
            elsewhere.route(&user),
            Destination::Remote {
                node: NodeId(1),
                ..
            }
        ));
    }
}
