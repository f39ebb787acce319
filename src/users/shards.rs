//! Shard movement, in one place: how a shard's users go from one node to another.
//!
//! - **Handoff** (a planned move: join, drain, leave, rebalancing). The leader commits the
//!   move (`BeginMoves`) and asks the old owner to `export`: it stops serving the shard
//!   (requests wait, up to `cluster.handoff_wait`), lets what is in flight finish, stores
//!   its users' dirty progress, and sends their live slots to the new owner, which
//!   `import`s them once its own table shows the move (an older table could not tell an
//!   import from a stale one). The leader then commits the new owner and a new epoch
//!   (`FinishMoves`), and `follow_shard_table` on the new owner serves the shard. A move
//!   given up (`AbortMoves`) is served again by the old owner, and the new one lets go.
//! - **Failover** (an owner that stopped renewing its lease, or came back afresh). The
//!   leader gives each of its shards to the shard's backup with a new epoch (`Failover`).
//!   The backup, in `follow_shard_table`, takes its copy of the shard (`recover_shards`:
//!   stores the backed-up progress, then holds the slots with fresh leases) before it
//!   serves it. The old owner, when it learns of the failover, drops what it held of the
//!   shard unstored; if the shard comes back to it by a handoff first, the import drops it.
//! - **Backups**. Each shard's backup is computed from the replicated state
//!   (`ShardTable::backup_of`); the owner's `backup::send_backups` keeps it current (a full
//!   snapshot whenever the backup or the epoch changes, then changes), and the backup
//!   node's `BackupHolder` keeps the copies of the shards it backs up.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Users;
use crate::actors::UserHandoff;
use crate::cluster::endpoint::endpoint;
use crate::cluster::management::RouteReport;
use crate::cluster::{Cluster, ExportDone, ExportRequest, NodeId, ShardId};
use crate::domain::{ShardBackup, UserId};
use crate::error_chain::DisplayChain;
use crate::store::ProgressItem;
use crate::telemetry::Metrics;

endpoint!(
    /// The old owner of shards hands their users to the new owner.
    HandoffImport, Post "/cluster/handoff/import", Vec<ShardImport> => Imported
);

/// The users of one shard, handed to its new owner.
#[derive(Serialize, Deserialize)]
pub struct ShardImport {
    pub shard: ShardId,
    /// The epoch the shard had at its old owner.
    pub epoch: u64,
    pub users: Vec<UserHandoff>,
}

/// The new owner holds the users handed over.
#[derive(Serialize, Deserialize)]
pub struct Imported {
    status: ImportStatus,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportStatus {
    Imported,
}

/// Why a handoff step did not happen; the leader gives the move up or tries again.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// A later export of the shard began: only the latest may decide.
    #[error("superseded by a later export of shard {0}")]
    Superseded(u32),
    /// The new owner did not take the shards.
    #[error("the new owner did not take the shards: {0}")]
    NotTaken(String),
    /// This node's table does not show the shard moving here (yet, or any more).
    #[error("shard {shard} is not moving to node {node}")]
    NotMovingHere { shard: u32, node: NodeId },
}

impl Users {
    /// Where the user's commands go, as this node's table says.
    pub fn route_report(&self, user: UserId) -> RouteReport {
        let shard = self.router.shard_of(&user);
        let table = self.router.table();
        let owner = table.owner(shard);
        RouteReport {
            user,
            shard: shard.0,
            owner: owner.map(|o| o.node.0),
            epoch: owner.map(|o| o.epoch),
            backup: table.backup_of(shard).map(|b| b.0),
        }
    }

