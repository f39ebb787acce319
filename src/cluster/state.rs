//! The cluster's metadata and how each Raft command changes it. Pure: no I/O, no async,
//! so every node that applies the same log reaches the same state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ids::{MemberState, NodeId, ShardId, ShardMove};
use super::types::{NodeAddr, Refusal, Request, Response};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub addr: NodeAddr,
    pub state: MemberState,
}

/// Who owns a shard, and since when: the epoch rises each time it changes hands, so a
/// command sent with an older epoch is known to have been routed on a stale table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOwner {
    pub node: NodeId,
    pub epoch: u64,
    /// The shard came to `node` by failover (not a handoff): its users' state is in the
    /// node's backup copy, not in an import.
    #[serde(default)]
    pub by_failover: bool,
}

/// Everything Raft keeps but the trailers (kept beside it, since they are read per
/// request and never needed by routing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub members: BTreeMap<NodeId, Member>,
    /// Ids that were removed and must never come back.
    pub removed: BTreeSet<NodeId>,
    /// Owner of every shard; empty until the cluster is initialized.
    pub shards: Vec<ShardOwner>,
    /// Moves begun and not yet finished or aborted, by shard.
    pub moves: BTreeMap<ShardId, ShardMove>,
}

impl ClusterState {
    /// Applies one command. Refusals change nothing.
    pub fn apply(&mut self, request: &Request) -> Response {
        match request {
            Request::Join { id, addr } => {
                let id = NodeId(*id);
                if self.removed.contains(&id) {
                    return Response::Refused(Refusal::Removed { node: id.0 });
                }
                // A restart ends a drain, never a leave.
                let state = match self.members.get(&id) {
                    Some(m) if m.state == MemberState::Leaving => MemberState::Leaving,
                    _ => MemberState::Active,
                };
                self.members.insert(
                    id,
                    Member {
                        addr: addr.clone(),
                        state,
                    },
                );
            }
            Request::SetState { id, state } => {
                let Some(member) = self.members.get_mut(&NodeId(*id)) else {
                    return Response::Refused(Refusal::NotMember { node: *id });
                };
                // Leaving is final: a drain must not turn a leave back into a stay.
                if member.state != MemberState::Leaving || *state == MemberState::Leaving {
                    member.state = *state;
                }
            }
            Request::Remove { id } => {
                let id = NodeId(*id);
                if self.shards.iter().any(|s| s.node == id) {
                    return Response::Refused(Refusal::OwnsShards { node: id.0 });
                }
                self.members.remove(&id);
                self.removed.insert(id);
                self.moves.retain(|_, m| m.to != id && m.from != id);
            }
            Request::AssignAll { id, shards } => {
                if !self.shards.is_empty() {
                    return Response::Refused(Refusal::AlreadyAssigned);
                }
                self.shards = vec![
                    ShardOwner {
                        node: NodeId(*id),
                        epoch: 1,
                        by_failover: false,
                    };
                    *shards as usize
                ];
            }
            Request::BeginMoves { moves } => {
                // A plan made on an older state may aim at a node that has started to
                // drain or leave since: such moves are dropped.
                for m in moves {
                    let current = self.shards.get(m.shard.0 as usize);
                    let to_active = self
                        .members
                        .get(&m.to)
                        .is_some_and(|member| member.state == MemberState::Active);
                    if current.is_some_and(|owner| owner.node == m.from) && to_active {
                        self.moves.insert(m.shard, *m);
                    }
                }
            }
            Request::FinishMoves { shards } => {
                for shard in shards {
                    let shard = ShardId(*shard);
                    if let Some(m) = self.moves.remove(&shard)
                        && let Some(owner) = self.shards.get_mut(shard.0 as usize)
                    {
                        owner.node = m.to;
                        owner.epoch += 1;
                        owner.by_failover = false;
                    }
                }
            }
            Request::AbortMoves { shards } => {
                for shard in shards {
                    self.moves.remove(&ShardId(*shard));
                }
            }
            Request::Failover { node, shards } => {
                let from = NodeId(*node);
                for (shard, to) in shards {
                    let shard = ShardId(*shard);
                    let to = NodeId(*to);
                    let Some(owner) = self.shards.get_mut(shard.0 as usize) else {
                        continue;
                    };
                    // Only what the silent node still owns, and only to a member.
                    if owner.node == from && to != from && self.members.contains_key(&to) {
                        *owner = ShardOwner {
                            node: to,
                            epoch: owner.epoch + 1,
                            by_failover: true,
                        };
                        self.moves.remove(&shard);
                    }
                }
                // Nothing moves to a node that cannot take it.
                self.moves.retain(|_, m| m.to != from);
            }
            // Trailers live beside this state; the state machine stores them.
            Request::PutTrailer { .. } => {}
        }
        Response::Applied
    }

    pub fn owner(&self, shard: ShardId) -> Option<ShardOwner> {
        self.shards.get(shard.0 as usize).copied()
    }

    /// Shards owned, by node (members that own none are listed with 0).
    pub fn shard_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.members.keys().map(|id| (*id, 0)).collect();
        for owner in &self.shards {
            *counts.entry(owner.node).or_default() += 1;
        }
        counts
    }

    /// The node that keeps a backup of the shard's users: another active member, spread
    /// evenly over the others by shard number. `None` when there is no other.
    pub fn backup_of(&self, shard: ShardId) -> Option<NodeId> {
        let owner = self.owner(shard)?.node;
        backup_among(&self.active_members(), owner, shard)
    }

    /// Members that should own shards.
    pub fn active_members(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.state == MemberState::Active)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// The backup of `shard`, owned by `owner`, among the `active` members (sorted).
