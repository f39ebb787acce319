//! Finds or starts the actor of a user, places it, and lets an idle actor retire without
//! ever losing a request that raced with its retirement.
//!
//! Actors are kept by cluster shard, each shard behind its own lock with a flag saying
//! whether this node serves it now. That is what lets a shard be handed over whole:
//! `export` stops it serving, waits for what was in flight, and collects the state of
//! its users; `release` lets its actors go once another node owns it.
//!
//! Placement: an actor first needed on an HTTP worker thread lives on that thread, so the
//! requests that worker receives for it cost no thread hop (two wake-ups and often two
//! context switches each, the largest cost on the heartbeat path). Everything else, and
//! everything started once the node is shutting down, lives on a pool of actor threads.
//! actix-web drops a worker thread's tasks when HTTP stops, so before it does,
//! `move_actors_off_workers` has each worker-hosted actor flush its progress and hand its
//! slots to a successor on the pool.
//!
//! The race: a request looks up an actor's address just as the actor decides it is idle.
//! Every request therefore carries a guard that counts it as in flight from the moment it
//! is counted (under the map shard's read lock) until the actor has handled it or it was
//! dropped. An actor retires only by removing its own entry under that shard's write lock
//! while the count is zero, so a request either reaches a live actor or finds no entry
//! and starts a fresh one.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, ArbiterHandle, Handler, MailboxError, Message};

use super::command::{CommandReply, UserCommand};
use super::services::{ActorSettings, UserServices};
use super::user::{ActorHome, Discard, Evacuate, Export, Shutdown, Snapshot, UserActor};
use crate::cluster::ShardId;
use crate::domain::{StreamSlots, UserBackup, UserId};

/// Mailbox slots per actor; one user rarely has more than a few requests queued, but a
/// burst (a reconnecting household) should queue rather than spin on a full mailbox.
const MAILBOX_CAPACITY: usize = 256;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
pub enum ActorUnavailable {
    #[error("the user's actor did not answer in time")]
    Timeout,
    #[error("the user's actor stopped unexpectedly")]
    Stopped,
}

/// Why a command did not reach an actor.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// This node does not serve the shard now (not its owner, or handing it over). The
    /// command comes back, to be sent again where it belongs.
    #[error("this node does not serve the user's shard now")]
    NotServing(UserCommand),
    #[error(transparent)]
    Unavailable(#[from] ActorUnavailable),
}

/// The state of one user, as handed from one node to another.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct UserHandoff {
    pub user: UserId,
    pub slots: StreamSlots,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[RwLock<ShardActors>]>,
    threads: Vec<ArbiterHandle>,
    owned_threads: Mutex<Vec<Arbiter>>,
    settings: ActorSettings,
    services: Arc<UserServices>,
    /// Set once shutdown begins: from then on actors start on the pool only.
    leaving_workers: AtomicBool,
}

#[derive(Default)]
struct ShardActors {
    /// Whether requests for this shard are served here now.
    serving: bool,
    /// Rises with each export, so that an export given up and begun again can tell it
    /// was superseded.
    exports: u64,
    actors: HashMap<UserId, Entry>,
}

struct Entry {
    addr: Addr<UserActor>,
    in_flight: Arc<AtomicUsize>,
    on_http_worker: bool,
}

thread_local! {
    static HOSTS_ACTORS: Cell<bool> = const { Cell::new(false) };
}

impl Entry {
    /// Enqueues `command`, counted as in flight until the actor has handled it.
    fn send(
        &self,
        command: UserCommand,
    ) -> (
        Addr<UserActor>,
        actix::dev::Request<UserActor, Tracked<UserCommand>>,
    ) {
        let tracked = Tracked {
            msg: command,
            _in_flight: InFlight::new(&self.in_flight),
        };
        (self.addr.clone(), self.addr.send(tracked))
    }
}

/// Counts one request as in flight for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A message on its way to a user actor, counted as in flight until handled or dropped.
pub struct Tracked<M> {
    msg: M,
    _in_flight: InFlight,
}

impl<M: Message> Message for Tracked<M>
where
    M::Result: 'static,
{
    type Result = M::Result;
}

impl Handler<Tracked<UserCommand>> for UserActor {
    type Result = <UserActor as Handler<UserCommand>>::Result;

    fn handle(&mut self, tracked: Tracked<UserCommand>, ctx: &mut Self::Context) -> Self::Result {
        // The guard drops when this returns: the command's effect is done, or (for a
        // command that waits on the store) the actor counts it in `pending`.
        <UserActor as Handler<UserCommand>>::handle(self, tracked.msg, ctx)
    }
}

