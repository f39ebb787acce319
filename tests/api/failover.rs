//! Unplanned changes with real node processes: a node killed with SIGKILL (a follower, the
//! leader), a node cut off from the others, a crashed node restarted on its data dir.
//! Each checks what a crash must never do: free the live slots of the crashed node's
//! users (the limit must hold across it), lose an acknowledged watchlist edit, or lose
//! progress acknowledged more than one backup interval before the crash.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use super::aws::{AwsFixture, endpoint};
use super::cluster::{cli, heartbeat, node_with, ready, settled, status, users_of};
use super::helpers::{TestNode, asset, eventually, sessions};
use super::loadtest::{players, timeline};
use super::proxy::Proxy;

/// Short leases so that a failover takes seconds; progress is never flushed on its own
/// during a test, so what survives a crash came through the backup.
const FAILOVER: &str = r#"
[cluster]
heartbeat_interval = "100ms"
election_timeout = "800ms"
handoff_wait = "5s"
ownership_lease = "2s"
failover_after = "3s"
backup_interval = "200ms"
[progress]
flush_interval = "60s"
[actors]
tick = "100ms"
"#;

/// How long a test waits for a failover: `failover_after`, an election, and room for a
/// loaded 2-core machine.
const FAILOVER_WAIT: Duration = Duration::from_secs(40);

async fn three_nodes(aws: &AwsFixture) -> Vec<TestNode> {
    let first = node_with(aws, FAILOVER, 1, None, &[]).await;
    ready(&first).await;
    let join = first.cluster_addr.clone();
    let second = node_with(aws, FAILOVER, 2, Some(&join), &[]).await;
    let third = node_with(aws, FAILOVER, 3, Some(&join), &[]).await;
    let nodes = vec![first, second, third];
    for n in &nodes {
        ready(n).await;
    }
    settled(&nodes[0], 3).await;
    nodes
}

async fn metric_sum(nodes: &[&TestNode], series: &str) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += n.metric(series).await;
    }
    sum
}

/// What the test acknowledged for the victim's users before the crash.
struct Acknowledged {
    /// Holds three slots (the limit).
    at_limit: String,
    sessions: Vec<String>,
    /// Each with progress on `asset` and `asset` on the watchlist.
    readers: Vec<(String, u64)>,
    asset: String,
}

/// Gives the victim's users slots, progress and watchlist entries through the other
/// nodes, and waits until their backups hold all of it.
async fn acknowledge(victim: u64, survivors: &[&TestNode]) -> Acknowledged {
    let via = survivors[0];
    let mut users = users_of(via, victim, 4).await;
    let at_limit = users.pop().unwrap();
    let sessions: Vec<String> = (0..3).map(|i| format!("held-{i}")).collect();
    for (i, session) in sessions.iter().enumerate() {
        let through = survivors[i % survivors.len()];
        assert_eq!(heartbeat(through, &at_limit, session).await, 200);
    }
    assert_eq!(heartbeat(via, &at_limit, "one-too-many").await, 429);
    let asset = asset();
    let mut readers = Vec::new();
    for (i, reader) in users.into_iter().enumerate() {
        let through = survivors[i % survivors.len()];
        let seconds = 100 + i as u64;
        let put = through
            .as_user(Method::PUT, &format!("/v1/progress/{asset}"), &reader)
            .json(&json!({ "progress": seconds }))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
        let listed = through
            .as_user(Method::PUT, &format!("/v1/watchlist/{asset}"), &reader)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200);
        readers.push((reader, seconds));
    }
    // Acknowledged and backed up: from here a crash must lose none of it.
    eventually("the backups to hold the victim's users", || async {
        (metric_sum(survivors, "playstate_backup_users").await >= 4.0).then_some(())
    })
    .await;
    Acknowledged {
        at_limit,
        sessions,
        readers,
        asset,
    }
}

