//! The load generator (`loadtest/`) against a real node: each scenario runs for a couple
//! of seconds, gets only the statuses the contract allows, and counts exactly what the
//! node counted in its own request metrics.

use std::collections::{BTreeMap, BTreeSet};

use ::loadtest::{Cli, Summary};
use clap::Parser;

use super::helpers::{TestNode, eventually};

/// Runs `loadtest <scenario> <args>` against `node`: two seconds, four connections on two
/// threads, no progress bar.
async fn load(node: &TestNode, scenario: &str, args: &[&str]) -> Summary {
    start_load(node, scenario, "2s", args)
        .await
        .expect("the load generator panicked")
}

/// A load run of `duration` in the background.
fn start_load(
    node: &TestNode,
    scenario: &str,
    duration: &str,
    args: &[&str],
) -> tokio::task::JoinHandle<Summary> {
    let mut argv = vec![
        "loadtest",
        scenario,
        "--target",
        &node.addr,
        "--duration",
        duration,
        "--connections",
        "4",
        "--threads",
        "2",
        "--quiet",
    ];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let argv = argv.join(" ");
    // The run blocks on threads of its own until it is over.
    tokio::task::spawn_blocking(move || {
        ::loadtest::run(cli).unwrap_or_else(|e| panic!("{argv}: {e:#}"))
    })
}

/// What every run must show: it ran its course, and every request got an HTTP answer.
fn assert_clean_run(s: &Summary) {
    assert_eq!(s.stopped_by, "duration", "{s:#?}");
    assert_eq!(s.transport_errors, 0, "transport errors: {:?}", s.errors);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    for (name, op) in &s.operations {
        assert!(op.errors.is_empty(), "{name}: {:?}", op.errors);
        assert_eq!(op.requests, op.responses, "{name}");
    }
    assert!(s.requests > 0);
    assert_eq!(s.requests, s.responses);
}

/// The statuses (as the summary keys them) an operation got.
fn statuses(s: &Summary, operation: &str) -> Vec<String> {
    s.operations
        .get(operation)
        .unwrap_or_else(|| panic!("no {operation} requests: {s:#?}"))
        .statuses
        .keys()
        .cloned()
        .collect()
}

fn requests_series(method: &str, route: &str, status: &str) -> String {
    format!(
        r#"playstate_http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#
    )
}

