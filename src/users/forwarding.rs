//! Forwarding a user command to the node that owns its shard.
//!
//! Stream commands (heartbeats, stops, listings: memory only, never the store) share
//! batches: each HTTP worker keeps one lane per owner with one request in flight, and the
//! commands that arrive meanwhile go together in the next request. A node then pays for
//! one HTTP exchange, one wake-up of each side and one syscall pair per batch rather than
//! per command, which is where a forwarded command's cost went. Library commands may wait
//! on the store (loading a library, writing a watchlist edit through), so they go alone:
//! a slow store must never hold up the heartbeats of other users.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::HeaderValue;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::actors::{ActorUnavailable, CommandReply, UserCommand};
use crate::cluster::{PeerError, Peers, ShardId};
use crate::domain::UserId;
use crate::telemetry::Metrics;

crate::cluster::endpoint::endpoint!(
    /// Where the owner takes forwarded commands, a batch at a time; it answers in the
    /// same order.
    Forward, Post "/cluster/forward", Vec<ForwardedCommand> => Vec<ForwardedReply>
);

/// How many commands one batch carries at most.
const MAX_BATCH: usize = 64;

/// A command sent to the node that owns the user's shard.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedCommand {
    pub shard: ShardId,
    /// The epoch of the shard in the sender's table.
    pub epoch: u64,
    pub user: UserId,
    pub command: UserCommand,
    /// The correlation id of the request the command serves, so that the owner's log
    /// line for it carries the id the sender's access line does. Absent from senders
    /// that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

tokio::task_local! {
    /// The correlation id of the request a task serves (set by the access-log middleware).
    pub static REQUEST_CORRELATION_ID: HeaderValue;
}

/// The correlation id of the request this task serves, if any (and if it is text).
pub fn correlation_id() -> Option<String> {
    REQUEST_CORRELATION_ID
        .try_with(|id| id.to_str().ok().map(str::to_owned))
        .ok()
        .flatten()
}

/// The owner's answer to a forwarded command.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardedReply {
    Done(CommandReply),
    /// The shard is not this node's at that epoch: the sender's table is stale.
    Moved,
    Unavailable(OwnerUnavailable),
}

/// Why the owner could not run a forwarded command now. On the wire as its message, as
/// earlier releases sent it (a rolling upgrade has both): each kind has one fixed
/// message, so the kind is read back from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerUnavailable {
    #[error(transparent)]
    Actor(ActorUnavailable),
    #[error("{}", super::SHARD_MOVING)]
    ShardMoving,
    /// The owner's ownership lease has run out (it cannot reach the leader): it serves
    /// again once it can, or another node takes the shard by failover.
    #[error("{}", super::NO_LEASE)]
    NoLease,
    /// The sender and the owner place the user in different shards.
    #[error("the user is not in the shard the sender named")]
    WrongShard,
    /// A reason from a node of another release that this one does not know.
    #[error("{0}")]
    Unrecognized(String),
}

impl OwnerUnavailable {
    const KNOWN: [OwnerUnavailable; 5] = [
        OwnerUnavailable::Actor(ActorUnavailable::Timeout),
        OwnerUnavailable::Actor(ActorUnavailable::Stopped),
        OwnerUnavailable::ShardMoving,
        OwnerUnavailable::NoLease,
        OwnerUnavailable::WrongShard,
    ];
}

impl Serialize for OwnerUnavailable {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OwnerUnavailable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let message = String::deserialize(deserializer)?;
        Ok(OwnerUnavailable::KNOWN
            .into_iter()
            .find(|known| known.to_string() == message)
            .unwrap_or(OwnerUnavailable::Unrecognized(message)))
    }
}

type Waiter = oneshot::Sender<Result<ForwardedReply, PeerError>>;

/// The commands waiting for one owner, on one thread. The mutex is uncontended (its
/// thread's requests and the lane's sending task, spawned on that thread's runtime); it
/// is there because `tokio::spawn` needs `Send`.
#[derive(Default)]
struct Lane {
    pending: Vec<(Vec<u8>, Waiter)>,
    sending: bool,
}

thread_local! {
    /// This thread's lanes, by the owner's cluster address. Per thread, so that the hot
    /// path shares no lock with other threads, and a command's batch is sent and answered
    /// on the thread that serves its request. (Lanes shared by all workers made batches
    /// about 2 commands instead of 1.5, at no measurable CPU gain.)
    static LANES: RefCell<HashMap<Arc<str>, Arc<Mutex<Lane>>>> = RefCell::new(HashMap::new());
}

/// Sends forwarded commands to their owners.
#[derive(Clone)]
pub struct Forwarder {
    peers: Peers,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    pub fn new(peers: Peers, timeout: Duration, metrics: Arc<Metrics>) -> Forwarder {
        Forwarder {
            peers,
            timeout,
            metrics,
        }
    }