impl Registry {
    /// Starts `settings.threads` actor threads. Must run inside an actix `System`. No
    /// shard is served until `serve` says so.
    pub fn start(settings: ActorSettings, services: Arc<UserServices>) -> Registry {
        let owned: Vec<Arbiter> = (0..settings.threads.max(1))
            .map(|_| Arbiter::new())
            .collect();
        let threads = owned.iter().map(Arbiter::handle).collect();
        Registry {
            inner: Arc::new(Inner {
                shards: (0..settings.shards.max(1))
                    .map(|_| RwLock::default())
                    .collect(),
                threads,
                owned_threads: Mutex::new(owned),
                settings,
                services,
                leaving_workers: AtomicBool::new(false),
            }),
        }
    }

    /// Marks the calling thread, an HTTP worker, as one that may host user actors.
    pub fn host_actors_on_this_thread() {
        HOSTS_ACTORS.set(true);
    }

    pub fn settings(&self) -> &ActorSettings {
        &self.inner.settings
    }

    pub fn services(&self) -> &Arc<UserServices> {
        &self.inner.services
    }

    fn shard(&self, shard: ShardId) -> &RwLock<ShardActors> {
        &self.inner.shards[shard.0 as usize % self.inner.shards.len()]
    }

    /// User actors running now.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.read().expect("not poisoned").actors.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this node serves `shard` now.
    pub fn is_serving(&self, shard: ShardId) -> bool {
        self.shard(shard).read().expect("not poisoned").serving
    }

    /// Starts (or resumes) serving `shard`.
    pub fn serve(&self, shard: ShardId) {
        self.shard(shard).write().expect("not poisoned").serving = true;
    }

    /// Delivers `command` to the user's actor, starting one if needed, and waits for the
    /// answer.
    pub async fn call(
        &self,
        shard: ShardId,
        user: &UserId,
        command: UserCommand,
    ) -> Result<CommandReply, CallError> {
        let (addr, request) = {
            // Held until the message is enqueued (or parked on a full mailbox, still
            // counted), so neither retirement nor an export can slip in between lookup
            // and send.
            let lock = self.shard(shard);
            let read = lock.read().expect("not poisoned");
            if !read.serving {
                return Err(CallError::NotServing(command));
            }
            match read.actors.get(user.as_str()) {
                Some(entry) => entry.send(command),
                None => {
                    drop(read);
                    let mut write = lock.write().expect("not poisoned");
                    if !write.serving {
                        return Err(CallError::NotServing(command));
                    }
                    let entry = write
                        .actors
                        .entry(user.clone())
                        .or_insert_with(|| self.spawn(shard, user, StreamSlots::default()));
                    entry.send(command)
                }
            }
        };
        match request.timeout(self.inner.settings.call_timeout).await {
            Ok(answer) => Ok(answer),
            Err(MailboxError::Timeout) => {
                self.inner.services.metrics.actor_unavailable.inc();
                Err(ActorUnavailable::Timeout.into())
            }
            Err(MailboxError::Closed) => {
                // Only a crashed actor closes with its entry still present; forget it so
                // the next request starts afresh.
                let mut write = self.shard(shard).write().expect("not poisoned");
                if write
                    .actors
                    .get(user.as_str())
                    .is_some_and(|e| e.addr == addr)
                {
                    write.actors.remove(user.as_str());
                }
                self.inner.services.metrics.actor_unavailable.inc();
                tracing::error!(user = %user, "user actor stopped unexpectedly");
                Err(ActorUnavailable::Stopped.into())
            }
        }
    }

    fn spawn(&self, shard: ShardId, user: &UserId, slots: StreamSlots) -> Entry {
        let on_http_worker = self.inner.settings.host_on_http_workers
            && HOSTS_ACTORS.get()
            && !self.inner.leaving_workers.load(Ordering::Acquire);
        self.start_actor(shard, user, slots, on_http_worker)
    }

    fn start_actor(
        &self,
        shard: ShardId,
        user: &UserId,
        slots: StreamSlots,
        on_http_worker: bool,
    ) -> Entry {
        let thread = if on_http_worker {
            Arbiter::current()
        } else {
            self.inner.threads[thread_of(user, self.inner.threads.len())].clone()
        };
        let registry = self.clone();
        let owner = user.clone();
        let addr = UserActor::start_in_arbiter(&thread, move |ctx| {
            ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
            UserActor::new(owner, shard, Box::new(registry), slots)
        });
        Entry {
            addr,
            in_flight: Arc::new(AtomicUsize::new(0)),
            on_http_worker,
        }
    }

