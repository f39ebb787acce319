//! The actor that owns one user's state: live stream slots, and their library (watch
//! progress and watchlist).
//!
//! Slots never touch the store, so heartbeats stay fast whatever the store does. The
//! library is loaded on first use. Operations that wait on the store (loading, watchlist
//! write-through) run one at a time per user under an async lock, while heartbeats and
//! progress updates keep flowing: a slow store delays only what needs it.

use std::sync::Arc;
use std::time::Instant;

use actix::fut::{ActorFutureExt, WrapFuture, ready};
use actix::{
    Actor, ActorContext, ActorResponse, AsyncContext, Context, Handler, Message, ResponseActFuture,
};

use super::command::{CommandReply, UserCommand};
use super::registry::Registry;
use super::services::UserServices;
use crate::cluster::ShardId;
use crate::domain::{
    AssetId, BiEvent, EventRecord, HeartbeatOutcome, ProgressBook, Seconds, StreamSlots, Timestamp,
    UserBackup, UserId, Watchlist,
};
use crate::error_chain::DisplayChain;
use crate::store::{ProgressItem, StoreError};

/// Why a library operation could not be done; nothing changed.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum LibraryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("too many unflushed progress updates on this node")]
    TooManyUnflushed,
    #[error("too many undelivered events on this node")]
    OutboxFull,
}

struct Library {
    progress: ProgressBook,
    watchlist: Watchlist,
}

/// Where an actor is in its life. It serves until something asks it to leave; each way of
/// leaving first stores its dirty progress (`settle`).
enum Lifecycle {
    Serving,
    /// Its shard is being handed to another node: once settled, report the slots (and
    /// keep them, in case the handoff is abandoned and the shard is served here again).
    Exporting(tokio::sync::oneshot::Sender<StreamSlots>),
    /// Moving off an HTTP worker thread: once settled, hand the slots to a pool actor.
    Evacuating,
    /// The node is stopping or the shard has gone: once settled, stop; `stopped` fires.
    Stopping(tokio::sync::oneshot::Sender<()>),
}

pub struct UserActor {
    user: UserId,
    shard: ShardId,
    slots: StreamSlots,
    library: Option<Library>,
    /// Serializes operations that wait on the store, per user.
    library_lock: Arc<tokio::sync::Mutex<()>>,
    /// Library operations and flushes still running; the actor must not retire under them.
    pending: usize,
    flushing: bool,
    lifecycle: Lifecycle,
    last_flush: Instant,
    services: Arc<UserServices>,
    registry: Registry,
    last_activity: Instant,
    /// Stopped without storing its progress (see `Discard`).
    discarded: bool,
}

type LibraryResult<T> = Result<T, LibraryError>;

/// What changed, for the backup.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// A slot was taken: sent at once, since a crash before it reaches the backup would
    /// let the user take one slot too many.
    NewSlot,
    /// A slot was released or expired.
    Slots,
    /// Unstored progress changed (an update, or a flush that stored some).
    Progress,
}

impl UserActor {
    pub(super) fn new(
        user: UserId,
        shard: ShardId,
        registry: Registry,
        slots: StreamSlots,
    ) -> UserActor {
        UserActor {
            user,
            shard,
            slots,
            library: None,
            library_lock: Arc::new(tokio::sync::Mutex::new(())),
            pending: 0,
            flushing: false,
            lifecycle: Lifecycle::Serving,
            last_flush: Instant::now(),
            services: Arc::clone(registry.services()),
            registry,
            last_activity: Instant::now(),
            discarded: false,
        }
    }

    fn now(&self) -> Timestamp {
        self.services.clock.now()
    }

    /// Runs `change` on the slots and keeps the active-streams gauge in step with it,
    /// counting slots that expired before the change separately from what it did.
    fn change_slots<R>(&mut self, change: impl FnOnce(&mut StreamSlots) -> R) -> R {
        self.last_activity = Instant::now();
        self.sweep_expired(self.now());
        let before = self.slots.held();
        let result = change(&mut self.slots);
        let after = self.slots.held();
        self.services
            .metrics
            .active_streams
            .add(after as i64 - before as i64);
        result
    }

    fn sweep_expired(&mut self, now: Timestamp) {
        let expired = self.slots.sweep(now);
        if expired > 0 {
            let metrics = &self.services.metrics;
            metrics.slots_expired.inc_by(expired as u64);
            metrics.active_streams.sub(expired as i64);
            self.back_up(Part::Slots);
        }
    }

    fn dirty(&self) -> usize {
        self.library.as_ref().map_or(0, |l| l.progress.dirty())
    }

