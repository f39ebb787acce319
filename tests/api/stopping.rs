//! A node that has lost its quorum still stops when asked: its drain is bounded by
//! `cluster.drain_timeout`, and a second SIGTERM stops it at once. Either way it flushes
//! the progress it holds and says in one line what it could not do.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::aws::{AwsFixture, endpoint};
use super::cluster::{node_with, ready, settled, users_of};
use super::failover::FAILOVER;
use super::helpers::{TestNode, asset, eventually, signal};

/// Generous: the stop takes a second or two, a hang takes for ever.
const EXIT_WAIT: Duration = Duration::from_secs(45);

/// The last node standing of three (the other two killed), holding a user's unflushed
/// progress: (the node, the user, the asset, how many lines it had logged before the
/// others died).
async fn survivor_without_quorum(
    aws: &AwsFixture,
    drain_timeout: &str,
) -> (TestNode, String, String, usize) {
    // Small Raft timeouts; progress is never flushed on its own, so what is stored after
    // the stop was flushed by it.
    let drain = [("PLAYSTATE_CLUSTER__DRAIN_TIMEOUT", drain_timeout)];
    let first = node_with(aws, FAILOVER, 1, None, &drain).await;
    ready(&first).await;
    let join = first.cluster_addr.clone();
    let mut others = vec![
        node_with(aws, FAILOVER, 2, Some(&join), &drain).await,
        node_with(aws, FAILOVER, 3, Some(&join), &drain).await,
    ];
    for n in &others {
        ready(n).await;
    }
    settled(&first, 3).await;
    let user = users_of(&first, 1, 1).await.pop().unwrap();
    let asset = asset();
    let put = first
        .as_user(Method::PUT, &format!("/v1/progress/{asset}"), &user)
        .json(&json!({ "progress": 321 }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let logged_before = first.logs().lines().count();
    others.iter_mut().for_each(TestNode::crash);
    (first, user, asset, logged_before)
}

/// The peers of the "peer unreachable" lines after the first `skip` lines, one entry per
/// line.
fn unreachable_lines(node: &TestNode, skip: usize) -> Vec<u64> {
    node.logs()
        .lines()
        .skip(skip)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "peer unreachable: Raft calls to it fail")
        .filter_map(|line| line["peer"].as_u64())
        .collect()
}

fn logged(node: &TestNode, message: &str) -> bool {
    node.logs().contains(message)
}

#[tokio::test]
async fn a_node_without_quorum_stops_within_its_drain_timeout_after_a_flush() {
    let aws = AwsFixture::new(&endpoint()).await;
    let (mut node, user, asset, before) = survivor_without_quorum(&aws, "3s").await;
    // Its peers being down is said once per peer, not per Raft call.
    eventually("the survivor to notice both peers down", || async {
        let lines = unreachable_lines(&node, before);
        (lines.contains(&2) && lines.contains(&3)).then_some(())
    })
    .await;
    signal(node.pid().unwrap(), "-TERM");
    node.wait_for_exit(EXIT_WAIT);
    let mut lines = unreachable_lines(&node, before);
    lines.sort_unstable();
    assert_eq!(lines, vec![2, 3], "one line per peer that went down");
    assert!(
        !logged(&node, "confirming leadership"),
        "openraft's per-call lines are filtered"
    );
    assert!(
        logged(&node, "drain timed out"),
        "no line says what the drain could not do:\n{}",
        node.logs()
    );
    // Once its lease has run out (the others are gone, so no leader renews it) a node
    // stores nothing, since another could own its shards by then: the progress is
    // stored while it still holds the lease, or counted lost and said so.
    let stored = aws.stored_progress(&user, &asset).await;
    assert!(
        stored == Some(321) || logged(&node, "stopped with unflushed progress"),
        "the progress held was neither stored ({stored:?}) nor counted lost:\n{}",
        node.logs()
    );
}

#[tokio::test]
async fn a_second_sigterm_stops_a_stuck_drain_at_once_after_a_flush() {
    let aws = AwsFixture::new(&endpoint()).await;
    // A drain that would wait ten minutes for the quorum it lost.
    let (mut node, user, asset, _) = survivor_without_quorum(&aws, "10m").await;
    let pid = node.pid().unwrap();
    signal(pid, "-TERM");
    eventually("the node to start draining", || async {
        logged(&node, "draining: handing this node's shards").then_some(())
    })
    .await;
    signal(pid, "-TERM");
    node.wait_for_exit(EXIT_WAIT);
    assert!(logged(&node, "asked again"), "{}", node.logs());
    assert!(logged(&node, "drain given up"), "{}", node.logs());
    assert_eq!(
        aws.stored_progress(&user, &asset).await,
        Some(321),
        "the progress held was not flushed:\n{}",
        node.logs()
    );
}
