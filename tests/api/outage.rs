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

/// A node whose BI queue is on an emulator of its own, crashed while that emulator was
/// down with three watchlist events (for `pending`) waiting in its outbox.
struct CrashedWithEventsPending {
    emulator: PrivateEmulator,
    aws: AwsFixture,
    node: TestNode,
    pending: Vec<String>,
}

impl CrashedWithEventsPending {
    /// `before`: what the node does while its queue is still up.
    async fn new(before: impl AsyncFnOnce(&TestNode, &AwsFixture, &str)) -> Self {
        let mut emulator = PrivateEmulator::start().await;
        let aws = AwsFixture::new(&emulator.endpoint()).await;
        // The users' data in the embedded store, which stays up; only the queue goes away.
        let config = format!("{}\n{}\n", aws.events_section(), aws.aws_section());
        let mut node = TestNode::spawn_with(&config, &[], &[]).await;
        let u = user();
        before(&node, &aws, &u).await;
        emulator.stop();
        let pending: Vec<String> = (0..3).map(|_| asset()).collect();
        for a in &pending {
            assert_eq!(edit_watchlist(&node, &u, a).await, 200);
        }
        eventually("the events to wait in the outbox", || async {
            (node.metric("playstate_outbox_depth").await == 3.0).then_some(())
        })
        .await;
        node.crash();
        CrashedWithEventsPending {
            emulator,
            aws,
            node,
            pending,
        }
    }

    /// Brings the queue back, restarts the node, and returns it with the assets of the
    /// `count` events delivered, sorted, and the emulator to keep alive.
    async fn restart(self, count: usize) -> (TestNode, Vec<String>, PrivateEmulator) {
        let emulator = PrivateEmulator::start_on(self.emulator.port).await;
        self.aws.recreate().await;
        let node = self.node.start_again().await;
        let mut delivered: Vec<String> = self
            .aws
            .events(count)
            .await
            .iter()
            .map(|e| e["assetId"].as_str().unwrap_or_default().to_owned())
            .collect();
        delivered.sort();
        (node, delivered, emulator)
    }
}

async fn edit_watchlist(node: &TestNode, user: &str, asset: &str) -> u16 {
    node.as_user(Method::PUT, &format!("/v1/watchlist/{asset}"), user)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Events a node could not deliver when it crashed are journaled in its data dir and
/// delivered after it restarts.
#[tokio::test]
async fn events_queued_at_a_crash_are_delivered_after_the_restart() {
    let crashed = CrashedWithEventsPending::new(async |node, aws, u| {
        assert_eq!(edit_watchlist(node, u, &asset()).await, 200);
        assert_eq!(aws.events(1).await.len(), 1);
    })
    .await;
    let mut expected = crashed.pending.clone();
    expected.sort();
    let (node, delivered, _emulator) = crashed.restart(3).await;
    assert_eq!(delivered, expected);
    assert_eq!(node.metric("playstate_outbox_depth").await, 0.0);
}

/// Waits for the node's WARN line about line 2 of a file (the node's output is read as it
/// comes), and checks that it names the file `name`.
async fn assert_warned_about_line_2_of(node: &TestNode, name: &str) {
    let warning = eventually("a WARN naming line 2", || async {
        node.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["level"] == "WARN" && l["line"] == 2)
    })
    .await;
    assert!(
        warning["file"].as_str().is_some_and(|f| f.ends_with(name)),
        "{warning}"
    );
}

/// One damaged byte in the journal of undelivered events loses that event only: the
/// others are delivered after the restart, and the node says which line it skipped.
#[tokio::test]
async fn a_damaged_byte_in_the_event_journal_loses_only_its_line() {
    let crashed = CrashedWithEventsPending::new(async |_, _, _| {}).await;
    let pending = &crashed.pending;
    // Not valid UTF-8, in the middle of the second line (inside its asset id).
    let spool = crashed.node.data_dir.join("outbox.spool");
    let mut bytes = std::fs::read(&spool).unwrap();
    let second = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    let in_asset = second
        + bytes[second..]
            .windows(pending[1].len())
            .position(|w| w == pending[1].as_bytes())
            .expect("the second event names its asset");
    bytes[in_asset + 4] = 0xff;
    std::fs::write(&spool, bytes).unwrap();
    let mut expected = vec![pending[0].clone(), pending[2].clone()];
    expected.sort();

    let (node, delivered, _emulator) = crashed.restart(2).await;
    assert_eq!(delivered, expected);
    assert_warned_about_line_2_of(&node, "outbox.spool").await;
}

