//! Fenced shard ownership: a node serves its shards only while it holds an ownership
//! lease, and the leader hands a silent node's shards to others only once that node's
//! lease has surely run out. So two nodes never serve one shard at the same time, even
//! when a node is cut off and still believes its (stale) shard table.
//!
//! Every node asks the leader for a renewal each `renew_every` (an eighth of the lease)
//! and, when granted, holds its lease until the time it *sent* the request plus
//! `ownership_lease`. Timing from its own send time makes a late or lost answer harmless:
//! the leader granted after the request was sent, so the member's lease ends before
//! `grant + ownership_lease` on the leader's clock, however long the answer took. The
//! leader records when it last granted each member and takes a member's shards only after
//! `failover_after` without a grant.
//!
//! A leader grants only while it knows it still leads: each round it confirms its
//! leadership with openraft's read-index check (`get_read_log_id`: a heartbeat that a
//! quorum of voters must acknowledge), and it grants only within `2 × renew_every` of the
//! start of the last confirmed check. A deposed leader that has not noticed yet (cut off
//! with a minority) therefore stops granting soon after its successor's election: the
//! voters that elected the successor acknowledged its last check *before* they voted.
//! Its last grants end at most a lease and two rounds after that election; a new leader
//! does not know when its predecessor last granted anyone, so it counts every member as
//! granted at its own election, and `failover_after` is validated to exceed the lease by
//! those two rounds and a margin. (It waits only that minimum, not all of
//! `failover_after`, for members it never heard from: its predecessor's grants end at
//! most a lease and two rounds after the election, whatever `failover_after` says.)
//!
//! All times are each node's own monotonic clock; only durations are compared across
//! nodes, and the margin in `failover_after` covers clocks that run at slightly
//! different rates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::endpoint::endpoint;
use super::ids::{NodeId, ShardId};
use super::node::Cluster;
use crate::domain::lease::renew_interval;
use crate::telemetry::Metrics;

/// A member asking the leader for a renewal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub member: u64,
    /// The Raft term the member is in: a leader of an older term must not grant.
    pub term: u64,
    /// The member has held no lease since its process started: whatever it held in
    /// memory (its users' slots) is gone. (Absent from an earlier release: `false`.)
    #[serde(default)]
    pub fresh: bool,
}

/// The leader's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseAnswer {
    pub granted: bool,
    /// The last log index the leader had applied when it granted: the member takes the
    /// lease only once it has applied as much, so that it never serves from a table
    /// older than the leader's (one from before a failover of its shards). (Absent from
    /// an earlier release: 0.)
    #[serde(default)]
    pub applied: u64,
}

endpoint!(
    /// A member asks the leader to renew its ownership lease.
    LeaseRenewal, Post "/cluster/lease", LeaseRequest => LeaseAnswer
);

/// The leader's side of a renewal request from another node.
pub fn on_request(cluster: &Cluster, request: &LeaseRequest) -> LeaseAnswer {
    let member = NodeId(request.member);
    let applied = cluster.replica().router.table().version;
    if request.fresh {
        // A member that restarted holds none of the slots its shards had: those are on
        // the shards' backups. It gets a lease once its shards have failed over to them.
        // (A backup that restarted too holds nothing: when the whole cluster restarts,
        // every member gets its lease back with its shards, empty.)
        let state = cluster.state();
        let restarted = cluster.grants().restarted_members();
        let owns_backed_up_shards = state.shards.iter().enumerate().any(|(index, owner)| {
            owner.node == member
                && state
                    .backup_of(ShardId(index as u32))
                    .is_some_and(|backup| !restarted.contains(&backup))
        });
        cluster.grants().restarted(member, owns_backed_up_shards);
        if owns_backed_up_shards {
            return LeaseAnswer {
                granted: false,
                applied,
            };
        }
    }
    LeaseAnswer {
        granted: cluster.grants().grant(member, request.term),
        applied,
    }
}

/// Runs for the node's life: confirms leadership while this node leads, and renews this
/// node's own lease with whoever leads.
pub async fn keep_lease(cluster: Cluster, metrics: Arc<Metrics>) {
    let renew_every = renew_interval(cluster.lease().duration());
    let mut next_round = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(next_round).await;
        // Without a lease (starting, or after a leader change) try again soon: requests
        // for this node's shards wait or fail meanwhile.
        let wait = if cluster.lease().is_valid() {
            renew_every
        } else {
            renew_every.min(Duration::from_millis(50))
        };
        next_round = tokio::time::Instant::now() + wait;
        metrics
            .cluster
            .lease_valid
            .set(i64::from(cluster.lease().is_valid()));
        let me = cluster.id();
        let (leads, term, leader) = {
            let metrics = cluster.raft().metrics();
            let metrics = metrics.borrow();
            // A leader that gave its vote up is stepping down (see the controller): its
            // leadership checks would count as heartbeats and hold off the election.
            let voter = metrics
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == me.0);
            (
                metrics.state == ServerState::Leader && voter,
                metrics.current_term,
                metrics.current_leader,
            )
        };
        if leads {
            cluster.grants().lead(term);
            let began = Instant::now();
            let check = tokio::time::timeout(renew_every * 2, cluster.raft().get_read_log_id());
            if let Ok(Ok(_)) = check.await {
                cluster.grants().confirmed(began);
            }
        } else {
            cluster.grants().follow();
        }
        let Some(leader) = leader.map(NodeId) else {
            continue;
        };
        let sent = Instant::now();
        let request = LeaseRequest {
            member: me.0,
            term,
            fresh: !cluster.lease().ever_held(),
        };
        let answer = if leader == me {
            Some(on_request(&cluster, &request))
        } else {
            match cluster.cluster_addr_of(leader) {
                Some(addr) => cluster
                    .peers()
                    .call::<LeaseRenewal>(&addr, &request, renew_every)
                    .await
                    .ok(),
                None => None,
            }
        };
        let Some(answer) = answer.filter(|answer| answer.granted) else {
            continue;
        };
        // Timed from the send all the same: waiting to catch up only shortens it.
        let router = &cluster.replica().router;
        let caught_up = router
            .wait_for(
                |table| table.version >= answer.applied,
                tokio::time::Instant::now() + renew_every,
            )
            .await
            .is_some();
        if caught_up {
            let was_valid = cluster.lease().is_valid();
            cluster.lease().renew_from(sent);
            if !was_valid {
                // Requests that arrived before the first lease wait for it.
                cluster.replica().router.nudge();
            }
        }
    }
}
