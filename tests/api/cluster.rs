//! Real node processes forming a cluster on loopback: formation, the limit across nodes,
//! the cluster listener's secret, drains, restarts, leaves and joins under load.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::aws::{AwsFixture, endpoint};
use super::helpers::{TestNode, eventually, sessions, user};

pub(super) const SECRET: &str = "cluster-test-secret";

/// Small timeouts, so a test spends its time on behaviour, not on waiting.
pub(super) const FAST: &str = r#"
[cluster]
heartbeat_interval = "100ms"
election_timeout = "800ms"
handoff_wait = "5s"
"#;

/// Node `id` of the test cluster whose members share `aws`'s table.
async fn node(aws: &AwsFixture, id: u64, join: Option<&str>) -> TestNode {
    node_with(aws, FAST, id, join, &[]).await
}

/// As `node`, with its own configuration and extra environment.
pub(super) async fn node_with(
    aws: &AwsFixture,
    config: &str,
    id: u64,
    join: Option<&str>,
    extra_env: &[(&'static str, &str)],
) -> TestNode {
    let mut args = vec!["--node-id".to_owned(), id.to_string()];
    if let Some(join) = join {
        args.extend(["--join".to_owned(), join.to_owned()]);
    }
    let mut env = aws.store_env();
    env.push(("PLAYSTATE_CLUSTER__SECRET", SECRET));
    env.extend_from_slice(extra_env);
    TestNode::spawn_with(config, &args, &env).await
}

/// `playstate cluster ARGS` with the cluster secret; asserts it succeeded, returns stdout.
pub(super) fn cli(args: &[&str]) -> Vec<u8> {
    let output = Command::new(env!("CARGO_BIN_EXE_playstate"))
        .arg("cluster")
        .args(args)
        .env("PLAYSTATE_CLUSTER__SECRET", SECRET)
        .output()
        .expect("run playstate cluster");
    assert!(
        output.status.success(),
        "playstate cluster {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `playstate cluster status --json` through `node`.
pub(super) fn status(node: &TestNode) -> Value {
    let stdout = cli(&["status", "--json", "--cluster-addr", &node.cluster_addr]);
    serde_json::from_slice(&stdout).expect("status is JSON")
}

/// `playstate cluster leave --node-id node` through `via`; asserts it succeeded.
fn leave(via: &TestNode, node: u64) {
    let id = node.to_string();
    cli(&[
        "leave",
        "--node-id",
        &id,
        "--cluster-addr",
        &via.cluster_addr,
    ]);
}

pub(super) fn shard_counts(status: &Value) -> Vec<u64> {
    let mut counts: Vec<u64> = status["shards"]
        .as_object()
        .expect("shards")
        .values()
        .map(|v| v.as_u64().unwrap())
        .collect();
    counts.sort();
    counts
}

/// Waits until `node` sees `members` members, a leader, no moves, and balanced shards.
pub(super) async fn settled(node: &TestNode, members: usize) -> Value {
    eventually("the cluster to settle", || async {
        let s = status(node);
        let counts: Vec<u64> = shard_counts(&s).into_iter().filter(|c| *c > 0).collect();
        let balanced = counts.len() == members
            && counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1;
        (s["members"].as_array().unwrap().len() == members
            && !s["leader"].is_null()
            && s["handoffs"].as_array().unwrap().is_empty()
            && balanced)
            .then_some(s)
    })
    .await
}

/// Where `via`'s table routes `user`: owner, backup, shard, epoch.
pub(super) async fn route(via: &TestNode, user: &str) -> Value {
    via.client
        .get(format!(
            "http://{}/cluster/admin/route/{user}",
            via.cluster_addr
        ))
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("route")
        .json()
        .await
        .expect("route is JSON")
}

/// `count` new users whose shard `node` owns.
pub(super) async fn users_of(via: &TestNode, node: u64, count: usize) -> Vec<String> {
    let mut found = Vec::new();
    while found.len() < count {
        let candidate = user();
        if route(via, &candidate).await["owner"] == json!(node) {
            found.push(candidate);
        }
    }
    found
}

pub(super) async fn ready(node: &TestNode) {
    eventually("the node to be ready", || async {
        (node.get("/ready").await.status() == 200).then_some(())
    })
    .await;
}

async fn three_nodes(aws: &AwsFixture) -> Vec<TestNode> {
    let first = node(aws, 1, None).await;
    ready(&first).await;
    let join = first.cluster_addr.clone();
    let second = node(aws, 2, Some(&join)).await;
    let third = node(aws, 3, Some(&join)).await;
    let nodes = vec![first, second, third];
    for n in &nodes {
        ready(n).await;
    }
    settled(&nodes[0], 3).await;
    nodes
}

pub(super) async fn heartbeat(node: &TestNode, user: &str, session: &str) -> u16 {
    node.as_user(Method::PUT, &format!("/v1/streams/{session}"), user)
        .json(&json!({ "streamId": "film" }))
        .send()
        .await
        .expect("heartbeat")
        .status()
        .as_u16()
}

#[tokio::test]
async fn three_nodes_form_a_cluster_and_share_the_shards() {
    let aws = AwsFixture::new(&endpoint()).await;
    let nodes = three_nodes(&aws).await;
    let s = status(&nodes[1]);
    let members = s["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    // Its background workers, each named, running under the supervisor (formation is
    // done by now).
    let workers: BTreeSet<(String, String)> = s["workers"]
        .as_array()
        .expect("workers in the status")
        .iter()
        .map(|w| {
            let field = |name: &str| w[name].as_str().unwrap_or_default().to_owned();
            (field("name"), field("state"))
        })
        .collect();
    for running in [
        "lease-keeper",
        "controller",
        "shard-table-follower",
        "backup-sender",
    ] {
        assert!(
            workers.contains(&(running.to_owned(), "running".to_owned())),
            "{running} is not running: {workers:?}"
        );
    }
    assert!(
        workers.contains(&("cluster-formation".to_owned(), "finished".to_owned())),
        "{workers:?}"
    );
    assert!(members.iter().all(|m| m["role"] == "voter"), "{s}");
    assert!(members.iter().all(|m| m["state"] == "active"), "{s}");
    assert_eq!(shard_counts(&s), [341, 341, 342]);
    let leader = s["leader"].as_u64().unwrap();
    assert!((1..=3).contains(&leader));
    for n in &nodes {
        assert_eq!(
            status(n)["leader"].as_u64(),
            Some(leader),
            "every node sees one leader"
        );
    }
    let table = cli(&["status", "--cluster-addr", &nodes[2].cluster_addr]);
    let text = String::from_utf8_lossy(&table);
    for n in &nodes {
        assert!(text.contains(&n.cluster_addr), "{text}");
    }
    assert!(text.contains(&format!("leader {leader}")), "{text}");
    // The cluster metrics say the same.
    let owned: f64 = {
        let mut sum = 0.0;
        for n in &nodes {
            sum += n.metric("playstate_cluster_shards_owned").await;
        }
        sum
    };
    assert_eq!(owned, 1024.0);
    let mut leaders = 0.0;
    for n in &nodes {
        leaders += n.metric("playstate_cluster_is_leader").await;
    }
    assert_eq!(leaders, 1.0);
}

#[tokio::test]
async fn the_limit_holds_across_nodes() {
    let aws = AwsFixture::new(&endpoint()).await;
    let nodes = three_nodes(&aws).await;
    let viewer = user();
    let attempts = (0..50).map(|i| {
        let node = &nodes[i % 3];
        let viewer = viewer.clone();
        async move { heartbeat(node, &viewer, &format!("session-{i}")).await }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        47,
        "{statuses:?}"
    );
    let winners: BTreeSet<String> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == 200)
        .map(|(i, _)| format!("session-{i}"))
        .collect();
    for n in &nodes {
        let seen: BTreeSet<String> = sessions(n, &viewer).await.into_iter().collect();
        assert_eq!(seen, winners, "GET /v1/streams through {}", n.addr);
    }
    // One slot per contract, each taken through another node: the 4th is refused.
    // Streamy allows ids of at most 36 characters.
    let household = user()[..30].to_owned();
    let streamy = nodes[0]
        .client
        .post(nodes[0].url("/video-streams/subscription"))
        .json(&json!({ "userId": household, "videoStreamId": "a" }))
        .send()
        .await
        .unwrap();
    assert_eq!(streamy.status(), 200);
    let beat = nodes[1]
        .client
        .post(nodes[1].url("/heartbeat"))
        .json(&json!({ "userId": household, "streamId": "b", "sessionId": "b" }))
        .send()
        .await
        .unwrap();
    assert_eq!(beat.status(), 200);
    let video = |n: &TestNode, id: &str| {
        n.client
            .post(n.url(&format!("/user/{household}/stream")))
            .json(&json!({ "video_id": id }))
            .send()
    };
    assert_eq!(video(&nodes[2], "c").await.unwrap().status(), 200);
    let refused = video(&nodes[2], "d").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        json!({ "message": "User watching too many video streams." })
    );
    let mut lists = Vec::new();
    for n in &nodes {
        let list: Value = n
            .get(&format!("/user/{household}/streams"))
            .await
            .json()
            .await
            .unwrap();
        lists.push(list);
    }
    // Every contract's slots count, and show, for the user.
    assert_eq!(lists[0], json!({ "streams": ["a", "b", "c"] }));
    assert!(lists.iter().all(|l| *l == lists[0]), "{lists:?}");
    // Progress and watchlist through any node.
    let reader = user();
    let asset = super::helpers::asset();
    let put = nodes[0]
        .as_user(Method::PUT, &format!("/v1/progress/{asset}"), &reader)
        .json(&json!({ "progress": 1135 }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let listed = nodes[2]
        .as_user(Method::PUT, &format!("/v1/watchlist/{asset}"), &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    for n in &nodes {
        assert_eq!(
            n.get_json(&format!("/v1/progress/{asset}"), &reader).await,
            json!({ "asset": asset, "progress": 1135 })
        );
        assert_eq!(
            n.get_json("/v1/watchlist", &reader).await[0]["asset"],
            json!(asset)
        );
    }
    // Forwarding is counted on the nodes that forwarded.
    let mut forwarded = 0.0;
    for n in &nodes {
        forwarded += n
            .metric("playstate_forwarded_commands_total{outcome=\"ok\"}")
            .await;
    }
    assert!(forwarded > 0.0);
}

#[tokio::test]
async fn cluster_routes_need_the_secret() {
    let aws = AwsFixture::new(&endpoint()).await;
    let n = node(&aws, 1, None).await;
    ready(&n).await;
    let routes = [
        (Method::POST, "/cluster/raft/append"),
        (Method::POST, "/cluster/raft/vote"),
        (Method::POST, "/cluster/raft/snapshot"),
        (Method::POST, "/cluster/forward"),
        (Method::POST, "/cluster/handoff/export"),
        (Method::POST, "/cluster/handoff/import"),
        (Method::GET, "/cluster/admin/status"),
        (Method::POST, "/cluster/admin/join"),
        (Method::POST, "/cluster/admin/leave"),
        (Method::POST, "/cluster/admin/drain"),
        (Method::POST, "/cluster/admin/write"),
    ];
    for (method, path) in routes {
        let cluster_url = format!("http://{}{path}", n.cluster_addr);
        for auth in [None, Some("Bearer wrong"), Some(SECRET)] {
            let mut request = n
                .client
                .request(method.clone(), &cluster_url)
                .json(&json!({}));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let status = request.send().await.unwrap().status();
            assert_eq!(status, 401, "{method} {path} with {auth:?}");
        }
        let player = n
            .client
            .request(method.clone(), n.url(path))
            .header("authorization", format!("Bearer {SECRET}"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            player.status(),
            404,
            "{method} {path} on the player listener"
        );
    }
    // With the secret, the admin API answers.
    let ok = n
        .client
        .get(format!("http://{}/cluster/admin/status", n.cluster_addr))
        .header("authorization", format!("Bearer {SECRET}"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// Every viewer still holds the "tv" and "phone" slots, and reads back the progress and
/// watchlist `remember` stored (their shards have moved since: the new owner must find
/// them), seen through `entry`.
async fn assert_viewers(entry: &TestNode, viewers: &[String], asset: &str) {
    let expect: BTreeSet<String> = ["phone".to_owned(), "tv".to_owned()].into();
    for (i, v) in viewers.iter().enumerate() {
        let seen: BTreeSet<String> = sessions(entry, v).await.into_iter().collect();
        assert_eq!(seen, expect, "slots of {v}");
        let progress = entry.get_json(&format!("/v1/progress/{asset}"), v).await;
        assert_eq!(progress["progress"], i + 1, "progress of {v}");
        let watchlist = entry.get_json("/v1/watchlist", v).await;
        assert_eq!(
            watchlist[0]["asset"], asset,
            "watchlist of {v}: {watchlist}"
        );
    }
}

/// Stores progress `i + 1` on `asset` and puts `asset` on the watchlist of viewer `i`.
async fn remember(entry: &TestNode, viewers: &[String], asset: &str) {
    for (i, v) in viewers.iter().enumerate() {
        let progress = entry
            .as_user(Method::PUT, &format!("/v1/progress/{asset}"), v)
            .json(&json!({ "progress": i + 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(progress.status(), 200);
        let watch = entry
            .as_user(Method::PUT, &format!("/v1/watchlist/{asset}"), v)
            .send()
            .await
            .unwrap();
        assert_eq!(watch.status(), 200);
    }
}

#[tokio::test]
async fn drain_restart_and_leave_lose_no_slot() {
    let aws = AwsFixture::new(&endpoint()).await;
    let mut nodes = three_nodes(&aws).await;
    // Users with slots, progress and a watchlist all over the shards.
    let viewers: Vec<String> = (0..30).map(|_| user()).collect();
    for (i, v) in viewers.iter().enumerate() {
        assert_eq!(heartbeat(&nodes[i % 3], v, "tv").await, 200);
        assert_eq!(heartbeat(&nodes[(i + 1) % 3], v, "phone").await, 200);
    }
    let film = super::helpers::asset();
    remember(&nodes[2], &viewers, &film).await;
    // A planned stop of node 2: its shards go to the others, it stays a member.
    let mut second = nodes.remove(1);
    let pid = second.pid().unwrap();
    second.stop();
    let s = status(&nodes[0]);
    assert_eq!(s["shards"]["2"], 0, "{s}");
    let drained = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 2)
        .cloned();
    assert_eq!(drained.unwrap()["state"], "draining");
    assert_viewers(&nodes[0], &viewers, &film).await;
    assert!(second.logs().contains("drained"), "{pid}");
    // Started again (no --join): it rejoins from its log and gets shards back.
    second.forget_arg("--join");
    let second = second.start_again().await;
    ready(&second).await;
    let s = settled(&nodes[0], 3).await;
    assert!(s["shards"]["2"].as_u64().unwrap() >= 341, "{s}");
    nodes.insert(1, second);
    assert_viewers(&nodes[0], &viewers, &film).await;
    // Node 3 leaves for good: drained, removed, and it exits by itself.
    leave(&nodes[0], 3);
    let mut third = nodes.remove(2);
    third.wait_for_exit(Duration::from_secs(30));
    let s = settled(&nodes[0], 2).await;
    assert_eq!(shard_counts(&s), [512, 512]);
    assert_viewers(&nodes[0], &viewers, &film).await;
    // Its id is gone for good: started again, it refuses.
    let (exit, output) = third.run_to_exit();
    assert!(!exit.success(), "a removed node must not start");
    assert!(output.contains("was removed from the cluster"), "{output}");
}

#[tokio::test]
async fn members_must_share_one_store() {
    let aws = AwsFixture::new(&endpoint()).await;
    let first = node(&aws, 1, None).await;
    ready(&first).await;
    let join = |id: &str| ["--node-id", id, "--join", &first.cluster_addr].map(String::from);
    let secret = ("PLAYSTATE_CLUSTER__SECRET", SECRET);
    // Its own embedded store: it refuses before it starts.
    let (exit, output) = TestNode::run_once(FAST, &join("2"), &[secret]);
    assert!(
        !exit.success(),
        "a node with an embedded store must not join"
    );
    assert!(output.contains("cluster.join"), "{output}");
    assert!(output.contains("store.backend"), "{output}");
    // Another table: the leader refuses it, and it stops.
    let other = AwsFixture::new(&endpoint()).await;
    let mut env = other.store_env();
    env.push(secret);
    let (exit, output) = TestNode::run_once(FAST, &join("3"), &env);
    assert!(!exit.success(), "a node with another table must not join");
    assert!(
        output.contains("every member needs the same store"),
        "{output}"
    );
    assert!(output.contains(&aws.table), "{output}");
    let s = status(&first);
    assert_eq!(s["members"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(shard_counts(&s), [1024]);
}

#[tokio::test]
async fn the_leader_can_leave() {
    let aws = AwsFixture::new(&endpoint()).await;
    let mut nodes = three_nodes(&aws).await;
    let viewer = user();
    assert_eq!(heartbeat(&nodes[0], &viewer, "a").await, 200);
    assert_eq!(heartbeat(&nodes[1], &viewer, "b").await, 200);
    let leader = status(&nodes[0])["leader"].as_u64().unwrap();
    let handed_over = |n: &TestNode| n.logs().matches("shards handed over").count();
    let driven_before = handed_over(&nodes[leader as usize - 1]);
    leave(&nodes[0], leader);
    let mut old = nodes.remove(leader as usize - 1);
    old.wait_for_exit(Duration::from_secs(30));
    // Leadership moved first: the old leader gave its vote up and drove none of its own
    // shards' moves; its successor did.
    let logs = old.logs();
    assert!(
        logs.contains("giving up leadership before the shards move"),
        "{logs}"
    );
    assert_eq!(
        handed_over(&old),
        driven_before,
        "the old leader drove moves: {logs}"
    );
    assert!(nodes.iter().any(|n| handed_over(n) > 0));
    let s = eventually("a new leader", || async {
        let s = status(&nodes[0]);
        (s["leader"].as_u64().is_some_and(|l| l != leader)).then_some(s)
    })
    .await;
    assert_eq!(s["members"].as_array().unwrap().len(), 2);
    let s = settled(&nodes[1], 2).await;
    assert_eq!(shard_counts(&s), [512, 512]);
    for n in &nodes {
        let seen: BTreeSet<String> = sessions(n, &viewer).await.into_iter().collect();
        assert_eq!(seen, ["a".to_owned(), "b".to_owned()].into());
    }
}

/// Players heart-beating and reporting progress through `entries` (round-robin) until
/// stopped, counting every answer that is not 200.
struct PlayerLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    /// What the failed requests got, as "PATH: STATUS BODY" or "PATH: ERROR".
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    viewers: Vec<String>,
    /// The asset every viewer reports progress on.
    asset: String,
    /// The last progress each viewer had acknowledged (one worker serves each viewer, in
    /// order, so this is what the viewer must read back).
    acked: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
}

impl PlayerLoad {
    fn start(entries: Vec<String>, viewers: usize) -> PlayerLoad {
        let viewers: Vec<String> = (0..viewers).map(|_| user()).collect();
        let asset = super::helpers::asset();
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let acked = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let tasks = (0..8)
            .map(|worker| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let acked = acked.clone();
                let (viewers, entries, asset) = (viewers.clone(), entries.clone(), asset.clone());
                // Idle connections dropped before the node's 5 s keep-alive closes them: the
                // test blocks its runtime while a node stops (`TestNode::stop`), and a
                // connection reused as the node closes it fails (`IncompleteMessage`).
                let client = reqwest::Client::builder()
                    .pool_idle_timeout(Duration::from_secs(2))
                    .build()
                    .expect("a client");
                tokio::spawn(async move {
                    let mut i = worker;
                    while !stop.load(Ordering::Relaxed) {
                        let viewer = &viewers[i % viewers.len()];
                        let entry = &entries[i % entries.len()];
                        let token = super::helpers::unsigned_token(viewer);
                        // Every viewer heartbeats in even rounds, reports progress in odd.
                        let progress = ((i / viewers.len()) % 2 == 1).then_some(i as u64);
                        let request = match progress {
                            None => client
                                .put(format!("{entry}/v1/streams/tv"))
                                .json(&json!({ "streamId": "film" })),
                            Some(seconds) => client
                                .put(format!("{entry}/v1/progress/{asset}"))
                                .json(&json!({ "progress": seconds })),
                        };
                        let answer = request
                            .header("authorization", format!("Bearer {token}"))
                            .send()
                            .await;
                        let what = if progress.is_some() {
                            "progress"
                        } else {
                            "stream"
                        };
                        match answer {
                            Ok(r) if r.status() == 200 => {
                                if let Some(seconds) = progress {
                                    acked.lock().unwrap().insert(viewer.clone(), seconds);
                                }
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                let status = r.status();
                                let body = r.text().await.unwrap_or_default();
                                failed
                                    .lock()
                                    .unwrap()
                                    .push(format!("{what} via {entry}: {status} {body}"));
                            }
                            Err(e) => failed
                                .lock()
                                .unwrap()
                                .push(format!("{what} via {entry}: {e:?}")),
                        };
                        i += 8;
                    }
                })
            })
            .collect();
        PlayerLoad {
            stop,
            ok,
            failed,
            tasks,
            viewers,
            asset,
            acked,
        }
    }

    /// Waits until `more` requests have succeeded since the call.
    async fn runs_for(&self, more: u64) {
        let from = self.ok.load(Ordering::Relaxed);
        eventually("the load to go on", || async {
            (self.ok.load(Ordering::Relaxed) >= from + more).then_some(())
        })
        .await;
    }

    /// Stops the load; returns what the failed requests got, and the progress each viewer
    /// had acknowledged last.
    async fn stop(self) -> (Vec<String>, std::collections::HashMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let failed = self.failed.lock().unwrap().clone();
        (failed, acked)
    }
}

/// Every sampled viewer holds its slot and reads back the progress it had acknowledged.
async fn assert_nothing_lost(
    entry: &TestNode,
    viewers: &[String],
    asset: &str,
    acked: &std::collections::HashMap<String, u64>,
) {
    let mut checked = 0;
    for v in viewers.iter().take(40) {
        assert_eq!(sessions(entry, v).await, ["tv"], "slots of {v}");
        if let Some(seconds) = acked.get(v) {
            let read = entry.get_json(&format!("/v1/progress/{asset}"), v).await;
            assert_eq!(read["progress"], json!(seconds), "progress of {v}");
            checked += 1;
        }
    }
    assert!(checked > 10, "too few viewers reported progress: {checked}");
}

#[tokio::test]
async fn a_join_under_load_fails_no_request() {
    let aws = AwsFixture::new(&endpoint()).await;
    let first = node(&aws, 1, None).await;
    ready(&first).await;
    let second = node(&aws, 2, Some(&first.cluster_addr)).await;
    ready(&second).await;
    settled(&first, 2).await;
    let load = PlayerLoad::start(vec![first.url(""), second.url("")], 200);
    load.runs_for(800).await;
    let third = node(&aws, 3, Some(&first.cluster_addr)).await;
    ready(&third).await;
    let s = settled(&first, 3).await;
    load.runs_for(400).await;
    let (viewers, asset) = (load.viewers.clone(), load.asset.clone());
    let (failed, acked) = load.stop().await;
    assert!(
        failed.is_empty(),
        "requests failed during the join: {failed:#?}"
    );
    assert_eq!(shard_counts(&s), [341, 341, 342]);
    assert!(third.metric("playstate_cluster_shards_owned").await >= 341.0);
    assert_nothing_lost(&third, &viewers, &asset, &acked).await;
}

#[tokio::test]
async fn a_drain_and_restart_under_load_fail_no_request() {
    let aws = AwsFixture::new(&endpoint()).await;
    let mut nodes = three_nodes(&aws).await;
    let leader = status(&nodes[0])["leader"].as_u64().unwrap();
    // A follower stops; the players are sent to the other two, as a balancer would.
    let index = (0..3).find(|i| *i as u64 + 1 != leader).unwrap();
    let stays: Vec<String> = (0..3)
        .filter(|i| *i != index)
        .map(|i| nodes[i].url(""))
        .collect();
    let load = PlayerLoad::start(stays, 200);
    load.runs_for(800).await;
    let (viewers, asset) = (load.viewers.clone(), load.asset.clone());
    let mut stopping = nodes.remove(index);
    // Off the test's runtime: stopping blocks while the node drains, and the load's
    // requests, on this runtime, would stall half-sent (a body late by more than the
    // node's body timeout is answered 408 and its connection closed).
    let stopping = tokio::task::spawn_blocking(move || {
        stopping.stop();
        stopping
    })
    .await
    .expect("the node stopped");
    let s = status(&nodes[0]);
    assert_eq!(s["shards"][(index + 1).to_string()], 0, "{s}");
    load.runs_for(400).await;
    let back = stopping.start_again().await;
    ready(&back).await;
    settled(&nodes[0], 3).await;
    load.runs_for(400).await;
    let (failed, acked) = load.stop().await;
    assert!(
        failed.is_empty(),
        "requests failed during the drain and restart: {failed:#?}"
    );
    assert!(back.metric("playstate_cluster_shards_owned").await >= 341.0);
    assert_nothing_lost(&back, &viewers, &asset, &acked).await;
}
