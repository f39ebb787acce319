//! The load generator (`loadtest/`) against real nodes: each scenario runs for a couple
//! of seconds, gets only the statuses the contract allows, and counts exactly what the
//! node counted in its own request metrics; players spread over several nodes, and a
//! node that is or goes down shows in the timeline while the run goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ::loadtest::{Cli, Common, PLAYERS_OPERATIONS, PlayersArgs, Summary, Timeline};
use clap::Parser;

use super::helpers::{TestNode, eventually, signal};

/// Runs `loadtest <scenario> <args>` against `node`: two seconds, four connections on two
/// threads, no progress bar.
async fn load(node: &TestNode, scenario: &str, args: &[&str]) -> Summary {
    start_load(&node.addr, scenario, "2s", args)
        .await
        .expect("the load generator panicked")
}

/// A load run of `duration` in the background, from a command line, against `targets`
/// (`--target` as given: one URL or a comma-separated list).
fn start_load(
    targets: &str,
    scenario: &str,
    duration: &str,
    args: &[&str],
) -> tokio::task::JoinHandle<Summary> {
    let mut argv = vec![
        "loadtest",
        scenario,
        "--target",
        targets,
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

/// The start of every `requests_series` of (method, route), whatever the status.
fn requests_series_prefix(method: &str, route: &str) -> String {
    format!(r#"playstate_http_requests_total{{method="{method}",route="{route}",status=""#)
}

/// The HTTP call (method, route) of each operation of the players scenario.
fn players_call(operation: &str) -> (&'static str, &'static str) {
    match operation {
        "heartbeat" => ("PUT", "/v1/streams/{sessionId}"),
        "progress" => ("PUT", "/v1/progress/{assetId}"),
        "watchlist-put" => ("PUT", "/v1/watchlist/{assetId}"),
        "watchlist-delete" => ("DELETE", "/v1/watchlist/{assetId}"),
        other => panic!("unknown operation {other}"),
    }
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
    let counted = requests_counted(node, &calls, expected.values().sum()).await;
    assert_eq!(counted, expected, "node's counters vs the load generator's");
}

/// The node's `playstate_http_requests_total` series of `calls` (method, route), any
/// status, once they add up to at least `total`: the counters only rise, so that is when
/// they hold every request the load generator saw answered, and can be compared.
async fn requests_counted(
    node: &TestNode,
    calls: &BTreeSet<(&str, &str)>,
    total: f64,
) -> BTreeMap<String, f64> {
    let prefixes: Vec<String> = calls
        .iter()
        .map(|(method, route)| requests_series_prefix(method, route))
        .collect();
    let counted = || async {
        node.metrics()
            .await
            .into_iter()
            .filter(|(series, _)| prefixes.iter().any(|p| series.starts_with(p.as_str())))
            .collect::<BTreeMap<String, f64>>()
    };
    eventually(
        &format!("{} to count {total} requests on {calls:?}", node.addr),
        || async {
            let now = counted().await;
            (now.values().sum::<f64>() >= total).then_some(now)
        },
    )
    .await
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
    // 4 s, not 2: the rarest operation must come up even when the machine is busy.
    let s = start_load(
        &node.addr,
        "players",
        "4s",
        &[
            "--viewers",
            "200",
            "--speedup",
            "20",
            "--watchlist-share",
            "0.2",
        ],
    )
    .await
    .expect("the load generator panicked");
    assert_eq!(s.scenario, "players");
    assert_clean_run(&s);
    for operation in ::loadtest::PLAYERS_OPERATIONS {
        let op = s
            .operations
            .get(operation)
            .unwrap_or_else(|| panic!("no {operation} sent: {s:#?}"));
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
    assert_node_counted(&node, &s, players_call).await;
}

/// A node stopped while players send progress moves every actor off its HTTP worker
/// threads (actix-web drops their tasks when HTTP stops), flushing each on the way, so
/// nothing it acknowledged is lost: the restarted node counts no lost progress.
#[tokio::test]
async fn a_graceful_stop_under_load_loses_no_progress() {
    // Progress stays buffered until shutdown: only the shutdown path can store it.
    let mut node = TestNode::spawn("[progress]\nflush_interval = \"1h\"\n").await;
    let players = start_load(
        &node.addr,
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

/// A players load of `duration` against `targets`, built in code: 200 viewers 20x faster
/// than life (a heartbeat per stream every second, progress every 250 ms), four
/// connections on two threads.
pub(super) fn players(targets: &[&str], duration: Duration) -> Cli {
    PlayersArgs {
        common: Common {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            duration,
            connections: 4,
            threads: Some(2),
            quiet: true,
            ..Default::default()
        },
        viewers: 200,
        speedup: 20.0,
        ..Default::default()
    }
    .into()
}

pub(super) fn timeline(s: &Summary) -> &Timeline {
    s.timeline
        .as_ref()
        .unwrap_or_else(|| panic!("players have a timeline: {s:#?}"))
}

/// Waits until `node` serves players: a node that has just started holds their requests
/// until it first holds a lease, and on a busy machine that can take a second, which
/// would show in the timelines these tests read. Asks `GET /v1/streams`, which goes
/// through a user's actor like the players' requests but is not one of their routes, so
/// the node's counts of those stay exact.
async fn wait_serving(node: &TestNode) {
    eventually(&format!("{} to serve players", node.addr), || async {
        let response = node
            .as_user(reqwest::Method::GET, "/v1/streams", "lt-warm-up")
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}

/// Requests a node has answered, by its own count.
async fn http_requests(node: &TestNode) -> f64 {
    node.metrics()
        .await
        .iter()
        .filter(|(series, _)| series.starts_with("playstate_http_requests_total"))
        .map(|(_, count)| count)
        .sum()
}

/// A loopback URL nobody listens at: a port the system handed out and took back.
fn dead_target() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("its address");
    drop(listener);
    format!("http://{addr}")
}

/// `node` answered exactly `answered` players' requests (whatever their status) by its
/// own `playstate_http_requests_total`, as the load generator counted.
async fn assert_node_answered(node: &TestNode, answered: u64) {
    let calls = PLAYERS_OPERATIONS
        .iter()
        .map(|op| players_call(op))
        .collect();
    let counted = requests_counted(node, &calls, answered as f64).await;
    assert_eq!(
        counted.values().sum::<f64>(),
        answered as f64,
        "{}'s counters vs the load generator's: {counted:?}",
        node.addr
    );
}

/// `--target A,B`: each viewer stays with one node, so both get about half the players'
/// requests, and each node answered exactly what the timeline counts for it.
#[tokio::test]
async fn players_spread_over_every_target() {
    let (a, b) = tokio::join!(TestNode::spawn(""), TestNode::spawn(""));
    tokio::join!(wait_serving(&a), wait_serving(&b));
    let targets = format!("{},{}", a.addr, b.addr);
    let s = start_load(
        &targets,
        "players",
        "2s",
        &["--viewers", "200", "--speedup", "20"],
    )
    .await
    .expect("the load generator panicked");
    assert_clean_run(&s);
    assert_eq!(s.targets, [a.addr.as_str(), b.addr.as_str()]);
    let t = timeline(&s);
    assert_eq!(t.first_error_second, None, "{t:#?}");
    assert_eq!(t.total.requests, s.requests);
    assert_eq!(t.total.ok, s.requests);
    // What the schedule offered was sent, or (on a node that stalls for a moment on a
    // busy machine) still waiting for a connection at the end: the assertions below hold
    // either way.
    let scheduled = s.open_loop.as_ref().expect("an open loop").scheduled;
    assert_eq!(t.total.requests + t.total.unsent, scheduled);
    for (node, target) in [&a, &b].into_iter().zip(&t.by_target) {
        assert_eq!(target.target, node.addr);
        let o = &target.outcomes;
        // Viewers are dealt evenly over the targets: each was offered about half.
        assert!(o.requests + o.unsent > scheduled / 3, "{t:#?}");
        assert!(o.ok > 0 && o.ok == o.requests, "{o:?}");
        assert_node_answered(node, o.ok).await;
    }
    // Two whole seconds, each offered its share of the load, with a p99 where anything
    // was answered.
    assert_eq!(t.seconds.len(), 2, "{t:#?}");
    for second in &t.seconds {
        let o = &second.outcomes;
        assert!(o.requests + o.unsent > scheduled / 4, "{second:?}");
        assert_eq!(o.ok, o.requests);
        assert_eq!(second.p99_us.is_some(), o.ok > 0, "{second:?}");
    }
}

/// A target nobody listens at: its viewers' every request is a connect error, second
/// after second, while the other node's viewers are served; the run keeps its schedule
/// to the end.
#[tokio::test]
async fn a_dead_target_fails_only_its_own_viewers() {
    let node = TestNode::spawn("").await;
    wait_serving(&node).await;
    let dead = dead_target();
    let load = ::loadtest::start(players(&[&node.addr, &dead], Duration::from_secs(2)))
        .expect("start the load");
    let s = load.finished().await.expect("the run");
    assert_eq!(s.stopped_by, "duration");
    let t = timeline(&s);
    let (live, gone) = (&t.by_target[0].outcomes, &t.by_target[1].outcomes);
    assert_eq!(t.by_target[1].target, dead);
    assert!(live.requests > 0 && live.ok == live.requests, "{t:#?}");
    assert!(gone.requests > 0 && gone.ok == 0, "{t:#?}");
    assert_eq!(gone.connect, gone.requests, "only connect errors: {gone:?}");
    assert_eq!(t.total.errors(), t.total.connect);
    assert_eq!(
        s.errors,
        BTreeMap::from([("connect".to_owned(), gone.connect)])
    );
    assert_eq!(t.seconds.len(), 2, "{t:#?}");
    // The dead target's requests fail at once and on schedule, whatever the live node
    // does: every second has them.
    for second in &t.seconds {
        let o = &second.outcomes;
        assert!(o.connect > 0, "{second:?}");
        assert_eq!(o.errors(), o.connect, "{second:?}");
    }
    assert_eq!(
        (t.first_error_second, t.last_error_second),
        (Some(0), Some(1))
    );
    assert_node_answered(&node, live.ok).await;
}

/// What a fault test does: load two nodes in the background, kill one, stop the load
/// and read the timeline. The killed node's viewers fail from the kill on; the other
/// node's never do.
#[tokio::test]
async fn a_background_load_shows_when_a_node_died() {
    let (a, b) = tokio::join!(TestNode::spawn(""), TestNode::spawn(""));
    tokio::join!(wait_serving(&a), wait_serving(&b));
    // Far longer than the test: it is stopped, not run out.
    let load = ::loadtest::start(players(&[&a.addr, &b.addr], Duration::from_secs(60)))
        .expect("start the load");
    // Killed once both have served the load for a while (the load's first second can
    // begin well after `start` returns on a busy machine, so a fixed wait is not enough).
    for node in [&a, &b] {
        eventually("the load to reach both nodes", || async {
            (http_requests(node).await >= 3_000.0).then_some(())
        })
        .await;
    }
    signal(b.pid().expect("b runs"), "-KILL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.stop();
    let s = load.finished().await.expect("the run");

    assert_eq!(s.stopped_by, "stopped");
    // Stopped, not run out: the kill came once both nodes had served the load (a second
    // or more), then two seconds passed.
    assert!((3.0..15.0).contains(&s.elapsed_s), "{}", s.elapsed_s);
    let t = timeline(&s);
    assert_eq!(t.seconds.len(), s.elapsed_s.ceil() as usize, "{t:#?}");
    let first = t.first_error_second.expect("errors once b died");
    // The kill came 3 s in: the first second was served in full.
    assert!(first >= 1, "{t:#?}");
    assert_eq!(t.seconds[0].outcomes.errors(), 0);
    // The last whole second came after the kill: b's viewers fail (reset, then refused).
    let last_whole = t.seconds.len() - 2;
    let after = &t.seconds[last_whole].outcomes;
    assert!(after.connect > 0, "{after:?}");
    assert_eq!(after.errors(), after.connect + after.closed, "{after:?}");
    assert!(t.last_error_second >= Some(last_whole as u32), "{t:#?}");
    // a's viewers never fail.
    let (to_a, to_b) = (&t.by_target[0].outcomes, &t.by_target[1].outcomes);
    assert!(to_a.ok > 0 && to_a.errors() == 0, "{to_a:?}");
    assert!(to_b.ok > 0 && to_b.errors() > 0, "{to_b:?}");
}
