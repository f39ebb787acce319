//! Slot backups between nodes: each shard's owner sends its users' slots and unstored
//! progress to the shard's backup node (see `domain::backup` for what is kept, and
//! `actors::BackupFeed` for how actors leave their changes), and the backup node, when
//! the shard comes to it by failover, stores the progress and holds the slots before it
//! serves the shard. So a crash frees no live slot that reached the backup, and loses
//! at most one backup interval of progress.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Users;
use crate::cluster::{NodeId, Peers, ShardId, ShardTable};
use crate::domain::{ShardBackup, UserBackup, UserId, backup::needs_snapshot};

crate::cluster::endpoint::endpoint!(
    /// The owner of shards sends their backup node what changed.
    Backup, Post "/cluster/backup", BackupBatch => BackupAnswer
);

/// Changes to the shards one node backs up for the sender.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackupBatch {
    pub shards: Vec<ShardChanges>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ShardChanges {
    pub shard: ShardId,
    /// The shard's epoch at the sender, its owner.
    pub epoch: u64,
    /// A full snapshot, replacing whatever the backup kept of the shard.
    pub full: bool,
    pub users: Vec<(UserId, UserBackup)>,
    /// The version of the sender's shard table, which named the receiver the backup.
    /// (Absent from an earlier release: 0.)
    #[serde(default)]
    pub table_version: u64,
}

/// The backup's answer: shards whose changes it could not take, for want of a snapshot
/// at that epoch (it restarted, or it is new to the shard).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BackupAnswer {
    pub snapshot_wanted: Vec<ShardId>,
}

/// What this node keeps as the backup of other nodes' shards.
#[derive(Default)]
pub struct BackupHolder {
    shards: Mutex<HashMap<ShardId, ShardBackup>>,
}

impl BackupHolder {
    pub fn receive(&self, batch: BackupBatch) -> BackupAnswer {
        let mut kept = self.shards.lock().expect("not poisoned");
        let mut answer = BackupAnswer::default();
        for changes in batch.shards {
            let current = kept.get_mut(&changes.shard);
            if changes.full {
                if current.is_none_or(|c| c.epoch <= changes.epoch) {
                    let mut snapshot = ShardBackup::snapshot(changes.epoch, changes.users);
                    snapshot.chosen_in = changes.table_version;
                    kept.insert(changes.shard, snapshot);
                }
            } else if needs_snapshot(current.as_deref(), changes.epoch) {
                answer.snapshot_wanted.push(changes.shard);
            } else if let Some(current) = current {
                current.apply(changes.users);
            }
        }
        answer
    }

    /// Users kept, over all shards.
    pub fn users(&self) -> usize {
        let kept = self.shards.lock().expect("not poisoned");
        kept.values().map(|b| b.users.len()).sum()
    }

    /// The copy of a shard that came here by failover from its owner at an epoch before
    /// `epoch`.
    pub fn take_for(&self, shard: ShardId, epoch: u64) -> Option<ShardBackup> {
        let mut kept = self.shards.lock().expect("not poisoned");
        match kept.get(&shard) {
            Some(backup) if backup.epoch < epoch => kept.remove(&shard),
            _ => None,
        }
    }

    /// Forgets shards this node no longer backs up (or kept at an epoch that is over);
    /// returns how many users it still keeps. A copy sent by an owner whose table was
    /// newer than `table` stays: by that newer table this node is the backup (it was
    /// dropped here before this node's table caught up, and the owner, counting it
    /// sent, never sent it again: a failover then found the shard's slots gone).
    pub fn prune(&self, table: &ShardTable, me: NodeId) -> usize {
        let mut kept = self.shards.lock().expect("not poisoned");
        kept.retain(|shard, backup| {
            backup.chosen_in > table.version
                || (table.backup_of(*shard) == Some(me)
                    && table.owner(*shard).is_some_and(|o| backup.epoch >= o.epoch))
        });
        drop(kept);
        self.users()
    }
}

