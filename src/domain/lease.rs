//! The timing rules of ownership leases; why they keep two nodes from serving one shard is
//! told in the cluster's lease module, which follows them.

use std::time::Duration;

/// How often the leader renews: often enough that a lost round or two does not let a
/// lease run out.
pub fn renew_interval(lease: Duration) -> Duration {
    lease / 8
}

/// The shortest `failover_after` that is safe with `lease` (see the cluster's lease
/// module): the lease, two rounds, a round trip, and a margin for clock rates.
pub fn min_failover_after(lease: Duration) -> Duration {
    lease + lease / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_waits_out_the_lease_with_room_to_spare() {
        let lease = Duration::from_secs(4);
        assert!(min_failover_after(lease) > lease + 2 * renew_interval(lease));
    }
}