    /// Old owner: stops serving the shards, stores their users' progress, and sends their
    /// live slots to the new owner. On failure the leader gives the moves up, and the
    /// shards are served here again when this node sees that (`follow_shard_table`), not
    /// before: this export may have been given up and begun again meanwhile (the store was
    /// slow, the leader stopped waiting), and only the latest may decide.
    pub async fn export_shards(&self, request: ExportRequest) -> Result<ExportDone, HandoffError> {
        let ExportRequest { to, shards } = request;
        let mut imports = Vec::with_capacity(shards.len());
        for (shard, epoch) in &shards {
            let Some(exported) = self.registry.export(*shard).await else {
                tracing::info!(
                    shard = shard.0,
                    "handoff: a later export of this shard began; this one stops"
                );
                return Err(HandoffError::Superseded(shard.0));
            };
            imports.push(ShardImport {
                shard: *shard,
                epoch: *epoch,
                users: exported,
            });
        }
        let moved: usize = imports.iter().map(|i| i.users.len()).sum();
        let addr = self.router.table().cluster_addr(NodeId(to)).cloned();
        let sent = match addr {
            Some(addr) => self
                .peers
                .call::<HandoffImport>(&addr, &imports, self.handoff_wait + Duration::from_secs(5))
                .await
                .map_err(|e| DisplayChain(&e).to_string()),
            None => Err(format!("node {to} has no address")),
        };
        match sent {
            Ok(_) => {
                self.metrics
                    .cluster
                    .shards_moved
                    .inc_by(shards.len() as u64);
                Ok(ExportDone { users: moved })
            }
            Err(why) => {
                tracing::warn!(to, error = %why, "handoff: the new owner did not take the shards");
                Err(HandoffError::NotTaken(why))
            }
        }
    }

    /// New owner: holds the slots handed over until the shard is ours. Waits for this
    /// node's table to show the move, so an older table cannot make it drop what it just
    /// received. Only while the move is on: an import that arrives after it finished (or
    /// was given up) is from an export given up earlier, older than what this node holds.
    pub async fn import_shards(&self, imports: Vec<ShardImport>) -> Result<Imported, HandoffError> {
        let me = self.router.local();
        for import in imports {
            let deadline = tokio::time::Instant::now() + self.handoff_wait;
            let moving_here = |table: &crate::cluster::ShardTable| {
                table.moving_to(import.shard) == Some(me)
                    && table
                        .owner(import.shard)
                        .is_some_and(|o| o.epoch == import.epoch)
            };
            if self.router.wait_for(moving_here, deadline).await.is_none() {
                return Err(HandoffError::NotMovingHere {
                    shard: import.shard.0,
                    node: me,
                });
            }
            self.registry.install(import.shard, import.users);
        }
        Ok(Imported {
            status: ImportStatus::Imported,
        })
    }
    /// Takes over shards that came here by failover: stores the backed-up progress (their
    /// old owner may have crashed before storing it), all shards in one go, then holds
    /// the backed-up slots with fresh leases. Waits out a store outage: the caller serves
    /// the shards only after this, so nobody reads progress older than what was
    /// acknowledged.
    pub async fn recover_shards(&self, shards: Vec<(ShardId, ShardBackup)>) {
        let services = self.registry.services();
        let progress: Vec<ProgressItem> = shards
            .iter()
            .flat_map(|(_, backup)| &backup.users)
            .flat_map(|(user, kept)| {
                kept.progress
                    .iter()
                    .flatten()
                    .map(|(asset, seconds)| ProgressItem {
                        user: user.clone(),
                        asset: *asset,
                        seconds: *seconds,
                    })
            })
            .collect();
        let mut attempt = 0u32;
        while !progress.is_empty() {
            match services.flusher.write(progress.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(shards = shards.len(), error = %DisplayChain(&e), "cannot store recovered progress yet; the shards wait");
                    tokio::time::sleep(crate::retry::backoff(
                        attempt,
                        Duration::from_millis(200),
                        Duration::from_secs(5),
                    ))
                    .await;
                }
            }
        }
        let now = services.clock.now();
        let mut slots = 0;
        let count = shards.len();
        for (shard, backup) in shards {
            let handoffs: Vec<UserHandoff> = backup
                .users
                .into_iter()
                .filter_map(|(user, kept)| {
                    let mut held = kept.slots.filter(|s| s.held() > 0)?;
                    held.refresh(now, |origin| self.policy.lease_for(origin));
                    slots += held.held();
                    Some(UserHandoff { user, slots: held })
                })
                .collect();
            self.registry.install(shard, handoffs);
        }
        let metrics = &services.metrics.cluster;
        metrics.failover_slots_recovered.inc_by(slots as u64);
        metrics
            .failover_progress_recovered
            .inc_by(progress.len() as u64);
        tracing::info!(
            shards = count,
            slots,
            progress = progress.len(),
            "took over shards by failover from their backup copies"
        );
    }
}

