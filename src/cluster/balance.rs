//! Where shards should live: a balanced assignment that moves the fewest shards. Pure.

use std::collections::BTreeMap;

use super::ids::{NodeId, ShardId, ShardMove};

/// The moves that take `owners` (the owner of each shard) to a balanced assignment over
/// `nodes`: every node ends with ⌊S/n⌋ or ⌈S/n⌉ shards, and no shard moves that need not.
/// Shards of nodes not in `nodes` (draining, leaving) all move. Deterministic, so a new
/// leader that plans again reaches the same moves.
pub fn plan(owners: &[NodeId], nodes: &[NodeId]) -> Vec<ShardMove> {
    if nodes.is_empty() || owners.is_empty() {
        return Vec::new();
    }
    let mut held: BTreeMap<NodeId, Vec<ShardId>> = nodes.iter().map(|n| (*n, Vec::new())).collect();
    let mut homeless: Vec<(ShardId, NodeId)> = Vec::new();
    for (index, owner) in owners.iter().enumerate() {
        let shard = ShardId(index as u32);
        match held.get_mut(owner) {
            Some(shards) => shards.push(shard),
            None => homeless.push((shard, *owner)),
        }
    }
    // The nodes that hold most keep the larger quotas: that is what keeps moves minimal.
    let mut by_size: Vec<NodeId> = nodes.to_vec();
    by_size.sort_by_key(|n| (std::cmp::Reverse(held[n].len()), *n));
    let base = owners.len() / nodes.len();
    let extra = owners.len() % nodes.len();
    let quota: BTreeMap<NodeId, usize> = by_size
        .iter()
        .enumerate()
        .map(|(rank, n)| (*n, base + usize::from(rank < extra)))
        .collect();
    // Surplus leaves from the end of each node's list, so the same shards stay put.
    for (node, shards) in held.iter_mut() {
        while shards.len() > quota[node] {
            let shard = shards.pop().expect("longer than its quota");
            homeless.push((shard, *node));
        }
    }
    homeless.sort_by_key(|(shard, _)| *shard);
    let mut moves = Vec::with_capacity(homeless.len());
    let mut homeless = homeless.into_iter();
    for node in &by_size {
        let room = quota[node] - held[node].len();
        for (shard, from) in homeless.by_ref().take(room) {
            moves.push(ShardMove {
                shard,
                from,
                to: *node,
            });
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(owners: &[NodeId]) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for o in owners {
            *counts.entry(*o).or_default() += 1;
        }
        counts
    }

    fn apply(owners: &mut [NodeId], moves: &[ShardMove]) {
        for m in moves {
            assert_eq!(owners[m.shard.0 as usize], m.from);
            owners[m.shard.0 as usize] = m.to;
        }
    }

    #[test]
    fn a_third_node_takes_a_third_and_only_that() {
        let mut owners: Vec<NodeId> = (0..1024).map(|i| NodeId(1 + i % 2)).collect();
        let moves = plan(&owners, &[NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(moves.len(), 341);
        assert!(moves.iter().all(|m| m.to == NodeId(3)));
        apply(&mut owners, &moves);
        let mut sizes: Vec<usize> = counts(&owners).into_values().collect();
        sizes.sort();
        assert_eq!(sizes, [341, 341, 342]);
        assert!(plan(&owners, &[NodeId(1), NodeId(2), NodeId(3)]).is_empty());
    }

    #[test]
    fn a_draining_node_gives_everything_away_evenly() {
        let mut owners: Vec<NodeId> = (0..1024).map(|i| NodeId(1 + i % 3)).collect();
        let moves = plan(&owners, &[NodeId(1), NodeId(3)]);
        assert_eq!(moves.len(), 341);
        apply(&mut owners, &moves);
        assert_eq!(counts(&owners)[&NodeId(1)], 512);
        assert_eq!(counts(&owners)[&NodeId(3)], 512);
    }

    #[test]
    fn every_size_ends_balanced_with_minimal_moves() {
        for n_before in 1..=6u64 {
            for n_after in 1..=6u64 {
                let mut owners: Vec<NodeId> = (0..1000).map(|i| NodeId(1 + i % n_before)).collect();
                let nodes: Vec<NodeId> = (1..=n_after).map(NodeId).collect();
                let moves = plan(&owners, &nodes);
                apply(&mut owners, &moves);
                let c = counts(&owners);
                let (lo, hi) = (
                    1000 / n_after as usize,
                    1000_usize.div_ceil(n_after as usize),
                );
                assert!(c.values().all(|k| *k == lo || *k == hi), "{c:?}");
                // Lower bound on moves: what nodes held beyond their ceiling, plus every
                // shard of a node that is gone.
                let before: Vec<NodeId> = (0..1000).map(|i| NodeId(1 + i % n_before)).collect();
                let floor: usize = counts(&before)
                    .iter()
                    .map(|(n, k)| {
                        if n.0 > n_after {
                            *k
                        } else {
                            k.saturating_sub(hi)
                        }
                    })
                    .sum();
                assert!(
                    moves.len() <= floor + n_after as usize,
                    "{n_before}->{n_after}: {}",
                    moves.len()
                );
            }
        }
    }
}