    /// Periodic upkeep: expire slots, flush when due, and retire when there is nothing
    /// left to own.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.sweep_expired(self.now());
        let idle = self.last_activity.elapsed() >= self.registry.settings().idle_timeout;
        let flush_due = self.last_flush.elapsed() >= self.services.flush_interval;
        if self.dirty() > 0 && (flush_due || idle) {
            self.start_flush(ctx);
            return;
        }
        let quiet =
            self.slots.held() == 0 && self.pending == 0 && !self.flushing && self.dirty() == 0;
        if idle && quiet && self.registry.retire(self.shard, &self.user, &ctx.address()) {
            self.services.metrics.passivations.inc();
            tracing::debug!(user = %self.user, "user actor passivated");
            ctx.stop();
        }
    }

    /// Hands dirty progress to the flusher; on success marks it clean and emits the
    /// `viewed` events it carries, on failure keeps it dirty for the next tick.
    fn start_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing {
            return;
        }
        if !self.services.lease.is_valid() {
            return;
        }
        let Some(library) = self.library.as_mut() else {
            return;
        };
        let flush = library.progress.take_flush();
        if flush.is_empty() {
            return;
        }
        // Room for the events first: an event must never be dropped for lack of it.
        let Some(room) = self.services.outbox.reserve(flush.viewed.len()) else {
            library.progress.failed(flush);
            tracing::warn!(user = %self.user, "outbox full; flush postponed");
            return;
        };
        self.flushing = true;
        self.last_flush = Instant::now();
        let items: Vec<ProgressItem> = flush
            .writes
            .iter()
            .map(|w| ProgressItem {
                user: self.user.clone(),
                asset: w.asset,
                seconds: w.seconds,
            })
            .collect();
        let flusher = self.services.flusher.clone();
        let write = async move { flusher.write(items).await };
        ctx.spawn(write.into_actor(self).map(move |stored, actor, ctx| {
            actor.flushing = false;
            let Some(library) = actor.library.as_mut() else {
                return;
            };
            match stored {
                Ok(()) => {
                    let cleaned = library.progress.stored(&flush);
                    actor.services.dirty.give_back(cleaned);
                    actor.back_up(Part::Progress);
                    let now = actor.services.clock.now();
                    let events = flush
                        .viewed
                        .iter()
                        .map(|(asset, rise)| actor.event(BiEvent::viewed(*asset, *rise), now))
                        .collect();
                    actor.services.outbox.publish(room, events);
                    if actor.leaving() {
                        actor.settle(ctx);
                    }
                }
                Err(e) => {
                    library.progress.failed(flush);
                    tracing::warn!(user = %actor.user, error = %DisplayChain(&e), "progress flush failed; will retry");
                    if actor.leaving() {
                        // Shutting down with the store away: keep trying for as long as
                        // the node's shutdown window lasts.
                        ctx.run_later(actor.flush_retry(), |actor, ctx| actor.settle(ctx));
                    }
                }
            }
        }));
    }

    /// Asked to settle: to store its progress and then leave or report.
    fn leaving(&self) -> bool {
        !matches!(self.lifecycle, Lifecycle::Serving)
    }

    /// How soon to try again a flush that failed or could not start.
    fn flush_retry(&self) -> std::time::Duration {
        self.registry
            .settings()
            .tick
            .min(std::time::Duration::from_secs(1))
    }

    /// Flushes what is dirty, then does what the lifecycle asks (called again when each
    /// flush completes): `Stopping` stops; `Evacuating` and `Exporting` also wait out
    /// library operations still running, then hand the slots over.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        if self.dirty() > 0 {
            self.start_flush(ctx);
            if !self.flushing {
                // Could not even start (outbox full): try again shortly.
                ctx.run_later(self.flush_retry(), |actor, ctx| actor.settle(ctx));
            }
            return;
        }
        if self.flushing {
            return;
        }
        match std::mem::replace(&mut self.lifecycle, Lifecycle::Serving) {
            Lifecycle::Serving => {}
            Lifecycle::Stopping(stopped) => {
                self.lifecycle = Lifecycle::Stopping(stopped);
                ctx.stop();
            }
            Lifecycle::Exporting(done) if self.pending == 0 => {
                let _ = done.send(self.slots.clone());
            }
            Lifecycle::Evacuating
                if self.pending == 0
                    && self.registry.hand_over(
                        self.shard,
                        &self.user,
                        &ctx.address(),
                        &self.slots,
                    ) =>
            {
                // Its successor holds the slots now (and counts them from its start, as
                // this actor stops counting them when it stops).
                ctx.stop();
            }
            waiting => {
                self.lifecycle = waiting;
                ctx.run_later(SETTLE_RETRY, |actor, ctx| actor.settle(ctx));
            }
        }
    }

    /// Tells the shard's backup node about a change (see `domain::backup`).
    fn back_up(&self, part: Part) {
        let feed = &self.services.backup_feed;
        if !feed.is_enabled() {
            return;
        }
        let change = UserBackup {
            slots: matches!(part, Part::Slots | Part::NewSlot).then(|| self.slots.clone()),
            progress: match (part, &self.library) {
                (Part::Progress, Some(library)) => Some(library.progress.dirty_entries()),
                _ => None,
            },
        };
        feed.push(self.shard, &self.user, change, part == Part::NewSlot);
    }

    fn event(&self, event: BiEvent, at: Timestamp) -> EventRecord {
        EventRecord::new(event, self.user.clone(), at, uuid::Uuid::new_v4())
    }

    /// Runs `op` with the library loaded, one store-bound operation per user at a time.
    fn with_library<T: 'static>(
        &mut self,
        reply: fn(LibraryResult<T>) -> CommandReply,
        op: impl FnOnce(&mut UserActor) -> ResponseActFuture<UserActor, LibraryResult<T>> + 'static,
    ) -> ActorResponse<UserActor, CommandReply> {
        self.last_activity = Instant::now();
        self.pending += 1;
        let lock = Arc::clone(&self.library_lock);
        let store = Arc::clone(&self.services.store);
        let user = self.user.clone();
        let loaded = self.library.is_some();
        let fut = async move {
            let guard = lock.lock_owned().await;
            let library = if loaded {
                None
            } else {
                Some(store.load_library(&user).await)
            };
            (guard, library)
        }
        .into_actor(self)
        .then(move |(guard, library), actor, _ctx| {
            let loaded: LibraryResult<()> = match library {
                // Another operation may have loaded it while this one waited.
                Some(_) if actor.library.is_some() => Ok(()),
                Some(Ok(stored)) => {
                    actor.library = Some(Library {
                        progress: ProgressBook::from_stored(stored.progress),
                        watchlist: Watchlist::from_stored(stored.watchlist),
                    });
                    Ok(())
                }
                Some(Err(e)) => Err(e.into()),
                None => Ok(()),
            };
            let work: ResponseActFuture<UserActor, LibraryResult<T>> = match loaded {
                Ok(()) => op(actor),
                Err(e) => Box::pin(ready(Err(e))),
            };
            work.map(move |result, actor: &mut UserActor, _| {
                drop(guard);
                actor.pending -= 1;
                reply(result)
            })
        });
        ActorResponse::r#async(fut)
    }

    /// Answers at once when the library is loaded (the common case, and the hot path of
    /// progress updates), else loads it first.
    fn on_library<T: 'static>(
        &mut self,
        reply: fn(LibraryResult<T>) -> CommandReply,
        op: impl FnOnce(&mut UserActor) -> LibraryResult<T> + 'static,
    ) -> ActorResponse<UserActor, CommandReply> {
        if self.library.is_some() {
            self.last_activity = Instant::now();
            return ActorResponse::reply(reply(op(self)));
        }
        self.with_library(reply, move |actor| Box::pin(ready(op(actor))))
    }

    fn library(&mut self) -> &mut Library {
        self.library
            .as_mut()
            .expect("library is loaded by with_library/on_library")
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let metrics = &self.services.metrics;
        metrics.active_users.inc();
        // Slots handed over from another actor or node count here now.
        metrics.active_streams.add(self.slots.held() as i64);
        ctx.run_interval(self.registry.settings().tick, |actor, ctx| actor.tick(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let metrics = &self.services.metrics;
        metrics.active_users.dec();
        metrics.active_streams.sub(self.slots.held() as i64);
        if let Lifecycle::Stopping(stopped) =
            std::mem::replace(&mut self.lifecycle, Lifecycle::Serving)
        {
            let _ = stopped.send(());
        }
        let unflushed = self.dirty();
        if unflushed > 0 && self.discarded {
            // The shard moved by failover: the new owner stored the backed-up copy, and
            // storing this one now could overwrite what players did since.
            metrics.failover_progress_discarded.inc_by(unflushed as u64);
            self.services.dirty.give_back(unflushed);
        } else if unflushed > 0 {
            // Only reachable when the store stayed away for the whole shutdown window.
            tracing::error!(user = %self.user, entries = unflushed, "stopped with unflushed progress");
            self.services.dirty.lose(unflushed);
        }
    }
}

impl Message for UserCommand {
    type Result = CommandReply;
}

/// The one way in for requests: every command `Users` sends, local or forwarded.
impl Handler<UserCommand> for UserActor {
    type Result = ActorResponse<Self, CommandReply>;

    fn handle(&mut self, command: UserCommand, _ctx: &mut Context<Self>) -> Self::Result {
        match command {
            UserCommand::Heartbeat(request) => {
                let now = self.now();
                let answer = self.change_slots(|slots| slots.heartbeat(now, request));
                if answer
                    .as_ref()
                    .is_ok_and(|a| a.outcome == HeartbeatOutcome::Taken)
                {
                    self.back_up(Part::NewSlot);
                }
                ActorResponse::reply(CommandReply::Heartbeat(answer))
            }
            UserCommand::EndStream { origin, session } => {
                let now = self.now();
                let freed =
                    self.change_slots(|slots| slots.release(now, origin, session.as_str(), None));
                if freed {
                    self.back_up(Part::Slots);
                }
                ActorResponse::reply(CommandReply::Released(freed))
            }
            UserCommand::ListStreams => {
                self.last_activity = Instant::now();
                let now = self.now();
                ActorResponse::reply(CommandReply::Streams(
                    self.slots.live(now).cloned().collect(),
                ))
            }
            UserCommand::GetProgress(asset) => self
                .on_library(CommandReply::Progress, move |actor| {
                    Ok(actor.progress_of(asset))
                }),
            UserCommand::SetProgress { asset, seconds } => {
                self.update_progress(asset, Some(seconds))
            }
            UserCommand::ClearProgress(asset) => self.update_progress(asset, None),
            UserCommand::GetWatchlist => self.on_library(CommandReply::Watchlist, |actor| {
                Ok(actor.library().watchlist.items())
            }),
            UserCommand::EditWatchlist { asset, add } => self
                .with_library(CommandReply::Done, move |actor| {
                    actor.edit_watchlist(asset, add)
                }),
        }
    }
}

impl UserActor {
    fn progress_of(&mut self, asset: Option<AssetId>) -> Vec<(AssetId, Seconds)> {
        let progress = &self.library().progress;
        match asset {
            Some(asset) => progress
                .get(&asset)
                .map(|s| (asset, s))
                .into_iter()
                .collect(),
            None => {
                let mut all: Vec<_> = progress.iter().collect();
                all.sort_unstable();
                all
            }
        }
    }

    /// Records (`Some`) or clears (`None`) progress and answers once a crash would count
    /// it lost (`UnflushedMarker`): at once, unless a burst outran the marker's reservation.
    fn update_progress(
        &mut self,
        asset: AssetId,
        seconds: Option<Seconds>,
    ) -> ActorResponse<UserActor, CommandReply> {
        if self.library.is_none() {
            return self.with_library(CommandReply::Done, move |actor| {
                match actor.set_progress_covered(asset, seconds) {
                    Ok(None) => Box::pin(ready(Ok(()))),
                    Ok(Some(covered)) => Box::pin(covered.into_actor(actor).map(|(), _, _| Ok(()))),
                    Err(e) => Box::pin(ready(Err(e))),
                }
            });
        }
        self.last_activity = Instant::now();
        match self.set_progress_covered(asset, seconds) {
            Ok(None) => ActorResponse::reply(CommandReply::Done(Ok(()))),
            Ok(Some(covered)) => ActorResponse::r#async(
                covered
                    .into_actor(self)
                    .map(|(), _, _| CommandReply::Done(Ok(()))),
            ),
            Err(e) => ActorResponse::reply(CommandReply::Done(Err(e))),
        }
    }

    /// `set_progress`, then what to wait for before acknowledging it, if anything.
    fn set_progress_covered(
        &mut self,
        asset: AssetId,
        seconds: Option<Seconds>,
    ) -> LibraryResult<Option<impl Future<Output = ()> + 'static>> {
        self.set_progress(asset, seconds)?;
        let services = &self.services;
        Ok(services.unflushed.cover(services.at_risk()))
    }

    /// Records (`Some`) or clears (`None`) progress, within the node's dirty budget.
    /// Clearing what is not there is a no-op.
    fn set_progress(&mut self, asset: AssetId, seconds: Option<Seconds>) -> LibraryResult<()> {
        let services = Arc::clone(&self.services);
        let progress = &mut self.library().progress;
        if seconds.is_none() && progress.get(&asset).is_none() {
            return Ok(());
        }
        if !progress.is_dirty(&asset) && !services.dirty.take() {
            services.metrics.progress_refused.inc();
            return Err(LibraryError::TooManyUnflushed);
        }
        match seconds {
            Some(seconds) => {
                progress.set(asset, seconds);
                services.metrics.progress_updates.inc();
            }
            None => {
                progress.delete(asset);
            }
        }
        self.back_up(Part::Progress);
        Ok(())
    }

    /// Adds to or removes from the watchlist: stored before it is acknowledged, and an
    /// event only when the store says the list really changed.
    fn edit_watchlist(
        &mut self,
        asset: AssetId,
        add: bool,
    ) -> ResponseActFuture<UserActor, LibraryResult<()>> {
        let Some(room) = self.services.outbox.reserve(1) else {
            return Box::pin(ready(Err(LibraryError::OutboxFull)));
        };
        let store = Arc::clone(&self.services.store);
        let user = self.user.clone();
        let at = self.now();
        let write = async move {
            if add {
                store.add_to_watchlist(&user, asset, at).await
            } else {
                store.remove_from_watchlist(&user, asset).await
            }
        };
        Box::pin(write.into_actor(self).map(move |changed, actor, _| {
            let changed = changed?;
            let watchlist = &mut actor.library().watchlist;
            if add {
                watchlist.add(asset, at);
            } else {
                watchlist.remove(&asset);
            }
            let events = if changed {
                let event = if add {
                    BiEvent::AddedToWatchlist { asset_id: asset }
                } else {
                    BiEvent::RemovedFromWatchlist { asset_id: asset }
                };
                vec![actor.event(event, at)]
            } else {
                Vec::new()
            };
            actor.services.outbox.publish(room, events);
            Ok(())
        }))
    }
}

