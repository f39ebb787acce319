//! Finds or starts the actor of a user, places it, and lets an idle actor retire without
//! ever losing a request that raced with its retirement.
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
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Arbiter, ArbiterHandle, Handler, MailboxError, Message};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;

use super::services::UserServices;
use super::user::{Evacuate, Shutdown, UserActor};
use crate::domain::{StreamSlots, UserId};

#[derive(Clone, Debug)]
pub struct ActorSettings {
    pub threads: usize,
    pub idle_timeout: Duration,
    pub tick: Duration,
    pub call_timeout: Duration,
    /// Start actors on the HTTP worker thread that first needs them.
    pub host_on_http_workers: bool,
}

/// Mailbox slots per actor; one user rarely has more than a few requests queued, but a
/// burst (a reconnecting household) should queue rather than spin on a full mailbox.
const MAILBOX_CAPACITY: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ActorUnavailable {
    #[error("the user's actor did not answer in time")]
    Timeout,
    #[error("the user's actor stopped unexpectedly")]
    Stopped,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    actors: DashMap<UserId, Entry>,
    threads: Vec<ArbiterHandle>,
    owned_threads: Mutex<Vec<Arbiter>>,
    settings: ActorSettings,
    services: Arc<UserServices>,
    /// Set once shutdown begins: from then on actors start on the pool only.
    leaving_workers: AtomicBool,
}

struct Entry {
    addr: Addr<UserActor>,
    in_flight: Arc<AtomicUsize>,
    on_http_worker: bool,
}