    /// Stops serving `shard` and collects the state of its users once every request that
    /// reached them has been answered and their progress is stored. The actors stay,
    /// unreachable, until `release` (the shard went elsewhere) or `serve` (it did not).
    ///
    /// `None` when another export of the shard began meanwhile (the leader gave this one
    /// up and began the move again): the actors now report to that one, so what this one
    /// collected is incomplete and must not be sent, and the shard is that one's to serve
    /// again or hand over.
    pub async fn export(&self, shard: ShardId) -> Option<Vec<UserHandoff>> {
        let (round, addrs): (u64, Vec<(UserId, Addr<UserActor>)>) = {
            let mut write = self.shard(shard).write().expect("not poisoned");
            write.serving = false;
            write.exports += 1;
            let addrs = write
                .actors
                .iter()
                .map(|(user, entry)| (user.clone(), entry.addr.clone()))
                .collect();
            (write.exports, addrs)
        };
        let exports = addrs.into_iter().map(|(user, addr)| async move {
            let (done, slots) = tokio::sync::oneshot::channel();
            addr.do_send(Export { done });
            // An actor that passivated before it saw the request held nothing.
            let slots = slots.await.unwrap_or_default();
            UserHandoff { user, slots }
        });
        let users: Vec<UserHandoff> = futures_util::future::join_all(exports)
            .await
            .into_iter()
            .filter(|h| h.slots.held() > 0)
            .collect();
        self.is_last_export(shard, round).then_some(users)
    }

    fn is_last_export(&self, shard: ShardId, round: u64) -> bool {
        self.shard(shard).read().expect("not poisoned").exports == round
    }

    /// Lets go of the actors of a shard this node no longer owns. Each flushes anything
    /// still dirty (none after an export) and stops.
    pub fn release(&self, shard: ShardId) {
        for entry in self.stop_serving(shard) {
            let (stopped, _) = tokio::sync::oneshot::channel();
            entry.addr.do_send(Shutdown { stopped });
        }
    }

    /// Lets go of a shard that moved by failover while this node was cut off: its actors
    /// stop without storing anything.
    pub fn discard(&self, shard: ShardId) {
        for entry in self.stop_serving(shard) {
            entry.addr.do_send(Discard);
        }
    }

    /// Stops serving `shard` and takes its actors out of the registry.
    fn stop_serving(&self, shard: ShardId) -> Vec<Entry> {
        let mut write = self.shard(shard).write().expect("not poisoned");
        write.serving = false;
        write.actors.drain().map(|(_, entry)| entry).collect()
    }

