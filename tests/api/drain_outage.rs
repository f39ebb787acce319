//! DynamoDB goes away while a node drains: the drain waits for the store, finishes once
//! it is back, and nothing the node held is lost (issue 10).
//!
//! The nodes share a table on an emulator of this test's own, which it stops. A stopped
//! moto comes back empty, so what the drain must not lose is what only the draining node
//! held at the time: its users' progress, dirty in memory (a long flush interval keeps it
//! there until the handoff stores it), and their live slots.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use playstate::cluster::shard_of;

use super::aws::{AwsFixture, PrivateEmulator};
use super::cluster::{heartbeat, node_with, ready, route, settled, status, users_of};
use super::helpers::{TestNode, asset, eventually, sessions, signal, user};

/// `cluster.shards`, left at its default.
const SHARDS: u32 = 1024;

/// Small cluster timeouts; progress stays dirty until a handoff or stop stores it, and
/// heartbeat slots outlive the test, so only the handoff can lose them. The leader gives
/// up on an export after `2 × handoff_wait + 10 s`.
fn config(handoff_wait: &str) -> String {
    format!(
        r#"
[cluster]
heartbeat_interval = "100ms"
election_timeout = "800ms"
handoff_wait = "{handoff_wait}"
ownership_lease = "2s"
failover_after = "3s"
backup_interval = "200ms"
drain_timeout = "2m"
[progress]
flush_interval = "60s"
[actors]
tick = "100ms"
[streams]
heartbeat_interval = "60s"
"#
    )
}

/// The node that owns `user`'s shard, as `via`'s table says.
async fn owner_of(via: &TestNode, user: &str) -> u64 {
    route(via, user).await["owner"]
        .as_u64()
        .expect("the shard has an owner")
}