/// The node's `playstate_http_requests_total` for the calls (method, route) that the
/// summary's operations map to, by series, must equal the summary's responses to those
/// operations, status by status: the node answered exactly what the load generator counted.
async fn assert_node_counted(
    node: &TestNode,
    s: &Summary,
    call_of: impl Fn(&str) -> (&'static str, &'static str),
) {
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    let mut calls = BTreeSet::new();
    for (operation, op) in &s.operations {
        let (method, route) = call_of(operation);
        calls.insert((method, route));
        for (status, n) in &op.statuses {
            *expected
                .entry(requests_series(method, route, status))
                .or_default() += *n as f64;
        }
    }
    let prefixes: Vec<String> = calls
        .iter()
        .map(|(method, route)| {
            format!(r#"playstate_http_requests_total{{method="{method}",route="{route}",status=""#)
        })
        .collect();
    let counted = || async {
        node.metrics()
            .await
            .into_iter()
            .filter(|(series, _)| prefixes.iter().any(|p| series.starts_with(p.as_str())))
            .collect::<BTreeMap<String, f64>>()
    };
    // The counters only rise: wait until they hold as many requests as were answered,
    // then compare series by series.
    let total: f64 = expected.values().sum();
    let counted = eventually(
        &format!("the node to count {total} requests on {calls:?}"),
        || async {
            let now = counted().await;
            (now.values().sum::<f64>() >= total).then_some(now)
        },
    )
    .await;
    assert_eq!(counted, expected, "node's counters vs the load generator's");
}

/// The node's own view of the heartbeats: every renewal took or renewed a slot, and every
/// over-limit attempt was refused by the limit (not, say, as a malformed request).
async fn assert_heartbeat_outcomes(node: &TestNode, s: &Summary, refused_status: u16) {
    let m = node.metrics().await;
    let outcome = |o: &str| {
        m.get(&format!(r#"playstate_heartbeats_total{{outcome="{o}"}}"#))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(
        outcome("taken") + outcome("renewed"),
        s.count("renew", 200) as f64
    );
    assert_eq!(
        outcome("refused"),
        s.count("over-limit", refused_status) as f64
    );
}

#[tokio::test]
async fn heartbeat_scenario_on_v1_streams() {
    let node = TestNode::spawn("").await;
    let s = load(&node, "heartbeat", &["--users", "200"]).await;
    assert_eq!(s.scenario, "heartbeat");
    assert_clean_run(&s);
    assert!(s.open_loop.is_none(), "a closed loop");
    assert_eq!(statuses(&s, "renew"), ["200"]);
    assert_eq!(statuses(&s, "over-limit"), ["429"]);
    assert!(s.count("renew", 200) > 0 && s.count("over-limit", 429) > 0);
    assert_node_counted(&node, &s, |_| ("PUT", "/v1/streams/{sessionId}")).await;
    assert_heartbeat_outcomes(&node, &s, 429).await;
}

#[tokio::test]
async fn heartbeat_scenario_on_the_heartbeat_contract() {
    let node = TestNode::spawn("").await;
    let s = load(
        &node,
        "heartbeat",
        &["--contract", "heartbeat", "--users", "200"],
    )
    .await;
    assert_clean_run(&s);
    assert_eq!(statuses(&s, "renew"), ["200"]);
    assert_eq!(statuses(&s, "over-limit"), ["400"]);
    assert!(s.count("renew", 200) > 0 && s.count("over-limit", 400) > 0);
    assert_node_counted(&node, &s, |_| ("POST", "/heartbeat")).await;
    assert_heartbeat_outcomes(&node, &s, 400).await;
}

#[tokio::test]
async fn players_scenario() {
    let node = TestNode::spawn("").await;
    // 20x faster: a heartbeat per stream every second, progress every 250 ms, and a
    // watchlist edit per viewer about every half second, so each viewer sends dozens.
    let s = load(
        &node,
        "players",
        &[
            "--viewers",
            "200",
            "--speedup",
            "20",
            "--watchlist-share",
            "0.2",
        ],
    )
    .await;
    assert_eq!(s.scenario, "players");
    assert_clean_run(&s);
    for operation in ::loadtest::PLAYERS_OPERATIONS {
        let op = &s.operations[operation];
        assert!(op.responses > 0, "no {operation} answered: {s:#?}");
        for status in op.statuses.keys() {
            assert!(status.starts_with('2'), "{operation} got {status}: {s:#?}");
        }
    }
    assert!(s.requests > 2 * 200, "several requests per viewer: {s:#?}");
    let open = s.open_loop.as_ref().expect("an open loop");
    assert!(open.scheduled > 0);
    assert_eq!(open.sent, s.requests);
    assert_eq!(open.scheduled, open.sent + open.unsent, "{open:#?}");
    assert_node_counted(&node, &s, |operation| match operation {
        "heartbeat" => ("PUT", "/v1/streams/{sessionId}"),
        "progress" => ("PUT", "/v1/progress/{assetId}"),
        "watchlist-put" => ("PUT", "/v1/watchlist/{assetId}"),
        "watchlist-delete" => ("DELETE", "/v1/watchlist/{assetId}"),
        other => panic!("unknown operation {other}"),
    })
    .await;
}

/// A node stopped while players send progress moves every actor off its HTTP worker
/// threads (actix-web drops their tasks when HTTP stops), flushing each on the way, so
/// nothing it acknowledged is lost: the restarted node counts no lost progress.
#[tokio::test]
async fn a_graceful_stop_under_load_loses_no_progress() {
    // Progress stays buffered until shutdown: only the shutdown path can store it.
    let mut node = TestNode::spawn("[progress]\nflush_interval = \"1h\"\n").await;
    let players = start_load(
        &node,
        "players",
        "3s",
        &["--viewers", "200", "--speedup", "20", "--no-watchlist"],
    );
    eventually("progress buffered in user actors", || async {
        (node.metric("playstate_progress_dirty_entries").await >= 50.0).then_some(())
    })
    .await;

    node.stop(); // SIGTERM; asserts a clean exit
    let logs = node.logs();
    let moved = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "user actors moved off the HTTP workers")
        .unwrap_or_else(|| panic!("no line about moving actors; logs:\n{logs}"));
    assert!(moved["actors"].as_u64().unwrap_or(0) > 0, "{moved}");
    for failure in [
        "stopped with unflushed progress",
        "did not finish flushing",
        "still on HTTP workers",
    ] {
        assert!(!logs.contains(failure), "{failure}; logs:\n{logs}");
    }

    let summary = players.await.expect("the load generator panicked");
    // Before the stop every answer was a success; after it, connections were refused.
    assert!(summary.count("progress", 200) > 0);
    for (name, op) in &summary.operations {
        assert!(
            op.statuses.keys().all(|status| status.starts_with('2')),
            "{name}: {:?}",
            op.statuses
        );
    }

    // A loss at shutdown would be carried over to the next start's count.
    let node = node.restart().await;
    assert_eq!(node.metric("playstate_progress_lost_total").await, 0.0);
}