/// Runs for the node's life: every `interval` (or at once when a slot was taken), sends
/// what changed on the shards this node owns to their backups.
pub(super) async fn send_backups(users: Users, peers: Peers, interval: Duration) {
    let feed = std::sync::Arc::clone(&users.registry.services().backup_feed);
    let me = users.router.local();
    // Shards whose backup has everything up to now: (backup node, epoch) it was sent at.
    let mut synced: HashMap<ShardId, (NodeId, u64)> = HashMap::new();
    let timeout = interval.max(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = feed.urgent() => {}
        }
        let table = users.router.table();
        let any_backup = table.has_backups();
        feed.set_enabled(any_backup);
        let mut changed: HashMap<ShardId, Vec<(UserId, UserBackup)>> = HashMap::new();
        for (shard, user, change) in feed.take() {
            changed.entry(shard).or_default().push((user, change));
        }
        if !any_backup {
            synced.clear();
            continue;
        }
        let mut batches: HashMap<NodeId, Vec<ShardChanges>> = HashMap::new();
        for shard in table.owned_by(me).collect::<Vec<_>>() {
            let (Some(backup), Some(owner)) = (table.backup_of(shard), table.owner(shard)) else {
                continue;
            };
            let changes = changed.remove(&shard);
            let full = synced.get(&shard) != Some(&(backup, owner.epoch));
            let users = if full {
                // Taken after the changes above, so it holds them all.
                users.registry.snapshot(shard).await
            } else {
                match changes {
                    Some(changes) => changes,
                    None => continue,
                }
            };
            synced.insert(shard, (backup, owner.epoch));
            batches.entry(backup).or_default().push(ShardChanges {
                shard,
                epoch: owner.epoch,
                full,
                users,
                table_version: table.version,
            });
        }
        let sends = batches.into_iter().map(|(node, shards)| {
            let addr = table.cluster_addr(node).cloned();
            let peers = &peers;
            async move {
                let sent: Vec<ShardId> = shards.iter().map(|c| c.shard).collect();
                let answer = match addr {
                    Some(addr) => peers
                        .call::<Backup>(&addr, &BackupBatch { shards }, timeout)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err(format!("node {node} has no address")),
                };
                (node, sent, answer)
            }
        });
        let metrics = &users.registry.services().metrics.cluster;
        let mut all_sent = true;
        for (node, sent, answer) in futures_util::future::join_all(sends).await {
            match answer {
                Ok(answer) => {
                    metrics.backup_sent("ok").inc();
                    for shard in answer.snapshot_wanted {
                        synced.remove(&shard);
                    }
                }
                Err(e) => {
                    // Whatever it missed goes again as a snapshot.
                    metrics.backup_sent("error").inc();
                    all_sent = false;
                    tracing::debug!(node = node.0, error = %e, "backup not sent; will resend");
                    for shard in sent {
                        synced.remove(&shard);
                    }
                }
            }
        }
        feed.sent(all_sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AssetId;

    fn copy_of(shard: ShardId, table_version: u64) -> BackupBatch {
        let asset = AssetId::parse("37fc3f0c-3b7e-4d6c-9c8a-4f6f5d8d1a11").unwrap();
        let kept = UserBackup {
            slots: None,
            progress: Some(vec![(asset, Some(1135))]),
        };
        BackupBatch {
            shards: vec![ShardChanges {
                shard,
                epoch: 1,
                full: true,
                users: vec![(UserId::parse("viewer").unwrap(), kept)],
                table_version,
            }],
        }
    }

    #[test]
    fn a_copy_chosen_by_a_newer_table_stays_until_this_nodes_table_catches_up() {
        let holder = BackupHolder::default();
        holder.receive(copy_of(ShardId(3), 10));
        // This node's table is older than the owner's, and names no backup (one node).
        let mut table = ShardTable::single_node(16, NodeId(2));
        table.version = 9;
        assert_eq!(
            holder.prune(&table, NodeId(2)),
            1,
            "kept: the owner knows better"
        );
        // Caught up, the table still does not name this node: the copy is not its own.
        table.version = 10;
        assert_eq!(holder.prune(&table, NodeId(2)), 0);
    }
}
