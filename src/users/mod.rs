//! The front door to user state: every API route, native or compat, calls this. Each
//! operation becomes one `UserCommand`, and `Users::call` is its only way to an actor: to
//! this node's actor when this node owns the user's shard, else to the owner over the
//! cluster listener (one hop), waiting out a shard that is being handed over.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod backup;
mod forwarding;
mod shards;

pub use backup::{Backup, BackupAnswer, BackupBatch, BackupHolder};
use forwarding::Forwarder;
pub use forwarding::{
    Forward, ForwardedCommand, ForwardedReply, OwnerUnavailable, REQUEST_CORRELATION_ID,
};
pub use shards::{
    HandoffError, HandoffImport, ImportStatus, Imported, ShardImport, follow_shard_table,
};

use crate::actors::{
    ActorUnavailable, CallError, CommandReply, LibraryError, Registry, UnexpectedReply, UserCommand,
};
use crate::cluster::{Destination, NodeId, OwnershipLease, Peers, Router};
use crate::domain::{
    Accepted, AssetId, HeartbeatOutcome, LimitReached, Origin, Seconds, SessionId, Slot,
    SlotRequest, StreamId, StreamPolicy, Timestamp, UserId,
};
use crate::telemetry::Metrics;

const SHARD_MOVING: &str =
    "the user's shard is being handed over, or this node has no shard table yet";
const NO_LEASE: &str = "this node's ownership lease has run out (it cannot reach the cluster's \
     leader); the user's shard is served again once it can, or by another node after failover";

#[derive(Debug, thiserror::Error)]
pub enum UnavailableReason {
    #[error(transparent)]
    Actor(#[from] ActorUnavailable),
    #[error("{}", SHARD_MOVING)]
    ShardMoving,
    #[error("{}", NO_LEASE)]
    NoLease,
    #[error(
        "the node that owns the user's shard holds no ownership lease (it cannot reach the \
         cluster's leader); it serves the shard again once it can, or another node does \
         after failover"
    )]
    OwnerHasNoLease,
    /// The owner answered, but could not run the command for a reason this release does
    /// not know.
    #[error("the node that owns the user's shard cannot serve it: {0}")]
    OwnerRefused(String),
    #[error("the node that owns the user's shard cannot be reached: {0}")]
    OwnerUnreachable(String),
    #[error(transparent)]
    Protocol(#[from] UnexpectedReply),
}

