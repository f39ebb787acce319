//! Who may serve: this node's ownership lease, and the leader's record of the leases it
//! granted. The protocol that renews them, and why it keeps two nodes from serving one
//! shard, is in `lease`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::ids::NodeId;
use crate::domain::lease::{min_failover_after, renew_interval};

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
    /// lease from its predecessor (see `lease`).
    after_election: Duration,
    view: std::sync::Mutex<Option<LeaderView>>,
}

#[derive(Debug)]
struct LeaderView {
    term: u64,
    since: Instant,
    last_grant: BTreeMap<NodeId, Instant>,
    /// Members that started afresh (their users' slots gone with their memory) while
    /// still owning shards that backups hold: their shards fail over before they get a
    /// lease, so they never serve those shards empty.
    restarted: BTreeSet<NodeId>,
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
    pub(super) fn grant(&self, member: NodeId, term: u64) -> bool {
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

    pub(super) fn lead(&self, term: u64) {
        let mut view = self.view.lock().expect("not poisoned");
        if view.as_ref().is_none_or(|v| v.term != term) {
            self.confirmed_at.store(0, Ordering::Release);
            *view = Some(LeaderView {
                term,
                since: Instant::now(),
                last_grant: BTreeMap::new(),
                restarted: BTreeSet::new(),
            });
        }
    }

    /// Records whether `member`, asking afresh, still owns shards a backup holds.
    pub(super) fn restarted(&self, member: NodeId, owns_backed_up_shards: bool) {
        let mut view = self.view.lock().expect("not poisoned");
        if let Some(view) = view.as_mut() {
            if owns_backed_up_shards {
                view.restarted.insert(member);
            } else {
                view.restarted.remove(&member);
            }
        }
    }

    /// Members whose shards must fail over because they restarted (see `restarted`).
    pub(super) fn restarted_members(&self) -> BTreeSet<NodeId> {
        let view = self.view.lock().expect("not poisoned");
        view.as_ref()
            .map(|view| view.restarted.clone())
            .unwrap_or_default()
    }

    pub(super) fn follow(&self) {
        self.confirmed_at.store(0, Ordering::Release);
        *self.view.lock().expect("not poisoned") = None;
    }

    pub(super) fn confirmed(&self, check_began: Instant) {
        let millis = check_began
            .saturating_duration_since(self.origin)
            .as_millis() as u64;
        // Never 0, which means "none".
        self.confirmed_at.fetch_max(millis.max(1), Ordering::AcqRel);
    }
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
