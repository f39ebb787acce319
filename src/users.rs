//! The front door to user state: every API route, native or compat, calls this. It routes
//! the user to the node that owns their shard and, on this node, to their actor.

use std::sync::Arc;

use crate::actors::{ActorUnavailable, EndStream, Heartbeat, ListStreams, Registry};
use crate::cluster::router::{Destination, NodeId, Router};
use crate::domain::{
    Accepted, HeartbeatOutcome, LimitReached, Origin, SessionId, Slot, SlotRequest, StreamId,
    StreamPolicy, UserId,
};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum UnavailableReason {
    #[error(transparent)]
    Actor(#[from] ActorUnavailable),
    #[error("user is owned by node {0:?}, and forwarding is not enabled on this node")]
    NotOwner(NodeId),
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream limit of {} reached", refusal.limit)]
    LimitReached { user: UserId, refusal: LimitReached },
    #[error("temporarily unavailable: {0}")]
    Unavailable(#[from] UnavailableReason),
}

/// One stream heartbeat, as every contract expresses it.
pub struct StreamClaim<'a> {
    pub origin: Origin,
    pub session: SessionId,
    pub stream: StreamId,
    pub plan: Option<&'a str>,
}

#[derive(Clone)]
pub struct Users {
    router: Router,
    registry: Registry,
    policy: Arc<StreamPolicy>,
    metrics: Arc<Metrics>,
}

impl Users {
    pub fn new(
        router: Router,
        registry: Registry,
        policy: StreamPolicy,
        metrics: Arc<Metrics>,
    ) -> Users {
        Users {
            router,
            registry,
            policy: Arc::new(policy),
            metrics,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The limit that applies to a user on this plan.
    pub fn limit_for(&self, plan: Option<&str>) -> u32 {
        self.policy.limit_for(plan)
    }

    /// Takes or renews a slot.
    pub async fn heartbeat(
        &self,
        user: &UserId,
        claim: StreamClaim<'_>,
    ) -> Result<Accepted, StreamError> {
        self.ensure_local(user)?;
        let request = SlotRequest {
            lease: self.policy.lease_for(claim.origin),
            limit: self.policy.limit_for(claim.plan),
            origin: claim.origin,
            session: claim.session,
            stream: claim.stream,
        };
        let answer = self
            .registry
            .call(user, Heartbeat(request))
            .await
            .map_err(UnavailableReason::from)?;
        let counters = &self.metrics.heartbeats;
        match answer {
            Ok(accepted) => {
                match accepted.outcome {
                    HeartbeatOutcome::Taken => counters.taken.inc(),
                    HeartbeatOutcome::Renewed => counters.renewed.inc(),
                }
                Ok(accepted)
            }
            Err(refused) => {
                counters.refused.inc();
                Err(StreamError::LimitReached {
                    user: user.clone(),
                    refusal: refused,
                })
            }
        }
    }

    /// Frees a slot; idempotent.
    pub async fn end_stream(
        &self,
        user: &UserId,
        origin: Origin,
        session: SessionId,
    ) -> Result<(), StreamError> {
        self.ensure_local(user)?;
        let freed = self
            .registry
            .call(user, EndStream { origin, session })
            .await
            .map_err(UnavailableReason::from)?;
        if freed {
            self.metrics.releases.inc();
        }
        Ok(())
    }

    /// The user's live slots, oldest first.
    pub async fn streams(&self, user: &UserId) -> Result<Vec<Slot>, StreamError> {
        self.ensure_local(user)?;
        Ok(self
            .registry
            .call(user, ListStreams)
            .await
            .map_err(UnavailableReason::from)?)
    }

    fn ensure_local(&self, user: &UserId) -> Result<(), StreamError> {
        match self.router.route(user) {
            Destination::Local => Ok(()),
            Destination::Remote(owner) => Err(UnavailableReason::NotOwner(owner).into()),
        }
    }
}
