//! Accounts whose three streams are alive, kept so by renewals through any node, never
//! get a fourth around a failover of their owner and its return: the owner paused (SIGSTOP)
//! for longer than `failover_after` and resumed, or killed (SIGKILL) and restarted on its
//! data dir. Tried both ways under players who renew through random nodes and ask for a
//! fourth stream every round.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use super::aws::{AwsFixture, endpoint};
use super::cluster::{route, settled, status, users_of};
use super::failover::three_nodes;
use super::helpers::{eventually, sessions, signal, unsigned_token};

/// Accounts of the owner that goes away; each holds three streams.
const ACCOUNTS: usize = 12;
const HELD: [&str; 3] = ["held-0", "held-1", "held-2"];

/// Players of `ACCOUNTS` accounts: each round, an account renews its three streams and
/// asks for a fourth, each request through a node picked at random.
struct Players {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    /// Fourth streams that were accepted: "account via node at second".
    fourths: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Players {
    fn start(entries: Vec<String>, accounts: &[String]) -> Players {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let fourths = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let tasks = accounts
            .iter()
            .cloned()
            .map(|account| {
                let (stop, rounds, fourths) = (stop.clone(), rounds.clone(), fourths.clone());
                let entries = entries.clone();
                // A paused node holds a request until it resumes: a player gives up on it.
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_millis(500))
                    .build()
                    .expect("a client");
                tokio::spawn(async move {
                    let token = unsigned_token(&account);
                    let put = |entry: &str, session: &str| {
                        client
                            .put(format!("{entry}/v1/streams/{session}"))
                            .header("authorization", format!("Bearer {token}"))
                            .json(&json!({ "streamId": "film" }))
                            .send()
                    };
                    while !stop.load(Ordering::Relaxed) {
                        for session in HELD {
                            let entry = &entries[rand::random_range(0..entries.len())];
                            let _ = put(entry, session).await;
                        }
                        let entry = &entries[rand::random_range(0..entries.len())];
                        if let Ok(answer) = put(entry, "fourth").await
                            && answer.status() == 200
                        {
                            fourths
                                .lock()
                                .unwrap()
                                .push(format!("{account} via {entry} at {:?}", started.elapsed()));
                        }
                        rounds.fetch_add(1, Ordering::Relaxed);
                        // A player's pace, not a synchronisation.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            })
            .collect();
        Players {
            stop,
            rounds,
            fourths,
            tasks,
        }
    }

    /// Waits until every account has played about `more` rounds more.
    async fn play(&self, more: u64) {
        let from = self.rounds.load(Ordering::Relaxed);
        let target = from + more * ACCOUNTS as u64;
        eventually("the players to go on", || async {
            (self.rounds.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
    }

    /// Stops the players; the fourth streams that were accepted.
    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.fourths.lock().unwrap().clone()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// SIGSTOP past `failover_after`, then SIGCONT.
    Pause,
    /// The same, of the Raft leader: the others elect another, which fails it over.
    PauseLeader,
    /// SIGKILL, then a restart on the data dir.
    Crash,
}

async fn no_fourth_stream_around(fault: Fault) {
    let aws = AwsFixture::new(&endpoint()).await;
    let mut nodes = three_nodes(&aws).await;
    let leader = status(&nodes[0])["leader"].as_u64().unwrap();
    // A follower goes away (the leader drives the failover and the rejoin), or the leader.
    let victim = match fault {
        Fault::PauseLeader => leader,
        _ => (1..=3u64).find(|id| *id != leader).unwrap(),
    };
    let index = victim as usize - 1;
    let survivor = (0..3).find(|i| *i != index).unwrap();
    let accounts = users_of(&nodes[survivor], victim, ACCOUNTS).await;
    for account in &accounts {
        for (k, session) in HELD.iter().enumerate() {
            let via = &nodes[k % 3];
            let taken = via
                .as_user(Method::PUT, &format!("/v1/streams/{session}"), account)
                .json(&json!({ "streamId": "film" }))
                .send()
                .await
                .unwrap();
            assert_eq!(taken.status(), 200);
        }
    }
    let entries: Vec<String> = nodes.iter().map(|n| n.url("")).collect();
    let players = Players::start(entries, &accounts);
    // Long enough that every slot lives on renewals, past its first lease.
    players.play(25).await;

    let pid = nodes[index].pid().unwrap();
    match fault {
        Fault::Pause | Fault::PauseLeader => signal(pid, "-STOP"),
        Fault::Crash => nodes[index].crash(),
    }
    let via = &nodes[survivor];
    eventually("the survivors to take the accounts over", || async {
        for account in &accounts {
            if route(via, account).await["owner"] == json!(victim) {
                return None;
            }
        }
        Some(())
    })
    .await;
    // Paused well past the failover, as a stopped VM or a long GC would be.
    players.play(8).await;
    match fault {
        Fault::Pause | Fault::PauseLeader => signal(pid, "-CONT"),
        Fault::Crash => {
            let crashed = nodes.remove(index);
            let back = crashed.start_again().await;
            nodes.insert(index, back);
        }
    }
    // It catches up and gets its share back by rebalancing, players playing throughout.
    settled(&nodes[survivor], 3).await;
    players.play(15).await;
    let fourths = players.stop().await;
    assert!(
        fourths.is_empty(),
        "accounts at their limit got a fourth stream: {fourths:#?}"
    );
    for account in &accounts {
        let mut held = sessions(&nodes[survivor], account).await;
        held.sort();
        assert_eq!(held, HELD, "the streams of {account}");
    }
}

#[tokio::test]
async fn a_paused_owner_resumed_frees_no_renewed_slot() {
    no_fourth_stream_around(Fault::Pause).await;
}

#[tokio::test]
async fn a_crashed_owner_restarted_frees_no_renewed_slot() {
    no_fourth_stream_around(Fault::Crash).await;
}

#[tokio::test]
async fn a_paused_leader_resumed_frees_no_renewed_slot() {
    no_fourth_stream_around(Fault::PauseLeader).await;
}
