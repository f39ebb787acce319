//! Which limit and which lease apply to a request.

use std::collections::HashMap;

use super::slots::Origin;
use super::time::Millis;

#[derive(Clone, Debug)]
pub struct StreamPolicy {
    pub default_limit: u32,
    pub plans: HashMap<Box<str>, u32>,
    /// Lease of clients that heartbeat (`/v1/streams`, `/heartbeat`).
    pub heartbeat_lease: Millis,
    /// Lease of subscription-style clients that take a slot once and release it later.
    pub subscription_lease: Millis,
}

impl StreamPolicy {
    /// The plan's limit, or the default for no plan or a plan this node does not know
    /// (an unknown plan must never lock a paying account out).
    pub fn limit_for(&self, plan: Option<&str>) -> u32 {
        plan.and_then(|p| self.plans.get(p))
            .copied()
            .unwrap_or(self.default_limit)
    }

    pub fn lease_for(&self, origin: Origin) -> Millis {
        match origin {
            Origin::V1 | Origin::Heartbeat => self.heartbeat_lease,
            Origin::Streamy | Origin::VideoStreams => self.subscription_lease,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> StreamPolicy {
        StreamPolicy {
            default_limit: 3,
            plans: HashMap::from([("family".into(), 5), ("basic".into(), 1)]),
            heartbeat_lease: Millis(40_000),
            subscription_lease: Millis(4 * 3_600_000),
        }
    }

    #[test]
    fn plan_selects_limit_and_unknown_plans_get_the_default() {
        let p = policy();
        assert_eq!(p.limit_for(None), 3);
        assert_eq!(p.limit_for(Some("family")), 5);
        assert_eq!(p.limit_for(Some("basic")), 1);
        assert_eq!(p.limit_for(Some("platinum")), 3);
    }

    #[test]
    fn subscription_routes_get_the_long_lease() {
        let p = policy();
        assert_eq!(p.lease_for(Origin::V1), Millis(40_000));
        assert_eq!(p.lease_for(Origin::Heartbeat), Millis(40_000));
        assert_eq!(p.lease_for(Origin::Streamy), Millis(14_400_000));
        assert_eq!(p.lease_for(Origin::VideoStreams), Millis(14_400_000));
    }
}
