//! Whether this node's Raft RPCs reach each peer, logged as changes rather than per call.
//!
//! openraft logs every failed RPC to a down peer at ERROR ("timeout while confirming
//! leadership for read request" once per lease round and peer, "error replication to
//! target" per retry): about 20 lines a second while one peer is down, which buries the
//! lines that matter and pages whoever alerts on ERROR. Those callsites are taken out of
//! the log by [`RaftRpcNoise`], and [`PeerHealth`] says the same thing once: a WARN when a
//! peer stops answering, a WARN summary every [`SUMMARY_EVERY`] while it stays down, and
//! an INFO when it answers again.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How often a peer that stays unreachable is mentioned again.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// The Raft RPC outcomes of one node, per peer.
#[derive(Debug, Default)]
pub struct PeerHealth {
    down: Mutex<HashMap<u64, Outage>>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failures: u64,
    last_said: Instant,
}

/// What to log after recording an outcome.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    WentDown,
    StillDown { for_: Duration, failures: u64 },
    CameBack { after: Duration, failures: u64 },
}

impl PeerHealth {
    /// A call to `peer` answered (an error answer counts: the peer is there).
    pub fn answered(&self, peer: u64) {
        if let Some(Change::CameBack { after, failures }) = self.record(peer, None, Instant::now())
        {
            tracing::info!(
                peer,
                down_ms = after.as_millis() as u64,
                failed_calls = failures,
                "peer reachable again"
            );
        }
    }

    /// A call to `peer` got no answer.
    pub fn unreachable(&self, peer: u64, reason: &dyn fmt::Display) {
        match self.record(peer, Some(()), Instant::now()) {
            Some(Change::WentDown) => {
                tracing::warn!(peer, error = %reason, "peer unreachable: Raft calls to it fail")
            }
            Some(Change::StillDown { for_, failures }) => tracing::warn!(
                peer,
                down_ms = for_.as_millis() as u64,
                failed_calls = failures,
                error = %reason,
                "peer still unreachable"
            ),
            _ => {}
        }
    }

    /// Peers that did not answer their last call.
    #[cfg(test)]
    fn down(&self) -> Vec<u64> {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        let mut peers: Vec<u64> = down.keys().copied().collect();
        peers.sort_unstable();
        peers
    }

    fn record(&self, peer: u64, failed: Option<()>, now: Instant) -> Option<Change> {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match (failed, down.get_mut(&peer)) {
            (None, None) => None,
            (None, Some(_)) => {
                let outage = down.remove(&peer)?;
                Some(Change::CameBack {
                    after: now.duration_since(outage.since),
                    failures: outage.failures,
                })
            }
            (Some(()), None) => {
                down.insert(
                    peer,
                    Outage {
                        since: now,
                        failures: 1,
                        last_said: now,
                    },
                );
                Some(Change::WentDown)
            }
            (Some(()), Some(outage)) => {
                outage.failures += 1;
                if now.duration_since(outage.last_said) < SUMMARY_EVERY {
                    return None;
                }
                outage.last_said = now;
                Some(Change::StillDown {
                    for_: now.duration_since(outage.since),
                    failures: outage.failures,
                })
            }
        }
    }
}

/// openraft's per-call lines about a peer that did not answer, which [`PeerHealth`]
/// replaces. Matched by message, so that a new openraft line is shown, not hidden.
const RAFT_RPC_NOISE: &[&str] = &[
    "timeout while confirming leadership for read request",
    "update progress error",
    "error replication to target",
    "RPCError",
    "heartbeat error",
    "InstallSnapshot RPC timed out",
    "error sending InstallSnapshot RPC",
];

/// A logging layer that disables openraft's per-call RPC failure lines (WARN and ERROR)
/// for every layer. Add it over the formatting subscriber.
#[derive(Debug, Default)]
pub struct RaftRpcNoise;

impl<S: Subscriber> Layer<S> for RaftRpcNoise {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || !meta.target().starts_with("openraft") {
            return true;
        }
        let message = crate::telemetry::EventMessage::of(event);
        !is_rpc_noise(&message.0)
    }
}

fn is_rpc_noise(message: &str) -> bool {
    RAFT_RPC_NOISE
        .iter()
        .any(|noise| message.starts_with(noise))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_going_down_is_said_once_then_summarised_then_its_return() {
        let health = PeerHealth::default();
        let start = Instant::now();
        assert_eq!(
            health.record(2, None, start),
            None,
            "up and answering: nothing"
        );
        assert_eq!(health.record(2, Some(()), start), Some(Change::WentDown));
        for i in 1..100 {
            let at = start + Duration::from_millis(50 * i);
            assert_eq!(health.record(2, Some(()), at), None, "call {i}");
        }
        assert_eq!(health.down(), vec![2]);
        let later = start + SUMMARY_EVERY;
        assert_eq!(
            health.record(2, Some(()), later),
            Some(Change::StillDown {
                for_: SUMMARY_EVERY,
                failures: 101
            })
        );
        assert_eq!(health.record(2, Some(()), later), None);
        // Another peer has an outage of its own.
        assert_eq!(health.record(3, Some(()), later), Some(Change::WentDown));
        let back = later + Duration::from_secs(1);
        assert_eq!(
            health.record(2, None, back),
            Some(Change::CameBack {
                after: SUMMARY_EVERY + Duration::from_secs(1),
                failures: 102
            })
        );
        assert_eq!(health.record(2, None, back), None);
        assert_eq!(health.down(), vec![3]);
    }

    #[test]
    fn openraft_rpc_failures_are_noise_and_its_other_lines_are_not() {
        assert!(is_rpc_noise(
            "timeout while confirming leadership for read request"
        ));
        assert!(is_rpc_noise("error replication to target=2"));
        assert!(!is_rpc_noise("quit RaftCore::main on error"));
        assert!(!is_rpc_noise(
            "LogFlush error: disk full, while flushing upto 7"
        ));
    }
}
