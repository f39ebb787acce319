//! The actor that owns one user's live stream slots.

use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message};

use super::registry::Registry;
use crate::clock::Clock;
use crate::domain::{
    Accepted, LimitReached, Origin, SessionId, Slot, SlotRequest, StreamSlots, UserId,
};
use crate::telemetry::Metrics;

pub struct UserActor {
    user: UserId,
    slots: StreamSlots,
    clock: Clock,
    metrics: Arc<Metrics>,
    registry: Registry,
    last_activity: Instant,
}

impl UserActor {
    pub(super) fn new(user: UserId, registry: Registry) -> UserActor {
        UserActor {
            user,
            slots: StreamSlots::default(),
            clock: registry.clock().clone(),
            metrics: registry.metrics().clone(),
            registry,
            last_activity: Instant::now(),
        }
    }

    /// Runs `change` on the slots and keeps the active-streams gauge in step with it,
    /// counting slots that expired before the change separately from what it did.
    fn change_slots<R>(&mut self, change: impl FnOnce(&mut StreamSlots) -> R) -> R {
        self.last_activity = Instant::now();
        let now = self.clock.now();
        self.sweep_expired(now);
        let before = self.slots.held();
        let result = change(&mut self.slots);
        let after = self.slots.held();
        self.metrics
            .active_streams
            .add(after as i64 - before as i64);
        result
    }

    fn sweep_expired(&mut self, now: crate::domain::Timestamp) {
        let expired = self.slots.sweep(now);
        if expired > 0 {
            self.metrics.slots_expired.inc_by(expired as u64);
            self.metrics.active_streams.sub(expired as i64);
        }
    }

    /// Periodic upkeep: drop expired slots so gauges and idleness are current, and stop
    /// when there is nothing left to own.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.sweep_expired(self.clock.now());
        let idle = self.last_activity.elapsed() >= self.registry.settings().idle_timeout;
        if idle && self.slots.held() == 0 && self.registry.retire(&self.user, &ctx.address()) {
            self.metrics.passivations.inc();
            tracing::debug!(user = %self.user, "user actor passivated");
            ctx.stop();
        }
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.active_users.inc();
        ctx.run_interval(self.registry.settings().tick, |actor, ctx| actor.tick(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.metrics.active_users.dec();
        self.metrics.active_streams.sub(self.slots.held() as i64);
    }
}

/// Take or renew a slot.
#[derive(Message)]
#[rtype(result = "Result<Accepted, LimitReached>")]
pub struct Heartbeat(pub SlotRequest);

impl Handler<Heartbeat> for UserActor {
    type Result = Result<Accepted, LimitReached>;

    fn handle(&mut self, Heartbeat(request): Heartbeat, _ctx: &mut Context<Self>) -> Self::Result {
        let now = self.clock.now();
        self.change_slots(|slots| slots.heartbeat(now, request))
    }
}

/// Free a slot; `true` if a live one was freed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct EndStream {
    pub origin: Origin,
    pub session: SessionId,
}

impl Handler<EndStream> for UserActor {
    type Result = bool;

    fn handle(&mut self, msg: EndStream, _ctx: &mut Context<Self>) -> bool {
        let now = self.clock.now();
        self.change_slots(|slots| slots.release(now, msg.origin, msg.session.as_str(), None))
    }
}

/// The user's live slots, oldest first.
#[derive(Message)]
#[rtype(result = "Vec<Slot>")]
pub struct ListStreams;

impl Handler<ListStreams> for UserActor {
    type Result = Vec<Slot>;

    fn handle(&mut self, _msg: ListStreams, _ctx: &mut Context<Self>) -> Vec<Slot> {
        self.last_activity = Instant::now();
        let now = self.clock.now();
        self.slots.live(now).cloned().collect()
    }
}

/// Stop now: the node is shutting down.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Shutdown;

impl Handler<Shutdown> for UserActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