/// Flush and stop: the node is shutting down, or the shard went to another node.
/// `stopped` fires once the actor has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Shutdown {
    pub stopped: tokio::sync::oneshot::Sender<()>,
}

impl Handler<Shutdown> for UserActor {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        // Stopping wins over every other way of leaving.
        self.lifecycle = Lifecycle::Stopping(msg.stopped);
        self.settle(ctx);
    }
}

/// How soon a settling actor looks again when requests or store work were in flight.
const SETTLE_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

/// Move off this HTTP worker thread: the node is shutting down (see `Registry`).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Evacuate;

impl Handler<Evacuate> for UserActor {
    type Result = ();

    fn handle(&mut self, _msg: Evacuate, ctx: &mut Context<Self>) {
        if !self.leaving() {
            self.lifecycle = Lifecycle::Evacuating;
            self.settle(ctx);
        }
    }
}

/// Store progress and report the slots: the shard is being handed to another node.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Export {
    pub done: tokio::sync::oneshot::Sender<StreamSlots>,
}

impl Handler<Export> for UserActor {
    type Result = ();

    fn handle(&mut self, msg: Export, ctx: &mut Context<Self>) {
        match &mut self.lifecycle {
            // Still storing its progress for an export that was given up (the leader
            // stopped waiting and began the move again): it reports to this one.
            Lifecycle::Exporting(done) => *done = msg.done,
            Lifecycle::Serving => {
                self.lifecycle = Lifecycle::Exporting(msg.done);
                self.settle(ctx);
            }
            // Already stopping or moving: its successor is what the export will find.
            Lifecycle::Evacuating | Lifecycle::Stopping(_) => {}
        }
    }
}