/// A line of `events.jsonl` torn by a crash mid-write stays one bad line: the next event
/// starts a line of its own, and the node says which line it ended.
#[tokio::test]
async fn a_torn_line_in_the_event_file_does_not_spoil_the_next_event() {
    let mut node = TestNode::spawn_with("", &[], &[]).await;
    let u = user();
    let edit = |node: &TestNode| {
        node.as_user(Method::PUT, &format!("/v1/watchlist/{}", asset()), &u)
            .send()
    };
    let events = node.data_dir.join("events.jsonl");
    let lines = |events: &std::path::Path| -> (usize, usize) {
        let text = std::fs::read_to_string(events).unwrap_or_default();
        let good = text
            .lines()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
            .count();
        (good, text.lines().count() - good)
    };
    assert_eq!(edit(&node).await.unwrap().status(), 200);
    // Written, and gone from the journal, so that the restart sends nothing again.
    eventually("the event to be written", || async {
        let depth = node.metric("playstate_outbox_depth").await;
        (lines(&events) == (1, 0) && depth == 0.0).then_some(())
    })
    .await;
    node.crash();
    // The crash cut the next event short.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .unwrap();
    std::io::Write::write_all(&mut file, br#"{"event":"added-to-watch"#).unwrap();
    drop(file);

    let node = node.start_again().await;
    assert_eq!(edit(&node).await.unwrap().status(), 200);
    eventually("the next event on a line of its own", || async {
        (lines(&events) == (2, 1)).then_some(())
    })
    .await;
    assert_warned_about_line_2_of(&node, "events.jsonl").await;
}

/// How much more than it lost a crashed node may count while updates come in: the
/// reservation it keeps ahead of its unstored progress (`actors::unflushed::HEADROOM`,
/// or twice what arrived in the last 25 ms).
const HEADROOM: f64 = 16.0;

/// A single node (no backups) that crashes with unstored progress loses it, and says so:
/// once its count has been steady for 250 ms, its next start counts exactly the
/// entries that were not stored.
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
    // The reservation comes down to the count once it is steady: wait until it has.
    let marker = node.data_dir.join("unflushed");
    eventually("the unflushed count to be exact", || async {
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

/// Progress acknowledged in a burst just before a `kill -9` is counted too: the count a
/// crash leaves is covered before each update is acknowledged, not recorded a while later.
#[tokio::test]
async fn a_burst_acknowledged_just_before_a_crash_is_counted_lost() {
    const BURST: usize = 300;
    let config = "[progress]\nflush_interval = \"60s\"\n";
    let mut node = TestNode::spawn_with(config, &[], &[]).await;
    let asset = asset();
    let started = std::time::Instant::now();
    let puts = (0..BURST).map(|_| {
        let reader = user();
        let put = node
            .as_user(Method::PUT, &format!("/v1/progress/{asset}"), &reader)
            .json(&json!({ "progress": 42 }))
            .send();
        async move { put.await.unwrap().status() }
    });
    let statuses = futures_util::future::join_all(puts).await;
    let burst = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    node.crash();
    eprintln!("{BURST} updates acknowledged in {burst:?}, then killed");
    let node = node.start_again().await;
    let lost = node.metric("playstate_progress_lost_total").await;
    eprintln!("counted {lost} lost");
    // A burst widens the reservation to twice what arrived in the last 25 ms.
    let at_most = BURST as f64 + HEADROOM.max(2.0 * BURST as f64);
    assert!(
        (BURST as f64..=at_most).contains(&lost),
        "lost {lost} of {BURST} acknowledged"
    );
}