impl From<OwnerUnavailable> for UnavailableReason {
    fn from(reason: OwnerUnavailable) -> UnavailableReason {
        match reason {
            OwnerUnavailable::Actor(e) => UnavailableReason::Actor(e),
            OwnerUnavailable::ShardMoving => UnavailableReason::ShardMoving,
            OwnerUnavailable::NoLease => UnavailableReason::OwnerHasNoLease,
            other @ (OwnerUnavailable::WrongShard | OwnerUnavailable::Unrecognized(_)) => {
                UnavailableReason::OwnerRefused(other.to_string())
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream limit of {} reached", refusal.limit)]
    LimitReached { user: UserId, refusal: LimitReached },
    #[error("temporarily unavailable: {0}")]
    Unavailable(#[from] UnavailableReason),
}

impl From<UnexpectedReply> for StreamError {
    fn from(e: UnexpectedReply) -> StreamError {
        StreamError::Unavailable(e.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LibraryCallError {
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error("temporarily unavailable: {0}")]
    Unavailable(#[from] UnavailableReason),
}

impl From<UnexpectedReply> for LibraryCallError {
    fn from(e: UnexpectedReply) -> LibraryCallError {
        LibraryCallError::Unavailable(e.into())
    }
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
    forwarder: Forwarder,
    peers: Peers,
    /// Commands for local shards run only while it holds.
    lease: Arc<OwnershipLease>,
    /// What this node keeps as the backup of other nodes' shards.
    backups: Arc<BackupHolder>,
    policy: Arc<StreamPolicy>,
    metrics: Arc<Metrics>,
    /// How long a command waits for a shard being handed over.
    handoff_wait: Duration,
}

impl Users {
    pub fn new(
        router: Router,
        registry: Registry,
        peers: Peers,
        policy: StreamPolicy,
        metrics: Arc<Metrics>,
        handoff_wait: Duration,
    ) -> Users {
        let forward_timeout = registry.settings().call_timeout + Duration::from_secs(1);
        let lease = Arc::clone(&registry.services().lease);
        Users {
            router,
            registry,
            forwarder: Forwarder::new(peers.clone(), forward_timeout, Arc::clone(&metrics)),
            peers,
            lease,
            backups: Arc::default(),
            policy: Arc::new(policy),
            metrics,
            handoff_wait,
        }
    }

    pub fn backups(&self) -> &BackupHolder {
        &self.backups
    }

    /// Sends this node's backup changes for the node's life (see `backup`).
    pub async fn send_backups(self, interval: Duration) {
        let peers = self.peers.clone();
        backup::send_backups(self, peers, interval).await
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
        let answer = self
            .call(user, UserCommand::Heartbeat(request))
            .await?
            .heartbeat("heartbeat")?;
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
            .call(user, UserCommand::EndStream { origin, session })
            .await?
            .released("end_stream")?;
        if freed {
            self.metrics.releases.inc();
        }
        Ok(())
    }

    /// The user's live slots, oldest first.
    pub async fn streams(&self, user: &UserId) -> Result<Vec<Slot>, StreamError> {
        Ok(self
            .call(user, UserCommand::ListStreams)
            .await?
            .streams("list_streams")?)
    }

    /// Progress of one asset (`Some`) or of every asset.
    pub async fn progress(
        &self,
        user: &UserId,
        asset: Option<AssetId>,
    ) -> Result<Vec<(AssetId, Seconds)>, LibraryCallError> {
        Ok(self
            .call(user, UserCommand::GetProgress(asset))
            .await?
            .progress("get_progress")??)
    }

    pub async fn set_progress(
        &self,
        user: &UserId,
        asset: AssetId,
        seconds: Seconds,
    ) -> Result<(), LibraryCallError> {
        Ok(self
            .call(user, UserCommand::SetProgress { asset, seconds })
            .await?
            .done("set_progress")??)
    }

    pub async fn clear_progress(
        &self,
        user: &UserId,
        asset: AssetId,
    ) -> Result<(), LibraryCallError> {
        Ok(self
            .call(user, UserCommand::ClearProgress(asset))
            .await?
            .done("clear_progress")??)
    }

    pub async fn watchlist(
        &self,
        user: &UserId,
    ) -> Result<Vec<(AssetId, Timestamp)>, LibraryCallError> {
        Ok(self
            .call(user, UserCommand::GetWatchlist)
            .await?
            .watchlist("get_watchlist")??)
    }

    /// Adds (`add`) or removes an asset; acknowledged only once stored.
    pub async fn edit_watchlist(
        &self,
        user: &UserId,
        asset: AssetId,
        add: bool,
    ) -> Result<(), LibraryCallError> {
        Ok(self
            .call(user, UserCommand::EditWatchlist { asset, add })
            .await?
            .done("edit_watchlist")??)
    }

    /// Routes `command` to the user's actor on the owning node. A shard that is being
    /// handed over (or a table that is behind) makes it wait, up to `handoff_wait`.
    async fn call(
        &self,
        user: &UserId,
        mut command: UserCommand,
    ) -> Result<CommandReply, UnavailableReason> {
        let mut deadline: Option<Instant> = None;
        loop {
            // Subscribed before routing, so a change in between is not missed.
            let mut changes = self.router.subscribe();
            match self.router.route(user) {
                // A node that just started waits for its first lease; one that lost it
                // answers at once (it is cut off, and waiting would not help soon).
                Destination::Local { .. } if !self.lease.is_valid() => {
                    if self.lease.ever_held() {
                        return Err(UnavailableReason::NoLease);
                    }
                }
                Destination::Local { shard, .. } => {
                    match self.registry.call(shard, user, command).await {
                        Ok(reply) => return Ok(reply),
                        Err(CallError::NotServing(returned)) => command = returned,
                        Err(CallError::Unavailable(e)) => return Err(e.into()),
                    }
                }
                Destination::Remote { shard, node, epoch } => {
                    let forwarded = ForwardedCommand {
                        shard,
                        epoch,
                        user: user.clone(),
                        command,
                        correlation_id: forwarding::correlation_id(),
                    };
                    match self.forward(node, &forwarded).await? {
                        ForwardedReply::Done(reply) => return Ok(reply),
                        ForwardedReply::Moved => command = forwarded.command,
                        ForwardedReply::Unavailable(why) => return Err(why.into()),
                    }
                }
                Destination::Unassigned { .. } => {}
            }
            let deadline = *deadline.get_or_insert_with(|| {
                self.metrics.cluster.handoff_waited.inc();
                Instant::now() + self.handoff_wait
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.router.changed_within(&mut changes, left).await {
                return Err(UnavailableReason::ShardMoving);
            }
        }
    }

    /// Sends a command to the node that owns its shard.
    async fn forward(
        &self,
        node: NodeId,
        forwarded: &ForwardedCommand,
    ) -> Result<ForwardedReply, UnavailableReason> {
        let table = self.router.table();
        let Some(addr) = table.cluster_addr(node) else {
            return Err(UnavailableReason::OwnerUnreachable(format!(
                "node {node} has no known address"
            )));
        };
        let started = Instant::now();
        let sent = self.forwarder.send(addr, forwarded).await;
        let cluster = &self.metrics.cluster;
        cluster
            .forward_duration
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &sent {
            Ok(ForwardedReply::Done(_)) => "ok",
            Ok(ForwardedReply::Moved) => "moved",
            Ok(ForwardedReply::Unavailable(_)) => "unavailable",
            Err(_) => "error",
        };
        cluster.forwarded(outcome).inc();
        sent.map_err(|e| {
            tracing::warn!(node = node.0, error = %e, command = forwarded.command.name(), "forwarding failed");
            UnavailableReason::OwnerUnreachable(e.to_string())
        })
    }

    /// Runs a command another node forwarded here, if this node owns the shard at the
    /// sender's epoch; waits (up to `handoff_wait`) while the shard is being handed over
    /// or this node's table is behind the sender's.
    pub async fn execute_forwarded(&self, forwarded: ForwardedCommand) -> ForwardedReply {
        let ForwardedCommand {
            shard,
            epoch,
            user,
            mut command,
            ..
        } = forwarded;
        if self.router.shard_of(&user) != shard {
            tracing::warn!(%user, shard = shard.0, "a forwarded command names a shard its user is not in");
            return ForwardedReply::Unavailable(OwnerUnavailable::WrongShard);
        }
        let deadline = Instant::now() + self.handoff_wait;
        loop {
            let mut changes = self.router.subscribe();
            let owner = self.router.table().owner(shard);
            match owner {
                Some(owner) if owner.epoch > epoch => return ForwardedReply::Moved,
                Some(owner) if owner.epoch == epoch && owner.node != self.router.local() => {
                    return ForwardedReply::Moved;
                }
                // As in `call`: a node that lost its lease answers at once, one that has
                // not had one yet waits for it.
                Some(owner)
                    if owner.epoch == epoch && !self.lease.is_valid() && self.lease.ever_held() =>
                {
                    return ForwardedReply::Unavailable(OwnerUnavailable::NoLease);
                }
                Some(owner) if owner.epoch == epoch && !self.lease.is_valid() => {}
                Some(owner) if owner.epoch == epoch => {
                    match self.registry.call(shard, &user, command).await {
                        Ok(reply) => return ForwardedReply::Done(reply),
                        Err(CallError::NotServing(returned)) => command = returned,
                        Err(CallError::Unavailable(e)) => {
                            return ForwardedReply::Unavailable(OwnerUnavailable::Actor(e));
                        }
                    }
                }
                // This node's table is behind the sender's: wait for it.
                _ => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.router.changed_within(&mut changes, left).await {
                return ForwardedReply::Unavailable(OwnerUnavailable::ShardMoving);
            }
        }
    }
}
