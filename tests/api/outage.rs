//! The store and queue go away and come back: nothing acknowledged is lost, and
//! everything pending is delivered.

use reqwest::Method;
use serde_json::json;

use super::aws::{AwsFixture, PrivateEmulator};
use super::helpers::{TestNode, asset, eventually, user};

#[tokio::test]
async fn an_emulator_outage_loses_nothing() {
    let mut emulator = PrivateEmulator::start().await;
    let aws = AwsFixture::new(&emulator.endpoint()).await;
    let node = TestNode::spawn(
        &aws.node_config("[progress]\nflush_interval = \"300ms\"\n[actors]\ntick = \"100ms\"\n"),
    )
    .await;
    let (u, kept, refused) = (user(), asset(), asset());
    let watchlist = |m: Method, a: &str| node.as_user(m, &format!("/v1/watchlist/{a}"), &u).send();
    assert_eq!(watchlist(Method::PUT, &kept).await.unwrap().status(), 200);
    assert_eq!(aws.events(1).await[0]["event"], "added-to-watchlist");

    emulator.stop();
    let errors_before = node.metric("playstate_store_errors_total").await;
    // Write-through refuses what it cannot store...
    let put = watchlist(Method::PUT, &refused).await.unwrap();
    assert_eq!(put.status(), 503);
    assert!(put.headers().contains_key("retry-after"));
    assert_eq!(
        watchlist(Method::DELETE, &kept).await.unwrap().status(),
        503
    );
    // ...while write-behind accepts and keeps it dirty.
    for seconds in [30, 90] {
        let put = node
            .as_user(Method::PUT, &format!("/v1/progress/{kept}"), &u)
            .json(&json!({ "progress": seconds }))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
    }
    eventually("a failed flush", || async {
        let m = node.metrics().await;
        (m["playstate_flush_failures_total"] >= 1.0 && m["playstate_progress_dirty_entries"] == 1.0)
            .then_some(())
    })
    .await;
    assert!(node.metric("playstate_store_errors_total").await > errors_before);
    let ready = node.get("/ready").await;
    assert_eq!(ready.status(), 503);

    // The emulator comes back empty, as a fresh region would; the operator recreates.
    let _emulator = PrivateEmulator::start_on(emulator.port).await;
    aws.recreate().await;
    eventually("the dirty progress to be stored", || async {
        (aws.stored_progress(&u, &kept).await == Some(90)).then_some(())
    })
    .await;
    let events = aws.events(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "viewed");
    assert_eq!(
        (&events[0]["oldProgress"], &events[0]["newProgress"]),
        (&json!(0), &json!(90))
    );
    assert_eq!(node.metric("playstate_progress_dirty_entries").await, 0.0);
    let ready = node.get("/ready").await;
    assert_eq!(ready.status(), 200);
    // The refused edit changed nothing: the watchlist is as it was before the outage.
    let list: serde_json::Value = node.get_json("/v1/watchlist", &u).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["asset"], kept.as_str());
}

/// Events a node could not deliver when it crashed are journaled in its data dir and
/// delivered after it restarts.
#[tokio::test]
async fn events_queued_at_a_crash_are_delivered_after_the_restart() {
    let mut emulator = PrivateEmulator::start().await;
    let aws = AwsFixture::new(&emulator.endpoint()).await;
    // The users' data in the embedded store, which stays up; only the queue goes away.
    let config = format!("{}\n{}\n", aws.events_section(), aws.aws_section());
    let mut node = TestNode::spawn_with(&config, &[], &[]).await;
    let u = user();
    let edit = |node: &TestNode, a: &str| {
        node.as_user(Method::PUT, &format!("/v1/watchlist/{a}"), &u)
            .send()
    };
    assert_eq!(edit(&node, &asset()).await.unwrap().status(), 200);
    assert_eq!(aws.events(1).await.len(), 1);

    emulator.stop();
    let pending: Vec<String> = (0..3).map(|_| asset()).collect();
    for a in &pending {
        assert_eq!(edit(&node, a).await.unwrap().status(), 200);
    }
    eventually("the events to wait in the outbox", || async {
        (node.metric("playstate_outbox_depth").await == 3.0).then_some(())
    })
    .await;
    node.crash();

    let _emulator = PrivateEmulator::start_on(emulator.port).await;
    aws.recreate().await;
    let node = node.start_again().await;
    let events = aws.events(3).await;
    let mut delivered: Vec<String> = events
        .iter()
        .map(|e| e["assetId"].as_str().unwrap_or_default().to_owned())
        .collect();
    delivered.sort();
    let mut expected = pending.clone();
    expected.sort();
    assert_eq!(delivered, expected, "{events:?}");
    assert_eq!(node.metric("playstate_outbox_depth").await, 0.0);
}

/// A single node (no backups) that crashes with unstored progress loses it, and says so:
/// its next start counts exactly the entries that were not stored.
#[tokio::test]
async fn a_crash_counts_exactly_the_progress_it_lost() {
    let config = "[progress]\nflush_interval = \"60s\"\n";
    let mut node = TestNode::spawn_with(config, &[], &[]).await;
    let asset = asset();
    let readers: Vec<String> = (0..3).map(|_| user()).collect();
    for reader in &readers {
        let put = node
            .as_user(Method::PUT, &format!("/v1/progress/{asset}"), reader)
            .json(&json!({ "progress": 77 }))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
    }
    // The node records what a crash would lose (once a second): wait until it has.
    let marker = node.data_dir.join("unflushed");
    eventually("the unflushed count to be recorded", || async {
        (std::fs::read_to_string(&marker).ok()?.trim() == "3").then_some(())
    })
    .await;
    node.crash();
    let node = node.start_again().await;
    assert_eq!(node.metric("playstate_progress_lost_total").await, 3.0);
    for reader in &readers {
        let read = node
            .as_user(Method::GET, &format!("/v1/progress/{asset}"), reader)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 404, "the lost progress of {reader} is gone");
    }
}
