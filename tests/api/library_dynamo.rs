//! Progress and watchlist on DynamoDB with events on SQS, both the moto emulator reached
//! over HTTP, read back with the real AWS clients.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use super::aws::{AwsFixture, endpoint};
use super::helpers::{TestNode, asset, eventually, user};

/// Flushes happen only when a user goes idle (2 s without requests) or at shutdown, so a
/// test decides exactly which updates share a flush window.
const FLUSH_WHEN_IDLE: &str = r#"
[progress]
flush_interval = "1h"
[actors]
idle_timeout = "2s"
tick = "100ms"
"#;

async fn put_progress(node: &TestNode, user: &str, asset: &str, seconds: u32) {
    let response = node
        .as_user(Method::PUT, &format!("/v1/progress/{asset}"), user)
        .json(&json!({ "progress": seconds }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn wait_until_flushed(node: &TestNode, progress_puts: f64) {
    eventually("the flush", || async {
        let m = node.metrics().await;
        let written = m
            .get(r#"playstate_store_writes_total{op="progress_put"}"#)
            .copied()
            .unwrap_or(0.0);
        let dirty = m
            .get("playstate_progress_dirty_entries")
            .copied()
            .unwrap_or(-1.0);
        (written >= progress_puts && dirty == 0.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_hundred_updates_in_one_window_are_one_dynamodb_write() {
    let aws = AwsFixture::new(&endpoint()).await;
    let node = TestNode::spawn(&aws.node_config(FLUSH_WHEN_IDLE)).await;
    let (u, a) = (user(), asset());
    for seconds in 1..=100 {
        put_progress(&node, &u, &a, seconds).await;
    }
    wait_until_flushed(&node, 1.0).await;
    let m = node.metrics().await;
    assert_eq!(m[r#"playstate_store_writes_total{op="progress_put"}"#], 1.0);
    assert_eq!(m["playstate_progress_updates_total"], 100.0);
    assert_eq!(aws.stored_progress(&u, &a).await, Some(100));
}

#[tokio::test]
async fn bi_events_are_sent_for_genuine_transitions_only() {
    let aws = AwsFixture::new(&endpoint()).await;
    let node = TestNode::spawn(&aws.node_config(FLUSH_WHEN_IDLE)).await;
    let (u, listed, watched) = (user(), asset(), asset());
    let watchlist = |m: Method| {
        node.as_user(m, &format!("/v1/watchlist/{listed}"), &u)
            .send()
    };
    for m in [Method::PUT, Method::PUT, Method::DELETE, Method::DELETE] {
        assert_eq!(watchlist(m).await.unwrap().status(), 200);
    }
    // A first value rises from 0 to the highest value of the window; the fall is silent.
    for seconds in [10, 500, 200] {
        put_progress(&node, &u, &watched, seconds).await;
    }
    let events = aws.events(3).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["added-to-watchlist", "removed-from-watchlist", "viewed"],
        "{events:?}"
    );
    assert_eq!(events[0]["assetId"], listed.as_str());
    assert_eq!(events[1]["assetId"], listed.as_str());
    assert_eq!(
        (
            &events[2]["assetId"],
            &events[2]["oldProgress"],
            &events[2]["newProgress"]
        ),
        (&json!(watched), &json!(0), &json!(500))
    );
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    for event in &events {
        assert_eq!(event["userId"], u.as_str());
        assert!(
            event["occurredAt"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
    wait_until_flushed(&node, 1.0).await;

    // Next window: rise 200 → 900, then fall: one event from the stored value.
    for seconds in [900, 300] {
        put_progress(&node, &u, &watched, seconds).await;
    }
    let events = aws.events(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (&events[0]["oldProgress"], &events[0]["newProgress"]),
        (&json!(200), &json!(900))
    );
    wait_until_flushed(&node, 2.0).await;

    // A window that only falls emits nothing.
    put_progress(&node, &u, &watched, 100).await;
    wait_until_flushed(&node, 3.0).await;
    assert_eq!(aws.drain_events().await, Vec::<Value>::new());
    assert_eq!(aws.stored_progress(&u, &watched).await, Some(100));
}

#[tokio::test]
async fn acknowledged_state_survives_a_graceful_restart_on_dynamodb() {
    let aws = AwsFixture::new(&endpoint()).await;
    // Never flushed by time: only the shutdown flush can store the progress.
    let node = TestNode::spawn(&aws.node_config("[progress]\nflush_interval = \"1h\"\n")).await;
    let u = user();
    let assets: Vec<String> = (0..3).map(|_| asset()).collect();
    for (i, a) in assets.iter().enumerate() {
        put_progress(&node, &u, a, 60 * (i as u32 + 1)).await;
        let put = node
            .as_user(Method::PUT, &format!("/v1/watchlist/{a}"), &u)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
    }
    let node = node.restart().await;
    for (i, a) in assets.iter().enumerate() {
        assert_eq!(aws.stored_progress(&u, a).await, Some(60 * (i as u64 + 1)));
        let got = node
            .as_user(Method::GET, &format!("/v1/progress/{a}"), &u)
            .send()
            .await
            .unwrap();
        assert_eq!(got.json::<Value>().await.unwrap()["progress"], 60 * (i + 1));
    }
    let watchlist: Value = node.get_json("/v1/watchlist", &u).await;
    let listed: HashSet<&str> = watchlist
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["asset"].as_str().unwrap())
        .collect();
    assert_eq!(listed, assets.iter().map(String::as_str).collect());
}
