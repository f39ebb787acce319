//! Operating a node: passivation, metrics, logs, correlation ids, and the CLI.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use super::helpers::{TestNode, eventually, user};

async fn heartbeat(node: &TestNode, user: &str, session: &str) -> u16 {
    node.as_user(Method::PUT, &format!("/v1/streams/{session}"), user)
        .json(&json!({ "streamId": "m" }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn idle_actors_passivate_and_come_back_on_the_next_request() {
    let node = TestNode::spawn("[actors]\nidle_timeout = \"300ms\"\ntick = \"50ms\"\n").await;
    let u = user();
    assert_eq!(heartbeat(&node, &u, "s").await, 200);
    assert_eq!(node.metric("playstate_active_users").await, 1.0);
    let ended = node
        .as_user(Method::DELETE, "/v1/streams/s", &u)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204);
    eventually("the idle actor to passivate", || async {
        let m = node.metrics().await;
        (m["playstate_active_users"] == 0.0 && m["playstate_actor_passivations_total"] >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(heartbeat(&node, &u, "s").await, 200);
    assert_eq!(node.metric("playstate_active_users").await, 1.0);
    assert_eq!(node.metric("playstate_active_streams").await, 1.0);
}

#[tokio::test]
async fn an_actor_holding_a_live_slot_is_not_passivated() {
    let node = TestNode::spawn(
        "[actors]\nidle_timeout = \"100ms\"\ntick = \"20ms\"\n[dev]\nmanual_clock = true\n",
    )
    .await;
    let u = user();
    assert_eq!(heartbeat(&node, &u, "s").await, 200);
    // The one place where letting time pass is the assertion: ten idle timeouts.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(node.metric("playstate_active_users").await, 1.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.metric("playstate_actor_passivations_total").await, 0.0);
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_what_happened() {
    let node = TestNode::spawn("").await;
    let text = node.get("/metrics").await.text().await.unwrap();
    let typed: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "value of {line}");
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| typed.contains(base))
            })
            .unwrap_or(name);
        assert!(typed.contains(family), "no # TYPE for {name}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{series}"
            );
        }
    }

    let before = node.metrics().await;
    let u = user();
    for session in ["a", "b", "c", "a", "d"] {
        heartbeat(&node, &u, session).await;
    }
    let after = node.metrics().await;
    let moved = |series: &str| {
        after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
    };
    assert_eq!(moved(r#"playstate_heartbeats_total{outcome="taken"}"#), 3.0);
    assert_eq!(
        moved(r#"playstate_heartbeats_total{outcome="renewed"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"playstate_heartbeats_total{outcome="refused"}"#),
        1.0
    );
    assert_eq!(moved("playstate_active_streams"), 3.0);
    assert_eq!(moved("playstate_active_users"), 1.0);
    let route = r#"route="/v1/streams/{sessionId}""#;
    assert_eq!(
        moved(&format!(
            r#"playstate_http_requests_total{{method="PUT",{route},status="200"}}"#
        )),
        4.0
    );
    assert_eq!(
        moved(&format!(
            r#"playstate_http_requests_total{{method="PUT",{route},status="429"}}"#
        )),
        1.0
    );
    assert_eq!(
        moved(&format!(
            "playstate_http_request_duration_seconds_count{{{route}}}"
        )),
        5.0
    );

    for _ in 0..3 {
        node.client
            .post(node.url("/heartbeat"))
            .json(&json!({ "userId": "m", "streamId": "s", "sessionId": "x" }))
            .send()
            .await
            .unwrap();
    }
    let last = node.metrics().await;
    assert_eq!(
        last[r#"playstate_http_request_duration_seconds_count{route="/heartbeat"}"#],
        3.0
    );
}

#[tokio::test]
async fn correlation_ids_are_echoed_and_logged_with_the_request() {
    let node = TestNode::spawn("").await;
    let given = node
        .client
        .post(node.url("/heartbeat"))
        .header("x-correlation-id", "req-7f3a")
        .json(&json!({ "userId": "logged-user", "streamId": "s", "sessionId": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-correlation-id"], "req-7f3a");
    let generated = node.get("/health").await;
    let id = generated.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36);
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    let line: HashMap<String, serde_json::Value> = eventually("the access-log line", || async {
        node.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<HashMap<String, serde_json::Value>>(l).ok())
            .find(|l| l.get("correlation_id").and_then(|v| v.as_str()) == Some("req-7f3a"))
    })
    .await;
    assert_eq!(line["message"], "request");
    assert_eq!(line["route"], "/heartbeat");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["status"], 200);
    assert_eq!(line["user"], "logged-user");
    assert!(line["latency_ms"].as_f64().is_some());
}

#[tokio::test]
async fn health_and_ready() {
    let node = TestNode::spawn("").await;
    let health = node.get("/health").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), r#"{"status":"OK"}"#);
    // Ready once it has formed its one-node cluster (a moment after it listens).
    eventually("the node is ready", || async {
        (node.get("/ready").await.status() == 200).then_some(())
    })
    .await;
    let clock = node
        .client
        .post(node.url("/dev/clock/advance"))
        .json(&json!({ "millis": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        clock.status(),
        404,
        "the manual clock is off unless configured"
    );
}

fn playstate(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_playstate"));
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run playstate")
}

#[test]
fn check_config_prints_the_effective_config_and_names_bad_keys() {
    let ok = playstate(&["check-config"], &[]);
    assert!(ok.status.success());
    let text = String::from_utf8(ok.stdout).unwrap();
    assert!(text.contains("limit = 3"), "{text}");
    assert!(text.contains("listen = \"127.0.0.1:8080\""), "{text}");

    let overridden = playstate(
        &["check-config", "--listen", "127.0.0.1:9999"],
        &[("PLAYSTATE_STREAMS__LIMIT", "4")],
    );
    let text = String::from_utf8(overridden.stdout).unwrap();
    assert!(
        text.contains("limit = 4") && text.contains("127.0.0.1:9999"),
        "{text}"
    );

    let zero = playstate(&["check-config"], &[("PLAYSTATE_STREAMS__LIMIT", "0")]);
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("streams.limit"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[streams]\nlimit = \"abc\"\n").unwrap();
    let typed = playstate(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(!typed.status.success());
    let stderr = String::from_utf8_lossy(&typed.stderr);
    assert!(stderr.contains("limit"), "{stderr}");

    std::fs::write(&file, "[streams]\nlimt = 3\n").unwrap();
    let typo = playstate(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("limt"));

    let missing = playstate(
        &["check-config", "--config", "/nonexistent/playstate.toml"],
        &[],
    );
    assert!(!missing.status.success());
}

#[tokio::test]
async fn a_node_with_default_config_serves_the_readme_example() {
    let node = TestNode::spawn("").await;
    let ok = node
        .client
        .post(node.url("/heartbeat"))
        .header("content-type", "application/json")
        .body(r#"{"userId":"u","streamId":"s","sessionId":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "OK");
    assert!(node.logs().contains(r#""message":"listening""#));
}
