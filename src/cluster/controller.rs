//! What the leader does to keep the cluster in shape: fail over the shards of members
//! that stopped renewing their leases, finish moves a previous leader began, remove
//! members that have left, promote caught-up learners while voters are
//! wanted, and move shards a batch at a time until every active member holds its share.
//! Every node runs this loop; only the leader acts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::balance;
use super::endpoint::endpoint;
use super::ids::{MemberState, NodeId, ShardId, ShardMove};
use super::node::{Cluster, ClusterError};
use super::types::{Request, Response};
use crate::telemetry::Metrics;

/// Asks the old owner of shards to hand them to `to`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportRequest {
    pub to: u64,
    /// The shards, each with the epoch the old owner holds it at.
    pub shards: Vec<(ShardId, u64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportDone {
    /// Users whose live slots went to the new owner.
    pub users: usize,
}

endpoint!(
    /// The leader asks a shard's old owner to hand it to its new owner.
    HandoffExport, Post "/cluster/handoff/export", ExportRequest => ExportDone
);

/// Runs for the node's life.
pub async fn run(cluster: Cluster, metrics: Arc<Metrics>) {
    let mut raft_metrics = cluster.raft().metrics();
    let mut changes = cluster.replica().router.subscribe();
    let mut failures = 0u32;
    loop {
        if cluster.is_leader() {
            match reconcile(&cluster, &metrics).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "cluster controller: will retry");
                    tokio::time::sleep(crate::retry::backoff(
                        failures,
                        Duration::from_millis(200),
                        Duration::from_secs(5),
                    ))
                    .await;
                }
            }
        }
        tokio::select! {
            changed = raft_metrics.changed() => if changed.is_err() { return },
            _ = changes.changed() => {},
            // Often enough that a failover comes soon after `failover_after`.
            _ = tokio::time::sleep(Duration::from_millis(250)) => {},
        }
    }
}

/// One step towards the cluster the state asks for.
async fn reconcile(cluster: &Cluster, metrics: &Metrics) -> Result<(), ClusterError> {
    let state = cluster.state();
    if state.shards.is_empty() {
        return Ok(());
    }
    if step_down_if_leaving(cluster).await? {
        return Ok(());
    }
    let silent = cluster.silent_members();
    if state.shards.iter().any(|o| silent.contains(&o.node)) {
        return failover(cluster, metrics, &silent).await;
    }
    if !state.moves.is_empty() {
        let moves: Vec<ShardMove> = state.moves.values().copied().collect();
        return drive(cluster, metrics, moves).await;
    }
    let counts = state.shard_counts();
    let gone = state
        .members
        .iter()
        .find(|(id, m)| m.state == MemberState::Leaving && counts.get(id) == Some(&0));
    if let Some((id, _)) = gone {
        return remove(cluster, *id).await;
    }
    promote(cluster).await?;
    let owners: Vec<NodeId> = state.shards.iter().map(|o| o.node).collect();
    let live: Vec<NodeId> = state
        .active_members()
        .into_iter()
        .filter(|id| !silent.contains(id))
        .collect();
    let moves = balance::plan(&owners, &live);
    if moves.is_empty() {
        return Ok(());
    }
    let batch: Vec<ShardMove> = moves
        .into_iter()
        .take(cluster.settings().handoff_batch)
        .collect();
    tracing::info!(
        shards = batch.len(),
        "rebalancing: moving a batch of shards"
    );
    cluster.write(Request::BeginMoves { moves: batch }).await?;
    // Only the moves the state took: it drops those aimed at a node no longer active.
    let begun: Vec<ShardMove> = cluster.state().moves.values().copied().collect();
    drive(cluster, metrics, begun).await
}

/// Moves every shard of the silent members to its backup (or, when the backup is silent
/// too, to the live member with the fewest shards). The members stay: one that comes
/// back catches up and gets shards again by rebalancing.
async fn failover(
    cluster: &Cluster,
    metrics: &Metrics,
    silent: &BTreeSet<NodeId>,
) -> Result<(), ClusterError> {
    let state = cluster.state();
    let live: Vec<NodeId> = state
        .active_members()
        .into_iter()
        .filter(|id| !silent.contains(id))
        .collect();
    let mut load: BTreeMap<NodeId, usize> = state
        .shard_counts()
        .into_iter()
        .filter(|(id, _)| live.contains(id))
        .collect();
    for node in silent {
        let mut shards = Vec::new();
        for (index, owner) in state.shards.iter().enumerate() {
            if owner.node != *node {
                continue;
            }
            let shard = ShardId(index as u32);
            let to = state
                .backup_of(shard)
                .filter(|b| live.contains(b))
                .or_else(|| load.iter().min_by_key(|(_, n)| **n).map(|(id, _)| *id));
            let Some(to) = to else {
                tracing::error!(
                    node = node.0,
                    "failover: no live member can take the shards"
                );
                return Ok(());
            };
            *load.entry(to).or_default() += 1;
            shards.push((shard.0, to.0));
        }
        if shards.is_empty() {
            continue;
        }
        tracing::warn!(
            node_id = node.0,
            shards = shards.len(),
            silent_for_ms = cluster.settings().failover_after.as_millis() as u64,
            "failover: a member stopped renewing its lease; its shards go to their backups"
        );
        let count = shards.len() as u64;
        cluster
            .write(Request::Failover {
                node: node.0,
                shards,
            })
            .await?;
        metrics.cluster.failover_shards.inc_by(count);
    }
    Ok(())
}