/// Stop at once, storing nothing: the shard went to another node by failover while this
/// node was cut off (see `Registry::discard`).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Discard;

impl Handler<Discard> for UserActor {
    type Result = ();

    fn handle(&mut self, _msg: Discard, ctx: &mut Context<Self>) {
        self.discarded = true;
        ctx.stop();
    }
}

/// Everything the backup must have of this user (a full snapshot of the shard).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Snapshot {
    pub done: tokio::sync::oneshot::Sender<UserBackup>,
}

impl Handler<Snapshot> for UserActor {
    type Result = ();

    fn handle(&mut self, msg: Snapshot, _ctx: &mut Context<Self>) {
        let _ = msg.done.send(UserBackup {
            slots: Some(self.slots.clone()),
            progress: self.library.as_ref().map(|l| l.progress.dirty_entries()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_error_crosses_nodes_in_the_json_of_the_previous_release() {
        let json = r#"[{"Store":{"Unavailable":"throttled"}},"TooManyUnflushed","OutboxFull"]"#;
        let errors: Vec<LibraryError> = serde_json::from_str(json).unwrap();
        assert!(
            matches!(&errors[0], LibraryError::Store(StoreError::Unavailable(cause)) if cause.to_string() == "throttled"),
            "{errors:?}"
        );
        assert_eq!(serde_json::to_string(&errors).unwrap(), json);
    }
}