    /// Everything the shard's backup must hold: each user's slots and unstored progress.
    pub async fn snapshot(&self, shard: ShardId) -> Vec<(UserId, UserBackup)> {
        let addrs: Vec<(UserId, Addr<UserActor>)> = {
            let read = self.shard(shard).read().expect("not poisoned");
            read.actors
                .iter()
                .map(|(user, entry)| (user.clone(), entry.addr.clone()))
                .collect()
        };
        let asks = addrs.into_iter().map(|(user, addr)| async move {
            let (done, answer) = tokio::sync::oneshot::channel();
            addr.do_send(Snapshot { done });
            // An actor that stopped meanwhile held nothing.
            answer.await.ok().map(|backup| (user, backup))
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Takes over users handed from another node: their actors start holding the slots.
    pub fn install(&self, shard: ShardId, users: Vec<UserHandoff>) {
        let mut write = self.shard(shard).write().expect("not poisoned");
        // An import comes only while another node owns the shard, so whatever this node
        // still holds of it is from an ownership it lost (the shard failed over while it
        // was paused or cut off), older than what comes in: it goes, storing nothing
        // (storing it could overwrite what players did since), and the shard is served
        // again only once the move completes.
        write.serving = false;
        for (_, stale) in write.actors.drain() {
            stale.addr.do_send(Discard);
        }
        for UserHandoff { user, slots } in users {
            let entry = self.start_actor(shard, &user, slots, false);
            write.actors.insert(user, entry);
        }
    }

    /// Moves every actor off the HTTP worker threads (flushed, slots handed to a pool
    /// actor), waiting up to `deadline`. Call before stopping HTTP: stopping it drops
    /// whatever still runs on its threads.
    pub async fn move_actors_off_workers(&self, deadline: Duration) {
        self.inner.leaving_workers.store(true, Ordering::Release);
        let started = Instant::now();
        // An address hashes by the identity of its channel, which never changes.
        #[allow(clippy::mutable_key_type)]
        let mut asked = HashSet::new();
        loop {
            // Repeated until none is left, so an actor started on a worker by a request
            // that raced with the flag is moved too.
            let on_workers = self.addresses(|entry| entry.on_http_worker);
            if on_workers.is_empty() {
                tracing::info!(
                    actors = asked.len(),
                    "user actors moved off the HTTP workers"
                );
                return;
            }
            if started.elapsed() >= deadline {
                tracing::error!(
                    actors = on_workers.len(),
                    "user actors still on HTTP workers at the shutdown deadline"
                );
                return;
            }
            // An actor moves once its progress is stored, and a node without its
            // ownership lease stores nothing (another node may own the shard by now):
            // waiting for them would only wait out the deadline.
            if !self.inner.services.lease.is_valid() {
                tracing::error!(
                    actors = on_workers.len(),
                    "no ownership lease (quorum lost or cut off): these user actors cannot store their progress, which is counted lost"
                );
                return;
            }
            for addr in on_workers {
                if asked.insert(addr.clone()) {
                    addr.do_send(Evacuate);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn addresses(&self, keep: impl Fn(&Entry) -> bool) -> Vec<Addr<UserActor>> {
        self.inner
            .shards
            .iter()
            .flat_map(|shard| {
                let read = shard.read().expect("not poisoned");
                read.actors
                    .values()
                    .filter(|e| keep(e))
                    .map(|e| e.addr.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Flushes and stops every actor, waiting up to `deadline`, then stops the actor
    /// threads. Requests after this start nothing.
    pub async fn shutdown(&self, deadline: Duration) {
        let addrs: Vec<Addr<UserActor>> = self
            .inner
            .shards
            .iter()
            .flat_map(|shard| {
                let mut write = shard.write().expect("not poisoned");
                write.serving = false;
                write
                    .actors
                    .drain()
                    .map(|(_, e)| e.addr)
                    .collect::<Vec<_>>()
            })
            .collect();
        let stopped = addrs.iter().map(|addr| {
            let (stopped, on_stop) = tokio::sync::oneshot::channel();
            addr.do_send(Shutdown { stopped });
            // An actor already gone drops the sender: that counts as stopped too.
            on_stop
        });
        let all = futures_util::future::join_all(stopped);
        let timed_out = tokio::time::timeout(deadline, all).await.is_err();
        if timed_out {
            tracing::error!("user actors did not finish flushing before the shutdown deadline");
        }
        let threads = std::mem::take(&mut *self.inner.owned_threads.lock().expect("not poisoned"));
        for thread in threads {
            thread.stop();
            // Joining blocks; the threads have nothing left to run, so it is immediate.
            let _ = thread.join();
        }
        // Actors that stopped with unstored progress counted it; what is still taken
        // belongs to actors HTTP's stop dropped on a worker thread: it will not be written.
        let unflushed = self.inner.services.dirty.lose_the_rest();
        if unflushed > 0 {
            tracing::error!(
                unflushed,
                "stopped with unflushed progress of dropped actors"
            );
        }
    }
}

/// Which actor thread a user lives on: stable, so one user's actor restarts where it was.
impl ActorHome for Registry {
    fn settings(&self) -> &ActorSettings {
        Registry::settings(self)
    }

    fn services(&self) -> &Arc<UserServices> {
        Registry::services(self)
    }

    fn retire(&self, shard: ShardId, user: &UserId, addr: &Addr<UserActor>) -> bool {
        let mut write = self.shard(shard).write().expect("not poisoned");
        let retire = write.actors.get(user.as_str()).is_some_and(|entry| {
            entry.addr == *addr && entry.in_flight.load(Ordering::Acquire) == 0
        });
        if retire {
            write.actors.remove(user.as_str());
        }
        retire
    }

    fn hand_over(
        &self,
        shard: ShardId,
        user: &UserId,
        addr: &Addr<UserActor>,
        slots: &StreamSlots,
    ) -> bool {
        let mut write = self.shard(shard).write().expect("not poisoned");
        match write.actors.get_mut(user.as_str()) {
            Some(entry) if entry.addr == *addr && entry.in_flight.load(Ordering::Acquire) == 0 => {
                *entry = self.start_actor(shard, user, slots.clone(), false);
                true
            }
            _ => false,
        }
    }
}

fn thread_of(user: &UserId, threads: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(user.as_str().as_bytes()) % threads as u64) as usize
}