pub fn backup_among(active: &[NodeId], owner: NodeId, shard: ShardId) -> Option<NodeId> {
    let others = active.len() - usize::from(active.contains(&owner));
    if others == 0 {
        return None;
    }
    active
        .iter()
        .filter(|id| **id != owner)
        .nth(shard.0 as usize % others)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> NodeAddr {
        NodeAddr {
            player_addr: format!("127.0.0.1:{port}"),
            cluster_addr: format!("127.0.0.1:{}", port + 1),
        }
    }

    fn two_nodes() -> ClusterState {
        let mut state = ClusterState::default();
        state.apply(&Request::Join {
            id: 1,
            addr: addr(1000),
        });
        state.apply(&Request::AssignAll { id: 1, shards: 4 });
        state.apply(&Request::Join {
            id: 2,
            addr: addr(2000),
        });
        state
    }

    #[test]
    fn a_move_changes_the_owner_and_raises_the_epoch_only_when_finished() {
        let mut state = two_nodes();
        let m = ShardMove {
            shard: ShardId(3),
            from: NodeId(1),
            to: NodeId(2),
        };
        state.apply(&Request::BeginMoves { moves: vec![m] });
        assert_eq!(state.owner(ShardId(3)).unwrap().node, NodeId(1));
        assert_eq!(state.moves.len(), 1);
        state.apply(&Request::FinishMoves { shards: vec![3] });
        let owner = state.owner(ShardId(3)).unwrap();
        assert_eq!((owner.node, owner.epoch), (NodeId(2), 2));
        assert!(state.moves.is_empty());
        // Finishing again is a no-op: the epoch does not rise twice.
        state.apply(&Request::FinishMoves { shards: vec![3] });
        assert_eq!(state.owner(ShardId(3)).unwrap().epoch, 2);
    }

    #[test]
    fn a_move_from_a_node_that_is_not_the_owner_is_ignored() {
        let mut state = two_nodes();
        state.apply(&Request::BeginMoves {
            moves: vec![ShardMove {
                shard: ShardId(0),
                from: NodeId(2),
                to: NodeId(1),
            }],
        });
        assert!(state.moves.is_empty());
    }

    #[test]
    fn no_move_goes_to_a_node_that_drains() {
        let mut state = two_nodes();
        state.apply(&Request::SetState {
            id: 2,
            state: MemberState::Draining,
        });
        state.apply(&Request::BeginMoves {
            moves: vec![ShardMove {
                shard: ShardId(1),
                from: NodeId(1),
                to: NodeId(2),
            }],
        });
        assert!(state.moves.is_empty());
    }

    #[test]
    fn a_removed_id_never_comes_back() {
        let mut state = two_nodes();
        assert_eq!(state.apply(&Request::Remove { id: 2 }), Response::Applied);
        assert!(matches!(
            state.apply(&Request::Join {
                id: 2,
                addr: addr(3000)
            }),
            Response::Refused(Refusal::Removed { node: 2 })
        ));
        assert!(!state.members.contains_key(&NodeId(2)));
        // A node that owns shards cannot be removed.
        assert!(matches!(
            state.apply(&Request::Remove { id: 1 }),
            Response::Refused(Refusal::OwnsShards { node: 1 })
        ));
    }

    #[test]
    fn a_failover_moves_only_what_the_silent_node_owns_and_marks_it() {
        let mut state = two_nodes();
        state.apply(&Request::BeginMoves {
            moves: vec![ShardMove {
                shard: ShardId(1),
                from: NodeId(1),
                to: NodeId(2),
            }],
        });
        state.apply(&Request::FinishMoves { shards: vec![1] });
        state.apply(&Request::BeginMoves {
            moves: vec![ShardMove {
                shard: ShardId(2),
                from: NodeId(1),
                to: NodeId(2),
            }],
        });
        // Node 1 falls silent: its shards 0 and 2 go to 2; shard 1 is 2's already.
        state.apply(&Request::Failover {
            node: 1,
            shards: vec![(0, 2), (1, 1), (2, 2)],
        });
        let owner = |s| state.owner(ShardId(s)).unwrap();
        assert_eq!(
            (owner(0).node, owner(0).epoch, owner(0).by_failover),
            (NodeId(2), 2, true)
        );
        assert_eq!(
            (owner(1).node, owner(1).epoch, owner(1).by_failover),
            (NodeId(2), 2, false)
        );
        assert_eq!(owner(2).node, NodeId(2));
        assert!(
            state.moves.is_empty(),
            "the move of a failed-over shard is over"
        );
        assert_eq!(owner(3).node, NodeId(1), "only the shards listed move");
        // It stays a member: it may come back.
        assert!(state.members.contains_key(&NodeId(1)));
    }

    #[test]
    fn backups_are_other_active_members_spread_by_shard() {
        let mut state = two_nodes();
        state.apply(&Request::Join {
            id: 3,
            addr: addr(3000),
        });
        let backups: Vec<_> = (0..4)
            .map(|s| state.backup_of(ShardId(s)).unwrap())
            .collect();
        assert_eq!(backups, [NodeId(2), NodeId(3), NodeId(2), NodeId(3)]);
        let alone = {
            let mut one = ClusterState::default();
            one.apply(&Request::Join {
                id: 1,
                addr: addr(1),
            });
            one.apply(&Request::AssignAll { id: 1, shards: 2 });
            one
        };
        assert_eq!(alone.backup_of(ShardId(0)), None);
    }

    #[test]
    fn leaving_is_not_undone_by_a_drain() {
        let mut state = two_nodes();
        state.apply(&Request::SetState {
            id: 2,
            state: MemberState::Leaving,
        });
        state.apply(&Request::SetState {
            id: 2,
            state: MemberState::Draining,
        });
        assert_eq!(state.members[&NodeId(2)].state, MemberState::Leaving);
    }
}
