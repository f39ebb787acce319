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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::endpoint::LeaseRenewal;
use super::node::Cluster;
use super::router::NodeId;
use crate::telemetry::Metrics;

/// This node's right to serve the shards its table says it owns. Checked on every
/// command for a local shard: one clock read and one atomic load.
#[derive(Debug)]
pub struct OwnershipLease {
    origin: Instant,
    /// Milliseconds after `origin` until which the lease holds; 0: never held.
    valid_until: AtomicU64,
    lease: Duration,
}

impl OwnershipLease {
    pub fn new(lease: Duration) -> OwnershipLease {
        OwnershipLease {
            origin: Instant::now(),
            valid_until: AtomicU64::new(0),
            lease,
        }
    }

    pub fn duration(&self) -> Duration {
        self.lease
    }

    pub fn is_valid(&self) -> bool {
        self.millis(Instant::now()) < self.valid_until.load(Ordering::Acquire)
    }

    /// Whether this node has held the lease at all since it started.
    pub fn ever_held(&self) -> bool {
        self.valid_until.load(Ordering::Acquire) > 0
    }

    /// Time left on the lease (zero when it has run out).
    #[cfg(test)]
    fn remaining(&self) -> Duration {
        let until = self.valid_until.load(Ordering::Acquire);
        Duration::from_millis(until.saturating_sub(self.millis(Instant::now())))
    }

    /// Holds the lease until `from + lease`, unless it already holds longer.
    pub fn renew_from(&self, from: Instant) {
        let lease = self.lease.as_millis() as u64;
        let until = match from.checked_duration_since(self.origin) {
            Some(after) => after.as_millis() as u64 + lease,
            None => lease.saturating_sub(self.origin.duration_since(from).as_millis() as u64),
        };
        self.valid_until.fetch_max(until, Ordering::AcqRel);
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }
}

/// A member asking the leader for a renewal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub member: u64,
    /// The Raft term the member is in: a leader of an older term must not grant.
    pub term: u64,
}

/// The leader's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseAnswer {
    pub granted: bool,
}

/// The leader's side of renewals: whether it may grant now, and when it last granted
/// each member (the controller fails over members silent for longer than
/// `failover_after`).
#[derive(Debug)]
pub struct Grants {
    origin: Instant,
    /// Milliseconds after `origin` at which the last leadership check that a quorum
    /// confirmed began; 0: none this term.
    confirmed_at: AtomicU64,
    /// How long after a confirmed check this leader may grant.
    grant_window: Duration,
    /// How long after this leader's election a member it never granted may still hold a
    /// lease from its predecessor (see the module doc).
    after_election: Duration,
    view: std::sync::Mutex<Option<LeaderView>>,
}

#[derive(Debug)]
struct LeaderView {
    term: u64,
    since: Instant,
    last_grant: BTreeMap<NodeId, Instant>,
}

impl Grants {
    pub fn new(lease: Duration) -> Grants {
        Grants {
            origin: Instant::now(),
            confirmed_at: AtomicU64::new(0),
            grant_window: renew_interval(lease) * 2,
            after_election: min_failover_after(lease),
            view: std::sync::Mutex::new(None),
        }
    }

    /// Members this leader has not granted for `silent_for`, and those it never granted
    /// once its predecessor's grants have surely run out. Empty on a node that is not
    /// the leader.
    pub fn silent(
        &self,
        members: impl Iterator<Item = NodeId>,
        silent_for: Duration,
    ) -> Vec<NodeId> {
        let view = self.view.lock().expect("not poisoned");
        let Some(view) = view.as_ref() else {
            return Vec::new();
        };
        let now = Instant::now();
        members
            .filter(|id| {
                let (since, wait) = match view.last_grant.get(id) {
                    Some(granted) => (*granted, silent_for),
                    // Its predecessor's last grants run out sooner than `silent_for`
                    // allows: a lease, two rounds and the margin after the election.
                    None => (view.since, silent_for.min(self.after_election)),
                };
                now.saturating_duration_since(since) > wait
            })
            .collect()
    }

    /// Grants `member` a renewal if this node leads in `term` and its leadership was
    /// confirmed recently enough.
    fn grant(&self, member: NodeId, term: u64) -> bool {
        let confirmed = self.confirmed_at.load(Ordering::Acquire);
        let now = Instant::now();
        let fresh = confirmed > 0
            && now.saturating_duration_since(self.origin).as_millis() as u64
                <= confirmed + self.grant_window.as_millis() as u64;
        let mut view = self.view.lock().expect("not poisoned");
        match view.as_mut() {
            Some(view) if fresh && view.term >= term => {
                view.last_grant.insert(member, now);
                true
            }
            _ => false,
        }
    }