    /// Sends `forwarded` to the owner listening at `addr` and waits for its answer.
    pub async fn send(
        &self,
        addr: &str,
        forwarded: &ForwardedCommand,
    ) -> Result<ForwardedReply, PeerError> {
        let item = serde_json::to_vec(forwarded).expect("a command serializes");
        let (waiter, answer) = oneshot::channel();
        if forwarded.command.is_memory_only() {
            self.enqueue(addr, item, waiter);
        } else {
            self.deliver(addr, vec![(item, waiter)]).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(PeerError::Unreachable {
                addr: addr.to_owned(),
                reason: "the forwarding task stopped".into(),
            })
        })
    }

    /// Puts a stream command in this thread's lane to `addr`, and starts the lane's
    /// sending task unless it is running.
    fn enqueue(&self, addr: &str, item: Vec<u8>, waiter: Waiter) {
        let lane = LANES.with(|lanes| {
            let mut lanes = lanes.borrow_mut();
            match lanes.get(addr) {
                Some(lane) => Arc::clone(lane),
                None => Arc::clone(lanes.entry(Arc::from(addr)).or_default()),
            }
        });
        let start = {
            let mut lane = lane.lock().expect("lane lock");
            lane.pending.push((item, waiter));
            !std::mem::replace(&mut lane.sending, true)
        };
        if start {
            // Detached: a caller that goes away must not take other callers' batch along.
            tokio::spawn(self.clone().drain(addr.to_owned(), lane));
        }
    }

    /// Sends the lane's commands, a batch at a time, until none are waiting.
    async fn drain(self, addr: String, lane: Arc<Mutex<Lane>>) {
        loop {
            let batch: Vec<(Vec<u8>, Waiter)> = {
                let mut lane = lane.lock().expect("lane lock");
                if lane.pending.is_empty() {
                    lane.sending = false;
                    return;
                }
                let n = lane.pending.len().min(MAX_BATCH);
                lane.pending.drain(..n).collect()
            };
            self.deliver(&addr, batch).await;
        }
    }

    /// Sends one batch and hands each waiter its answer (or the batch's failure).
    async fn deliver(&self, addr: &str, batch: Vec<(Vec<u8>, Waiter)>) {
        self.metrics.cluster.forward_requests.inc();
        let body = batch_body(batch.iter().map(|(item, _)| item));
        let answered = self
            .peers
            .call_encoded::<Forward>(addr, body, self.timeout)
            .await;
        let failure = match answered {
            Ok(replies) if replies.len() == batch.len() => {
                for ((_, waiter), reply) in batch.into_iter().zip(replies) {
                    let _ = waiter.send(Ok(reply));
                }
                return;
            }
            Ok(replies) => PeerError::Decode {
                addr: addr.to_owned(),
                reason: format!("{} answers to {} commands", replies.len(), batch.len()),
            },
            Err(e) => e,
        };
        for (_, waiter) in batch {
            let _ = waiter.send(Err(failure.clone()));
        }
    }
}

/// `[item,item,…]` from items that are each one JSON value.
fn batch_body<'a>(items: impl Iterator<Item = &'a Vec<u8>>) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    body.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.push(b']');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_body_is_a_json_array_of_its_items() {
        let items = [b"1".to_vec(), b"{\"a\":2}".to_vec()];
        let body = batch_body(items.iter());
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed, serde_json::json!([1, { "a": 2 }]));
        assert_eq!(batch_body(std::iter::empty()), b"[]");
    }

    #[test]
    fn why_an_owner_is_unavailable_survives_the_wire() {
        for reason in OwnerUnavailable::KNOWN {
            let sent = serde_json::to_string(&ForwardedReply::Unavailable(reason.clone())).unwrap();
            let received: ForwardedReply = serde_json::from_str(&sent).unwrap();
            assert!(
                matches!(&received, ForwardedReply::Unavailable(r) if *r == reason),
                "{sent} came back as {received:?}"
            );
        }
    }

    #[test]
    fn an_owner_of_an_earlier_release_is_understood() {
        // As today's release words them.
        let no_lease = "this node's ownership lease has run out (it cannot reach the cluster's \
             leader); the user's shard is served again once it can, or by another node after \
             failover";
        let timeout = "the user's actor did not answer in time";
        for (message, kind) in [
            (no_lease, OwnerUnavailable::NoLease),
            (timeout, OwnerUnavailable::Actor(ActorUnavailable::Timeout)),
        ] {
            let sent = serde_json::json!({ "Unavailable": message });
            let received: ForwardedReply = serde_json::from_value(sent).unwrap();
            assert!(
                matches!(&received, ForwardedReply::Unavailable(r) if *r == kind),
                "{received:?}"
            );
        }
        let unknown = serde_json::json!({ "Unavailable": "user u is not in shard 3" });
        let received: ForwardedReply = serde_json::from_value(unknown).unwrap();
        assert!(
            matches!(&received, ForwardedReply::Unavailable(OwnerUnavailable::Unrecognized(m)) if m == "user u is not in shard 3"),
            "{received:?}"
        );
    }
}