thread_local! {
    static HOSTS_ACTORS: Cell<bool> = const { Cell::new(false) };
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

/// Lets `UserActor` receive `Tracked<M>` for each message it handles. A blanket impl over
/// every `M` sends the trait solver into `Tracked<Tracked<…>>`, hence the list.
macro_rules! tracked_messages {
    ($($msg:ty),* $(,)?) => {$(
        impl Handler<Tracked<$msg>> for UserActor {
            type Result = <UserActor as Handler<$msg>>::Result;

            fn handle(&mut self, tracked: Tracked<$msg>, ctx: &mut Self::Context) -> Self::Result {
                // The guard drops when this returns: the message's effect is done.
                <UserActor as Handler<$msg>>::handle(self, tracked.msg, ctx)
            }
        }
    )*};
}

tracked_messages!(
    super::Heartbeat,
    super::EndStream,
    super::ListStreams,
    super::GetProgress,
    super::SetProgress,
    super::ClearProgress,
    super::GetWatchlist,
    super::EditWatchlist,
);

impl Registry {
    /// Starts `settings.threads` actor threads. Must run inside an actix `System`.
    pub fn start(settings: ActorSettings, services: Arc<UserServices>) -> Registry {
        let owned: Vec<Arbiter> = (0..settings.threads.max(1))
            .map(|_| Arbiter::new())
            .collect();
        let threads = owned.iter().map(Arbiter::handle).collect();
        Registry {
            inner: Arc::new(Inner {
                actors: DashMap::new(),
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

    /// User actors running now.
    pub fn len(&self) -> usize {
        self.inner.actors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.actors.is_empty()
    }

    /// Delivers `msg` to the user's actor, starting one if needed, and waits for the answer.
    pub async fn call<M>(&self, user: &UserId, msg: M) -> Result<M::Result, ActorUnavailable>
    where
        M: Message + Send + 'static,
        M::Result: Send + 'static,
        UserActor: Handler<Tracked<M>>,
        <UserActor as Actor>::Context: ToEnvelope<UserActor, Tracked<M>>,
    {
        let (addr, request) = {
            // Held until the message is enqueued (or parked on a full mailbox, still
            // counted), so retirement cannot slip in between lookup and send.
            let entry = match self.inner.actors.get(user.as_str()) {
                Some(entry) => entry,
                None => self
                    .inner
                    .actors
                    .entry(user.clone())
                    .or_insert_with(|| self.spawn(user))
                    .downgrade(),
            };
            let tracked = Tracked {
                msg,
                _in_flight: InFlight::new(&entry.in_flight),
            };
            (entry.addr.clone(), entry.addr.send(tracked))
        };
        match request.timeout(self.inner.settings.call_timeout).await {
            Ok(answer) => Ok(answer),
            Err(MailboxError::Timeout) => {
                self.inner.services.metrics.actor_unavailable.inc();
                Err(ActorUnavailable::Timeout)
            }
            Err(MailboxError::Closed) => {
                // Only a crashed actor closes with its entry still present; forget it so
                // the next request starts afresh.
                self.inner
                    .actors
                    .remove_if(user.as_str(), |_, entry| entry.addr == addr);
                self.inner.services.metrics.actor_unavailable.inc();
                tracing::error!(user = %user, "user actor stopped unexpectedly");
                Err(ActorUnavailable::Stopped)
            }
        }
    }

    fn spawn(&self, user: &UserId) -> Entry {
        let on_http_worker = self.inner.settings.host_on_http_workers
            && HOSTS_ACTORS.get()
            && !self.inner.leaving_workers.load(Ordering::Acquire);
        self.start_actor(user, StreamSlots::default(), on_http_worker)
    }

    fn start_actor(&self, user: &UserId, slots: StreamSlots, on_http_worker: bool) -> Entry {
        let thread = if on_http_worker {
            Arbiter::current()
        } else {
            self.inner.threads[thread_of(user, self.inner.threads.len())].clone()
        };
        let registry = self.clone();
        let owner = user.clone();
        let addr = UserActor::start_in_arbiter(&thread, move |ctx| {
            ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
            UserActor::new(owner, registry, slots)
        });
        Entry {
            addr,
            in_flight: Arc::new(AtomicUsize::new(0)),
            on_http_worker,
        }
    }

    /// Replaces a worker-hosted actor by a successor on the pool that holds its slots, if
    /// the entry is still that actor's and nothing is in flight to it (as in `retire`).
    /// On `true` the actor must stop; its requests now reach the successor.
    pub(super) fn hand_over(
        &self,
        user: &UserId,
        addr: &Addr<UserActor>,
        slots: &StreamSlots,
    ) -> bool {
        match self.inner.actors.entry(user.clone()) {
            MapEntry::Occupied(mut entry)
                if entry.get().addr == *addr
                    && entry.get().in_flight.load(Ordering::Acquire) == 0 =>
            {
                let successor = self.start_actor(user, slots.clone(), false);
                entry.insert(successor);
                true
            }
            _ => false,
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
            let on_workers: Vec<Addr<UserActor>> = self
                .inner
                .actors
                .iter()
                .filter(|entry| entry.on_http_worker)
                .map(|entry| entry.addr.clone())
                .collect();
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
            for addr in on_workers {
                if asked.insert(addr.clone()) {
                    addr.do_send(Evacuate);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Removes the actor's entry if it is still this actor's and nothing is in flight to
    /// it. On `true` the actor must stop: no request can reach it any more.
    pub(super) fn retire(&self, user: &UserId, addr: &Addr<UserActor>) -> bool {
        self.inner
            .actors
            .remove_if(user.as_str(), |_, entry| {
                entry.addr == *addr && entry.in_flight.load(Ordering::Acquire) == 0
            })
            .is_some()
    }

    /// Flushes and stops every actor, waiting up to `deadline`, then stops the actor
    /// threads. Requests after this start nothing.
    pub async fn shutdown(&self, deadline: Duration) {
        let addrs: Vec<Addr<UserActor>> = self
            .inner
            .actors
            .iter()
            .map(|entry| entry.addr.clone())
            .collect();
        self.inner.actors.clear();
        let stopped = addrs.iter().map(|addr| {
            let (stopped, on_stop) = tokio::sync::oneshot::channel();
            addr.do_send(Shutdown { stopped });
            // An actor already gone drops the sender: that counts as stopped too.
            on_stop
        });
        let all = futures_util::future::join_all(stopped);
        let timed_out = tokio::time::timeout(deadline, all).await.is_err();
        // Whatever is still dirty now belongs to actors that timed out, or that HTTP's
        // stop dropped on a worker thread: it will not be written.
        let unflushed = self.inner.services.dirty.used();
        if timed_out || unflushed > 0 {
            tracing::error!(
                unflushed,
                "user actors did not finish flushing before the shutdown deadline"
            );
            self.inner
                .services
                .metrics
                .progress_lost
                .inc_by(unflushed as u64);
        }
        let threads = std::mem::take(&mut *self.inner.owned_threads.lock().expect("not poisoned"));
        for thread in threads {
            thread.stop();
            // Joining blocks; the threads have nothing left to run, so it is immediate.
            let _ = thread.join();
        }
    }
}

/// Which actor thread a user lives on: stable, so one user's actor restarts where it was.
fn thread_of(user: &UserId, threads: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(user.as_str().as_bytes()) % threads as u64) as usize
}