    fn lead(&self, term: u64) {
        let mut view = self.view.lock().expect("not poisoned");
        if view.as_ref().is_none_or(|v| v.term != term) {
            self.confirmed_at.store(0, Ordering::Release);
            *view = Some(LeaderView {
                term,
                since: Instant::now(),
                last_grant: BTreeMap::new(),
            });
        }
    }

    fn follow(&self) {
        self.confirmed_at.store(0, Ordering::Release);
        *self.view.lock().expect("not poisoned") = None;
    }

    fn confirmed(&self, check_began: Instant) {
        let millis = check_began
            .saturating_duration_since(self.origin)
            .as_millis() as u64;
        // Never 0, which means "none".
        self.confirmed_at.fetch_max(millis.max(1), Ordering::AcqRel);
    }
}

/// The leader's side of a renewal request from another node.
pub fn on_request(cluster: &Cluster, request: &LeaseRequest) -> LeaseAnswer {
    LeaseAnswer {
        granted: cluster.grants().grant(NodeId(request.member), request.term),
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
        let request = LeaseRequest { member: me.0, term };
        let granted = if leader == me {
            on_request(&cluster, &request).granted
        } else {
            match cluster.cluster_addr_of(leader) {
                Some(addr) => cluster
                    .peers()
                    .call::<LeaseRenewal>(&addr, &request, renew_every)
                    .await
                    .is_ok_and(|answer| answer.granted),
                None => false,
            }
        };
        if granted {
            let was_valid = cluster.lease().is_valid();
            cluster.lease().renew_from(sent);
            if !was_valid {
                // Requests that arrived before the first lease wait for it.
                cluster.replica().router.nudge();
            }
        }
    }
}

/// How often the leader renews: often enough that a lost round or two does not let a
/// lease run out.
pub fn renew_interval(lease: Duration) -> Duration {
    lease / 8
}

/// The shortest `failover_after` that is safe with `lease` (see the module doc): the lease,
/// two rounds, a round trip, and a margin for clock rates.
pub fn min_failover_after(lease: Duration) -> Duration {
    lease + lease / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_from_its_renewal_for_its_duration_and_never_shrinks() {
        let lease = OwnershipLease::new(Duration::from_secs(4));
        assert!(!lease.is_valid(), "not held before the first renewal");
        lease.renew_from(Instant::now());
        assert!(lease.is_valid());
        assert!(lease.remaining() > Duration::from_secs(3));
        // An older renewal arriving late does not shorten it.
        let remaining = lease.remaining();
        lease.renew_from(Instant::now() - Duration::from_secs(3));
        assert!(lease.remaining() >= remaining - Duration::from_millis(50));
    }

    #[test]
    fn a_renewal_long_past_gives_no_lease() {
        let lease = OwnershipLease::new(Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(20));
        lease.renew_from(Instant::now() - Duration::from_secs(2));
        assert!(!lease.is_valid());
    }

    #[test]
    fn failover_waits_out_the_lease_with_room_to_spare() {
        let lease = Duration::from_secs(4);
        assert!(min_failover_after(lease) > lease + 2 * renew_interval(lease));
    }

    #[test]
    fn a_leader_grants_only_soon_after_a_confirmed_check_and_counts_silence_from_its_election() {
        let grants = Grants::new(Duration::from_secs(4));
        let members = [NodeId(1), NodeId(2)];
        assert!(!grants.grant(NodeId(1), 3), "not a leader");
        assert!(
            grants
                .silent(members.into_iter(), Duration::ZERO)
                .is_empty()
        );
        grants.lead(3);
        assert!(!grants.grant(NodeId(1), 3), "leadership not confirmed yet");
        grants.confirmed(Instant::now());
        assert!(!grants.grant(NodeId(1), 4), "the member is in a newer term");
        std::thread::sleep(Duration::from_millis(60));
        assert!(grants.grant(NodeId(1), 3));
        assert_eq!(
            grants.silent(members.into_iter(), Duration::from_millis(40)),
            vec![NodeId(2)],
            "node 2 was never granted"
        );
        assert!(
            grants
                .silent(members.into_iter(), Duration::from_secs(60))
                .is_empty()
        );
        // A leadership check long past allows no grant.
        let stale = Grants::new(Duration::from_millis(80));
        stale.lead(1);
        stale.confirmed(Instant::now());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!stale.grant(NodeId(1), 1));
    }
}