/// Keeps the actors in step with the shard table: serves shards this node gained (or
/// kept after a move was given up), takes over the ones that came by failover from its
/// backup copy, lets go of the ones it lost, and notices its removal.
pub async fn follow_shard_table(
    users: Users,
    cluster: Cluster,
    metrics: Arc<Metrics>,
    on_removed: impl Fn(),
) {
    let router = users.router.clone();
    let registry = users.registry.clone();
    let me = router.local();
    let mut owned: Vec<bool> = Vec::new();
    let mut incoming: Vec<bool> = Vec::new();
    let mut changes = router.subscribe();
    loop {
        let table = router.table();
        let shards = table.shards() as usize;
        owned.resize(shards, false);
        incoming.resize(shards, false);
        let mut resumed = false;
        let mut count = 0;
        let mut moving = 0;
        let mut failed_over = Vec::new();
        for index in 0..shards {
            let shard = ShardId(index as u32);
            let owner = table.owner(shard).filter(|o| o.node == me);
            let moving_in = table.moving_to(shard) == Some(me);
            moving += i64::from(table.is_moving(shard));
            if let Some(owner) = owner {
                count += 1;
                let gained = !owned[index];
                if gained
                    && owner.by_failover
                    && let Some(backup) = users.backups.take_for(shard, owner.epoch)
                {
                    // Served once its backed-up state is in place, below.
                    failed_over.push((shard, backup));
                    owned[index] = true;
                    incoming[index] = moving_in;
                    continue;
                }
                let move_given_up = !table.is_moving(shard);
                if (gained || move_given_up) && !registry.is_serving(shard) {
                    registry.serve(shard);
                    resumed = true;
                }
            } else if moving_in && !registry.is_serving(shard) {
                // Coming (back) here: the import holds its users (and dropped anything
                // older), whatever this node saw of the shard before.
            } else if owned[index] && registry.is_serving(shard) {
                // Lost without a handoff: it moved by failover while this node was cut
                // off, and its new owner holds the backed-up state.
                tracing::warn!(
                    shard = index,
                    "a shard of this node moved by failover; dropping its users' state here"
                );
                registry.discard(shard);
            } else if owned[index] || (incoming[index] && !moving_in) {
                registry.release(shard);
            }
            owned[index] = owner.is_some();
            incoming[index] = moving_in;
        }
        if !failed_over.is_empty() {
            let shards: Vec<ShardId> = failed_over.iter().map(|(shard, _)| *shard).collect();
            users.recover_shards(failed_over).await;
            for shard in shards {
                registry.serve(shard);
            }
            resumed = true;
        }
        metrics.cluster.shards_owned.set(count);
        metrics.cluster.shards.set(shards as i64);
        metrics.cluster.shards_moving.set(moving);
        metrics
            .cluster
            .backup_users
            .set(users.backups.prune(&table, me) as i64);
        let state = cluster.state();
        for member_state in ["active", "draining", "leaving"] {
            let n = state
                .members
                .values()
                .filter(|m| m.state.as_str() == member_state)
                .count();
            metrics.cluster.members(member_state).set(n as i64);
        }
        if state.removed.contains(&me) {
            on_removed();
        }
        if resumed {
            router.nudge();
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}
