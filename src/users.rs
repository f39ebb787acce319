//! The front door to user state: every API route, native or compat, calls this. It routes
//! the user to the node that owns their shard and, on this node, to their actor.

use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Actor, Handler, Message};

use crate::actors::{
    ActorUnavailable, ClearProgress, EditWatchlist, EndStream, GetProgress, GetWatchlist,
    Heartbeat, LibraryError, ListStreams, Registry, SetProgress, Tracked, UserActor,
};
use crate::cluster::router::{Destination, NodeId, Router};
use crate::domain::{
    Accepted, AssetId, HeartbeatOutcome, LimitReached, Origin, Seconds, SessionId, Slot,
    SlotRequest, StreamId, StreamPolicy, Timestamp, UserId,
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

#[derive(Debug, thiserror::Error)]
pub enum LibraryCallError {
    #[error(transparent)]
    Library(#[from] LibraryError),
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
        let request = SlotRequest {
            lease: self.policy.lease_for(claim.origin),
            limit: self.policy.limit_for(claim.plan),
            origin: claim.origin,
            session: claim.session,
            stream: claim.stream,
        };
        let answer = self.call(user, Heartbeat(request)).await?;
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
        Ok(self.call(user, ListStreams).await?)
    }

    /// Progress of one asset (`Some`) or of every asset.
    pub async fn progress(
        &self,
        user: &UserId,
        asset: Option<AssetId>,
    ) -> Result<Vec<(AssetId, Seconds)>, LibraryCallError> {
        Ok(self.call(user, GetProgress(asset)).await??)
    }

    pub async fn set_progress(
        &self,
        user: &UserId,
        asset: AssetId,
        seconds: Seconds,
    ) -> Result<(), LibraryCallError> {
        Ok(self.call(user, SetProgress { asset, seconds }).await??)
    }

    pub async fn clear_progress(
        &self,
        user: &UserId,
        asset: AssetId,
    ) -> Result<(), LibraryCallError> {
        Ok(self.call(user, ClearProgress(asset)).await??)
    }

    pub async fn watchlist(
        &self,
        user: &UserId,
    ) -> Result<Vec<(AssetId, Timestamp)>, LibraryCallError> {
        Ok(self.call(user, GetWatchlist).await??)
    }

    /// Adds (`add`) or removes an asset; acknowledged only once stored.
    pub async fn edit_watchlist(
        &self,
        user: &UserId,
        asset: AssetId,
        add: bool,
    ) -> Result<(), LibraryCallError> {
        Ok(self.call(user, EditWatchlist { asset, add }).await??)
    }

    /// Routes `msg` to the user's actor on the owning node.
    async fn call<M>(&self, user: &UserId, msg: M) -> Result<M::Result, UnavailableReason>
    where
        M: Message + Send + 'static,
        M::Result: Send + 'static,
        UserActor: Handler<Tracked<M>>,
        <UserActor as Actor>::Context: ToEnvelope<UserActor, Tracked<M>>,
    {
        match self.router.route(user) {
            Destination::Local => Ok(self.registry.call(user, msg).await?),
            Destination::Remote(owner) => Err(UnavailableReason::NotOwner(owner)),
        }
    }
}