/// Has the old owners hand the shards over, then commits the new owners (or gives the
/// moves up, leaving the shards where they were).
async fn drive(
    cluster: &Cluster,
    metrics: &Metrics,
    moves: Vec<ShardMove>,
) -> Result<(), ClusterError> {
    let state = cluster.state();
    let mut groups: BTreeMap<(NodeId, NodeId), Vec<ShardId>> = BTreeMap::new();
    for m in &moves {
        groups.entry((m.from, m.to)).or_default().push(m.shard);
    }
    let timeout = cluster.settings().handoff_wait * 2 + Duration::from_secs(10);
    for ((from, to), shards) in groups {
        let started = Instant::now();
        let numbers: Vec<u32> = shards.iter().map(|s| s.0).collect();
        let request = ExportRequest {
            to: to.0,
            shards: shards
                .iter()
                .map(|s| (*s, state.owner(*s).map_or(0, |o| o.epoch)))
                .collect(),
        };
        let exported = match cluster.cluster_addr_of(from) {
            Some(addr) => cluster
                .peers()
                .call::<HandoffExport>(&addr, &request, timeout)
                .await
                .map_err(ClusterError::from),
            None => Err(ClusterError::Failed(format!("node {from} has no address"))),
        };
        match exported {
            Ok(done) => {
                cluster
                    .write(Request::FinishMoves { shards: numbers })
                    .await?;
                metrics
                    .cluster
                    .handoff_duration
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(
                    from = from.0,
                    to = to.0,
                    shards = shards.len(),
                    users = done.users,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "shards handed over"
                );
            }
            Err(e) => {
                tracing::warn!(from = from.0, to = to.0, error = %e, "handoff failed; shards stay");
                metrics.cluster.handoff_failures.inc();
                cluster
                    .write(Request::AbortMoves { shards: numbers })
                    .await?;
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Removes a member that has left: first from the member list (so it learns it is gone
/// while it still receives the log), then from the Raft membership.
async fn remove(cluster: &Cluster, node: NodeId) -> Result<(), ClusterError> {
    let (response, index) = cluster
        .write_indexed(Request::Remove { id: node.0 })
        .await?;
    if let Response::Refused(refusal) = response {
        return Err(refusal.into());
    }
    if node != cluster.id() {
        wait_replicated(cluster, node, index, Duration::from_secs(5)).await;
    }
    let voter = voter_ids(cluster).contains(&node.0);
    let ids = [node.0].into_iter().collect();
    let change = if voter {
        ChangeMembers::RemoveVoters(ids)
    } else {
        ChangeMembers::RemoveNodes(ids)
    };
    tracing::info!(
        node_id = node.0,
        voter,
        "removing a node from the Raft membership"
    );
    cluster.change_membership(change, false).await
}

async fn wait_replicated(cluster: &Cluster, node: NodeId, index: u64, wait: Duration) {
    let started = Instant::now();
    let mut metrics = cluster.raft().metrics();
    while started.elapsed() < wait {
        let matched = metrics
            .borrow()
            .replication
            .as_ref()
            .and_then(|r| r.get(&node.0).copied().flatten())
            .map_or(0, |id| id.index);
        if matched >= index {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), metrics.changed()).await;
    }
}

/// A leader that is leaving gives its vote up before its shards move, so that leadership
/// moves first and the rest of the leave (handoffs, removal) is driven by its successor.
/// openraft 0.9 has no leadership transfer, and a leader that is no longer a voter goes on
/// leading; so it also stops its heartbeats, the voters' leases run out, and they elect
/// another. It stays a learner, following the log until it is removed. Returns whether
/// this node has handed leadership over (and must not act as leader meanwhile).
async fn step_down_if_leaving(cluster: &Cluster) -> Result<bool, ClusterError> {
    let me = cluster.id();
    let leaving = cluster
        .state()
        .members
        .get(&me)
        .is_some_and(|m| m.state == MemberState::Leaving);
    if !leaving {
        return Ok(false);
    }
    let mut voters = voter_ids(cluster);
    if voters.remove(&me.0) {
        if voters.is_empty() {
            // The only voter: the vote goes to a caught-up learner if there is one; else
            // this node stays leader to the end and removes itself last.
            match caught_up_active_learner(cluster) {
                Some(id) => voters.insert(id),
                None => return Ok(false),
            };
        }
        tracing::info!(
            node_id = me.0,
            voters = ?voters,
            "leaving: giving up leadership before the shards move"
        );
        cluster
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
            .await?;
    }
    cluster.raft().runtime_config().heartbeat(false);
    Ok(true)
}

/// The Raft voters, as this node knows the membership.
fn voter_ids(cluster: &Cluster) -> BTreeSet<u64> {
    cluster
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// An active member that is a learner and has (nearly) all of the leader's log.
fn caught_up_active_learner(cluster: &Cluster) -> Option<u64> {
    let metrics = cluster.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let state = cluster.state();
    let last = metrics.last_log_index.unwrap_or(0);
    let caught_up = |id: u64| {
        metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).copied().flatten())
            .is_some_and(|matched| matched.index + 20 >= last)
    };
    membership.learner_ids().find(|id| {
        state
            .members
            .get(&NodeId(*id))
            .is_some_and(|m| m.state == MemberState::Active)
            && caught_up(*id)
    })
}

/// Makes a caught-up active learner a voter while fewer voters than wanted.
async fn promote(cluster: &Cluster) -> Result<(), ClusterError> {
    if voter_ids(cluster).len() >= cluster.settings().voters {
        return Ok(());
    }
    if let Some(id) = caught_up_active_learner(cluster) {
        tracing::info!(node_id = id, "promoting a learner to voter");
        cluster
            .change_membership(
                ChangeMembers::AddVoterIds([id].into_iter().collect()),
                false,
            )
            .await?;
    }
    Ok(())
}