/// Waits until the players' load reaches every node.
async fn wait_for_load(nodes: &[&TestNode]) {
    eventually("the load to reach every node", || async {
        for n in nodes {
            if n.metric("playstate_heartbeats_total{outcome=\"taken\"}")
                .await
                < 1.0
            {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Tries a 4th session of the user at the limit through `via` until the shard is served
/// again (429), asserting it is never accepted meanwhile; returns how long that took.
async fn refused_until_served(via: &TestNode, at_limit: &str) -> Duration {
    let started = Instant::now();
    loop {
        let status = heartbeat(via, at_limit, "fourth").await;
        assert_ne!(
            status, 200,
            "a 4th session was accepted during the failover"
        );
        if status == 429 {
            return started.elapsed();
        }
        assert_eq!(status, 503, "while the shard has no live owner");
        assert!(
            started.elapsed() < FAILOVER_WAIT,
            "the shard was not served again within {FAILOVER_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything acknowledged is there, through every survivor.
async fn assert_kept(acked: &Acknowledged, survivors: &[&TestNode]) {
    for via in survivors {
        let mut held = sessions(via, &acked.at_limit).await;
        held.sort();
        assert_eq!(held, acked.sessions, "slots held through {}", via.addr);
        assert_eq!(heartbeat(via, &acked.at_limit, "fourth").await, 429);
        for (reader, seconds) in &acked.readers {
            assert_eq!(
                via.get_json(&format!("/v1/progress/{}", acked.asset), reader)
                    .await,
                json!({ "asset": acked.asset, "progress": seconds }),
                "progress of {reader}"
            );
            let list = via.get_json("/v1/watchlist", reader).await;
            assert_eq!(
                list[0]["asset"],
                json!(acked.asset),
                "watchlist of {reader}"
            );
        }
    }
}

async fn crash_keeps_what_was_acknowledged(crash_the_leader: bool) {
    let aws = AwsFixture::new(&endpoint()).await;
    let mut nodes = three_nodes(&aws).await;
    let leader = status(&nodes[0])["leader"].as_u64().unwrap();
    let victim = (1..=3u64)
        .find(|id| (*id == leader) == crash_the_leader)
        .unwrap();
    let mut victim_node = nodes.remove(victim as usize - 1);
    let survivors: Vec<&TestNode> = nodes.iter().collect();
    let acked = acknowledge(victim, &survivors).await;

    // Players on the survivors: those whose shard the crashed node owned see a dip.
    let targets: Vec<&str> = survivors.iter().map(|n| n.addr.as_str()).collect();
    // Far longer than the test: it is stopped, not run out.
    let load = ::loadtest::start(players(&targets, Duration::from_secs(120))).expect("load");
    wait_for_load(&survivors).await;

    victim_node.crash();
    let outage = refused_until_served(survivors[0], &acked.at_limit).await;
    eprintln!("the crashed node's shard was served again after {outage:?}");
    refused_until_served(survivors[1], &acked.at_limit).await;
    assert_kept(&acked, &survivors).await;
    // Long enough for whole seconds of load after the failover.
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.stop();
    let summary = load.finished().await.expect("the load ran");
    let t = timeline(&summary);
    for second in &t.seconds {
        let o = &second.outcomes;
        eprintln!(
            "second {:>2}: {:>5} requests, {:>5} ok, {:>4} 503, p99 {:?} µs",
            second.second, o.requests, o.ok, o.status_503, second.p99_us
        );
    }
    let first = t
        .first_error_second
        .expect("a dip while the shards had no owner");
    let last = t.last_error_second.expect("a dip");
    assert!(
        (last as usize) + 2 < t.seconds.len(),
        "the dip (seconds {first}..={last}) did not end: {t:#?}"
    );
    assert_eq!(
        t.total.errors(),
        t.total.status_503,
        "only 503s (with Retry-After), and only while the shards had no owner: {t:#?}"
    );

    let s = status(survivors[0]);
    let new_leader = s["leader"].as_u64().expect("a leader");
    assert_ne!(new_leader, victim);
    assert!(
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == json!(victim)),
        "the crashed node stays a member: it may come back; {s}"
    );
    assert_eq!(s["shards"][victim.to_string()], json!(0), "{s}");
    assert!(metric_sum(&survivors, "playstate_failover_slots_recovered_total").await >= 3.0);
    assert!(
        metric_sum(&survivors, "playstate_failover_progress_recovered_total").await
            >= acked.readers.len() as f64
    );
    assert!(metric_sum(&survivors, "playstate_failover_shards_total").await > 0.0);

    if crash_the_leader {
        // Its machine is gone: the operator removes it, and it may never serve again.
        let id = victim.to_string();
        cli(&[
            "remove",
            "--node-id",
            &id,
            "--cluster-addr",
            &survivors[0].cluster_addr,
        ]);
        let s = settled(survivors[0], 2).await;
        assert!(
            s["members"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["id"] != json!(victim)),
            "{s}"
        );
        let (exit, output) = victim_node.run_to_exit();
        assert!(!exit.success(), "a removed node must not start");
        assert!(output.contains("was removed from the cluster"), "{output}");
        assert_kept(&acked, &survivors).await;
        return;
    }
    // It comes back on its data dir: it catches up, gets shards again, nothing is lost.
    let back = victim_node.start_again().await;
    ready(&back).await;
    settled(survivors[0], 3).await;
    let all: Vec<&TestNode> = survivors.iter().copied().chain([&back]).collect();
    assert_kept(&acked, &all).await;
    // It counts as lost only what no backup held: the players' updates since its last
    // backup round, as an upper bound (never less, at most the unflushed reservation's
    // headroom more: `outage::a_crash_counts_exactly_the_progress_it_lost`), never what
    // the backups stored (about 100 progress updates a second reach its users here).
    let lost = back.metric("playstate_progress_lost_total").await;
    let recovered = metric_sum(&survivors, "playstate_failover_progress_recovered_total").await;
    assert!(lost < 60.0, "lost {lost}, recovered {recovered}");
}

#[tokio::test]
async fn a_crashed_follower_frees_no_slot_and_loses_nothing_acknowledged() {
    crash_keeps_what_was_acknowledged(false).await;
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_frees_no_slot_and_can_be_removed() {
    crash_keeps_what_was_acknowledged(true).await;
}

/// Node `id` behind `proxy`: the others reach it only through the proxy.
async fn proxied_node(aws: &AwsFixture, proxy: &Proxy, id: u64, join: Option<&str>) -> TestNode {
    let advertise = proxy.addr().to_string();
    let node = node_with(
        aws,
        FAILOVER,
        id,
        join,
        &[("PLAYSTATE_CLUSTER__ADVERTISE", advertise.as_str())],
    )
    .await;
    proxy.set_upstream(node.cluster_addr.parse().expect("a socket address"));
    node
}

/// A partition made with a TCP proxy of the test's own in front of every node's cluster
/// listener (see `proxy` for why a proxy rather than network namespaces): the node cut
/// off is the leader, the hardest case, since it goes on believing it leads.
#[tokio::test]
async fn a_node_cut_off_stops_serving_before_the_others_take_its_shards() {
    let aws = AwsFixture::new(&endpoint()).await;
    let proxies: Vec<Proxy> = (0..3).map(|_| Proxy::start_without_upstream()).collect();
    let first = proxied_node(&aws, &proxies[0], 1, None).await;
    ready(&first).await;
    let join = proxies[0].addr().to_string();
    let mut nodes = vec![first];
    for id in 2..=3u64 {
        nodes.push(proxied_node(&aws, &proxies[id as usize - 1], id, Some(&join)).await);
    }
    for n in &nodes {
        ready(n).await;
    }
    settled(&nodes[0], 3).await;
    let cut_off = status(&nodes[0])["leader"].as_u64().unwrap();
    let x = cut_off as usize - 1;
    let majority: Vec<&TestNode> = (0..3).filter(|i| *i != x).map(|i| &nodes[i]).collect();
    let acked = acknowledge(cut_off, &majority).await;

    let pid = nodes[x].pid().unwrap();
    proxies[x].cut();
    for (i, proxy) in proxies.iter().enumerate() {
        if i != x {
            proxy.cut_from(pid);
        }
    }
    let cut_at = Instant::now();
    // A 4th session of the user at the limit, through both sides, until the cut-off node
    // has stopped serving and the majority serves the shard: never accepted.
    let (mut stopped, mut served) = (None, None);
    let (mut inside, mut outside) = (0, 0);
    while stopped.is_none() || served.is_none() {
        if cut_at.elapsed() >= FAILOVER_WAIT {
            let missing = match (stopped, served) {
                (None, None) => {
                    "the cut-off node never stopped serving and the majority never served"
                }
                (None, Some(_)) => "the cut-off node never stopped serving",
                _ => "the majority never served the cut-off node's shard",
            };
            for (i, node) in nodes.iter().enumerate() {
                eprintln!(
                    "--- node {} (cut off: {}) ---\n{}",
                    i + 1,
                    i == x,
                    node.logs()
                );
            }
            panic!(
                "no failover within {FAILOVER_WAIT:?}: {missing} (last answers: {inside} from the \
                 cut-off node, {outside} from the majority; stopped {stopped:?}, served {served:?})"
            );
        }
        inside = heartbeat(&nodes[x], &acked.at_limit, "fourth").await;
        outside = heartbeat(majority[0], &acked.at_limit, "fourth").await;
        assert_ne!(inside, 200, "accepted by the cut-off node");
        assert_ne!(outside, 200, "accepted by the majority");
        if inside == 503 && stopped.is_none() {
            stopped = Some(cut_at.elapsed());
        }
        if stopped.is_some() {
            assert_eq!(inside, 503, "the cut-off node served again while cut off");
        }
        if outside == 429 && served.is_none() {
            served = Some(cut_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (stopped, served) = (stopped.unwrap(), served.unwrap());
    eprintln!("cut off: stopped serving after {stopped:?}, the majority served after {served:?}");
    assert!(
        stopped < served,
        "the majority served the shard ({served:?}) before the cut-off node stopped ({stopped:?})"
    );
    let inside = status(&nodes[x]);
    assert_eq!(inside["lease_valid"], json!(false), "{inside}");
    let outside = status(majority[0]);
    assert_ne!(outside["leader"], json!(cut_off), "a new leader: {outside}");

    proxies.iter().for_each(Proxy::heal);
    // It catches up, learns its shards moved, and gets a share back by rebalancing.
    eventually("the healed node to catch up", || async {
        let s = status(&nodes[x]);
        (s["leader"] == outside["leader"] && s["lease_valid"] == json!(true)).then_some(())
    })
    .await;
    settled(majority[0], 3).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    assert_kept(&acked, &all).await;
}