/// A node's log without the access log and Raft's chatter: what a failure message needs.
fn story(node: &TestNode) -> String {
    node.logs()
        .lines()
        .filter(|l| !l.contains(r#""message":"request""#) && !l.contains("openraft"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether process `pid` is still running (not exited, nor a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// `count` fresh users in one shard that `node_id` owns: one export holds them all.
async fn users_of_one_shard(via: &TestNode, node_id: u64, count: usize) -> Vec<String> {
    let mut found = users_of(via, node_id, 1).await;
    let shard = shard_of(&found[0], SHARDS);
    while found.len() < count {
        let candidate = user();
        if shard_of(&candidate, SHARDS) == shard {
            assert_eq!(owner_of(via, &candidate).await, node_id, "{candidate}");
            found.push(candidate);
        }
    }
    found
}

async fn put_progress(via: &TestNode, user: &str, asset: &str, seconds: u64) {
    let put = via
        .as_user(Method::PUT, &format!("/v1/progress/{asset}"), user)
        .json(&json!({ "progress": seconds }))
        .send()
        .await
        .expect("PUT progress");
    assert_eq!(put.status(), 200, "progress {seconds} of {user}");
}

/// A short outage: the export the leader asked for waits for the store and completes.
#[tokio::test]
async fn a_drain_waits_out_a_store_outage_and_loses_nothing() {
    drain_during_outage("5s", Duration::from_secs(3), Readers::Spread).await;
}

/// An outage longer than the leader waits for an export (`2 × 1 s + 10 s`): the leader
/// gives the move up and begins it again, and it must still wait for the store. The
/// readers share a shard, so the first export waits on all of them at once.
#[tokio::test]
async fn a_drain_outlasts_the_handoff_timeout_and_loses_nothing() {
    drain_during_outage("1s", Duration::from_secs(16), Readers::OneShard).await;
}

/// Where the users with unstored progress live on the draining node.
enum Readers {
    /// In whatever shards of the node chance puts them.
    Spread,
    /// All in one shard.
    OneShard,
}

/// Two nodes; the follower drains (SIGTERM) while the store is away for `outage`.
async fn drain_during_outage(handoff_wait: &str, outage: Duration, placed: Readers) {
    let config = config(handoff_wait);
    let mut emulator = PrivateEmulator::start().await;
    let aws = AwsFixture::new(&emulator.endpoint()).await;
    let first = node_with(&aws, &config, 1, None, &[]).await;
    ready(&first).await;
    let second = node_with(&aws, &config, 2, Some(&first.cluster_addr), &[]).await;
    ready(&second).await;
    let s = settled(&first, 2).await;
    // The follower drains; the leader stays and drives the moves.
    let leader = s["leader"].as_u64().unwrap();
    let (mut nodes, drained_id) = (vec![first, second], 3 - leader);
    let mut drained = nodes.remove(drained_id as usize - 1);
    let stays = nodes.pop().unwrap();
    let entries = [&stays, &drained];

    // Users of the draining node, written through both nodes: readers with progress
    // (dirty only in its memory), a watchlist entry and one slot; viewers with all three
    // slots.
    let readers = match placed {
        Readers::Spread => users_of(&stays, drained_id, 6).await,
        Readers::OneShard => users_of_one_shard(&stays, drained_id, 4).await,
    };
    let film = asset();
    let progress_of = |i: usize| 1000 + 7 * i as u64;
    for (i, reader) in readers.iter().enumerate() {
        let entry = entries[i % 2];
        put_progress(entry, reader, &film, 1).await;
        let listed = entry
            .as_user(Method::PUT, &format!("/v1/watchlist/{film}"), reader)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200, "watchlist of {reader}");
        put_progress(entries[(i + 1) % 2], reader, &film, progress_of(i)).await;
        assert_eq!(heartbeat(entry, reader, "tv").await, 200);
    }
    let viewers = users_of(&stays, drained_id, 2).await;
    let held: BTreeSet<String> = ["tv", "phone", "tablet"].map(String::from).into();
    for viewer in &viewers {
        for (i, session) in held.iter().enumerate() {
            assert_eq!(heartbeat(entries[i % 2], viewer, session).await, 200);
        }
    }
    // Nothing of it is stored yet: only the draining node has the progress.
    for reader in &readers {
        assert_eq!(aws.stored_progress(reader, &film).await, None, "{reader}");
    }
    assert_eq!(
        drained.metric("playstate_progress_dirty_entries").await,
        readers.len() as f64
    );

    // The store goes away, then the node is asked to drain.
    emulator.stop();
    signal(drained.pid().unwrap(), "-TERM");
    eventually("the node to be draining", || async {
        let s = status(&stays);
        let member = s["members"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == drained_id)?
            .clone();
        (member["state"] == "draining").then_some(())
    })
    .await;
    // While the store is away the progress cannot be stored, so the readers' shards must
    // not move and the drain must not end.
    let watched = Instant::now();
    let mut looks = 0;
    while watched.elapsed() < outage {
        assert!(
            drained.pid().is_some_and(alive),
            "the draining node exited while the store was away:\n{}",
            story(&drained)
        );
        let s = status(&stays);
        assert!(
            s["shards"][drained_id.to_string()].as_u64() > Some(0),
            "the node gave up all its shards while the store was away: {s}\n{}",
            story(&drained)
        );
        for reader in &readers {
            assert_eq!(
                owner_of(&stays, reader).await,
                drained_id,
                "{reader}'s shard moved before its progress was stored; logs:\n{}\n{}",
                story(&drained),
                story(&stays)
            );
        }
        let logs = drained.logs();
        assert!(
            !logs.contains("drained: this node owns no shards")
                && !logs.contains("drain timed out")
                && !logs.contains(r#""message":"stopped""#),
            "the drain ended while the store was away:\n{}",
            story(&drained)
        );
        looks += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(looks >= 5, "the drain was watched only {looks} times");

    // The store comes back (empty, as a restarted emulator is) and the drain finishes.
    let _emulator = PrivateEmulator::start_on(emulator.port).await;
    aws.recreate().await;
    drained.wait_for_exit(Duration::from_secs(45));
    let logs = drained.logs();
    assert!(
        logs.contains("drained: this node owns no shards")
            && !logs.contains("did not finish flushing before the shutdown deadline"),
        "{}",
        story(&drained)
    );
    let s = eventually("the moves to be done", || async {
        let s = status(&stays);
        s["handoffs"].as_array()?.is_empty().then_some(s)
    })
    .await;
    assert_eq!(s["shards"][drained_id.to_string()], 0, "{s}");
    assert_eq!(s["shards"][leader.to_string()], 1024, "{s}");

    // The progress was stored by the handoff, and the new owner serves it.
    for (i, reader) in readers.iter().enumerate() {
        assert_eq!(
            sessions(&stays, reader).await,
            ["tv"],
            "slots of {reader}; logs:\n{}\n{}",
            story(&drained),
            story(&stays)
        );
        assert_eq!(
            aws.stored_progress(reader, &film).await,
            Some(progress_of(i)),
            "stored progress of {reader}"
        );
        assert_eq!(
            stays
                .get_json(&format!("/v1/progress/{film}"), reader)
                .await,
            json!({ "asset": film, "progress": progress_of(i) }),
            "progress of {reader} through node {leader}"
        );
    }
    // The slots moved with their users: still held, and the limit still counts them.
    for viewer in &viewers {
        let seen: BTreeSet<String> = sessions(&stays, viewer).await.into_iter().collect();
        assert_eq!(seen, held, "slots of {viewer}");
        assert_eq!(
            heartbeat(&stays, viewer, "fourth").await,
            429,
            "a 4th stream of {viewer}"
        );
    }
    // The new owner writes the library through to the store again.
    let reader = &readers[0];
    let other = asset();
    let listed = stays
        .as_user(Method::PUT, &format!("/v1/watchlist/{other}"), reader)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let list = stays.get_json("/v1/watchlist", reader).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|e| e["asset"] == other.as_str()),
        "{list}"
    );
    assert_eq!(stays.metric("playstate_progress_lost_total").await, 0.0);
}
