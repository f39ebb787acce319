//! What an attacker or an unlucky operator meets: a node that refuses to start open to the
//! world, ids that cannot alias each other through broken escapes, tokens refused with the
//! reason, client garbage that never pages anyone, and one correlation id across nodes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::aws::{AwsFixture, endpoint};
use super::cluster::{node_with, ready, settled, users_of};
use super::helpers::{TestNode, eventually, unsigned_token, user};

/// Every key an operator can set to make a node beyond loopback start.
const AUTH_KEYS: [&str; 3] = [
    "auth.jwt_hs256_secret",
    "auth.jwt_rs256_public_key_file",
    "auth.trust_upstream",
];

fn beyond_loopback() -> Vec<String> {
    ["--listen", "0.0.0.0:0", "--cluster-listen", "127.0.0.1:0"]
        .map(String::from)
        .to_vec()
}

/// The node's player address on loopback (it listens on the wildcard address).
fn loopback_url(node: &TestNode, path: &str) -> String {
    let port = node.addr.rsplit_once(':').expect("HOST:PORT").1;
    format!("http://127.0.0.1:{port}{path}")
}

/// The log lines of `node` as JSON objects.
fn log_lines(node: &TestNode) -> Vec<Value> {
    node.logs()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Runs the binary with `args` and no configuration file until it exits: its exit code
/// and its output. Panics if it is still running after a few seconds (it started).
fn run_to_refusal(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_playstate"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run playstate");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("playstate {args:?} did not exit: it started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[test]
fn a_node_beyond_loopback_refuses_to_start_without_token_verification() {
    let serve = ["--listen", "0.0.0.0:0", "--cluster-listen", "127.0.0.1:0"];
    let (code, output) = run_to_refusal(&serve);
    assert_eq!(code, Some(2), "{output}");
    for key in AUTH_KEYS {
        assert!(output.contains(key), "the refusal names {key}: {output}");
    }
    // check-config says the same, before anyone tries to start it.
    let (code, output) = run_to_refusal(&["--listen", "0.0.0.0:0", "check-config"]);
    assert_eq!(code, Some(2), "{output}");
    for key in AUTH_KEYS {
        assert!(output.contains(key), "check-config names {key}: {output}");
    }
    // On loopback nothing is asked.
    let (code, output) = run_to_refusal(&["check-config"]);
    assert_eq!(code, Some(0), "{output}");
}

#[tokio::test]
async fn a_node_beyond_loopback_starts_behind_a_gateway_that_verifies_tokens() {
    let node =
        TestNode::spawn_with("[auth]\ntrust_upstream = true\n", &beyond_loopback(), &[]).await;
    let answer = node
        .client
        .get(loopback_url(&node, "/v1/streams"))
        .bearer_auth(unsigned_token(&user()))
        .send()
        .await
        .expect("GET /v1/streams");
    assert_eq!(
        answer.status(),
        200,
        "the gateway's tokens are only decoded"
    );
}

const HS256_SECRET: &str = "security-test-secret";

fn signed_token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(HS256_SECRET.as_bytes()),
    )
    .expect("sign")
}

fn in_an_hour() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.expect("after 1970").as_secs() + 3600
}

/// `GET /v1/streams` with `token`: the status and the problem's detail.
async fn streams_with(node: &TestNode, url: &str, token: &str) -> (u16, String) {
    let answer = node
        .client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /v1/streams");
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap_or_default();
    (
        status,
        body["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_node_beyond_loopback_starts_when_it_verifies_tokens() {
    let config = format!("[auth]\njwt_hs256_secret = \"{HS256_SECRET}\"\n");
    let node = TestNode::spawn_with(&config, &beyond_loopback(), &[]).await;
    let url = loopback_url(&node, "/v1/streams");
    let viewer = user();
    let signed = signed_token(json!({ "sub": viewer, "exp": in_an_hour() }));
    assert_eq!(streams_with(&node, &url, &signed).await.0, 200);
    let (status, _) = streams_with(&node, &url, &unsigned_token(&viewer)).await;
    assert_eq!(status, 401, "an unsigned token is refused");
    // A verified token with a claim of the wrong type is refused naming the claim.
    let numeric_plan = signed_token(json!({ "sub": viewer, "plan": 5, "exp": in_an_hour() }));
    let (status, detail) = streams_with(&node, &url, &numeric_plan).await;
    assert_eq!(status, 401);
    assert!(detail.contains("`plan`"), "{detail}");
}

#[tokio::test]
async fn a_token_with_a_claim_of_the_wrong_type_is_refused_naming_the_claim() {
    let node = TestNode::spawn("").await;
    let token = |claims: Value| {
        use base64::Engine;
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        format!(
            "{}.{}.sig",
            encode(r#"{"alg":"none"}"#),
            encode(&claims.to_string())
        )
    };
    let url = node.url("/v1/streams");
    let viewer = user();
    for (claims, named) in [
        (json!({ "sub": viewer, "plan": 5 }), "`plan`"),
        (json!({ "sub": viewer, "plan": ["family"] }), "`plan`"),
        (json!({ "sub": 42 }), "`sub`"),
    ] {
        let (status, detail) = streams_with(&node, &url, &token(claims.clone())).await;
        assert_eq!(status, 401, "{claims}");
        assert!(detail.contains(named), "{claims}: {detail}");
        assert!(!detail.contains("decodable"), "{claims}: {detail}");
    }
    assert_eq!(
        streams_with(&node, &url, "a.b").await.1,
        "bearer token is not a decodable JWT"
    );
    let (status, _) =
        streams_with(&node, &url, &token(json!({ "sub": viewer, "plan": null }))).await;
    assert_eq!(status, 200, "a null plan is no plan");
}

/// `method path` as a VideoStreams client: status and JSON body.
async fn video_streams(node: &TestNode, method: Method, path: &str) -> (u16, Value) {
    let mut request = node.client.request(method.clone(), node.url(path));
    if method == Method::POST {
        request = request.json(&json!({ "video_id": "film-1" }));
    }
    let answer = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or_default())
}

#[tokio::test]
async fn path_ids_that_are_not_utf8_are_refused_not_merged() {
    let node = TestNode::spawn("").await;
    for bad in ["%ff", "%fe", "%C3", "a%ED%A0%80"] {
        for (method, path) in [
            (Method::POST, format!("/user/{bad}/stream")),
            (Method::GET, format!("/user/{bad}/streams")),
        ] {
            let (status, body) = video_streams(&node, method, &path).await;
            assert_eq!(status, 400, "{path}: {body}");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("user_id") && message.contains("UTF-8"),
                "{path}: {message}"
            );
        }
    }
    // A valid U+FFFD is an id like any other, and no broken escape reaches its account.
    let (status, _) = video_streams(&node, Method::POST, "/user/%EF%BF%BD/stream").await;
    assert_eq!(status, 200);
    let (_, listed) = video_streams(&node, Method::GET, "/user/%EF%BF%BD/streams").await;
    assert_eq!(listed, json!({ "streams": ["film-1"] }));
    // An escaped slash is the slash a token's `sub` has: one account, both ways in.
    let (status, _) = video_streams(&node, Method::POST, "/user/a%2Fb/stream").await;
    assert_eq!(status, 200);
    let listed = node.get_json("/v1/streams", "a/b").await;
    assert_eq!(listed[0]["streamId"], "film-1", "{listed}");

    // Every other route with an id in its path.
    let viewer = user();
    for (method, path, field) in [
        (Method::PUT, "/v1/streams/%ff", "sessionId"),
        (Method::DELETE, "/v1/streams/%fe", "sessionId"),
        (Method::GET, "/v1/progress/%ff", "assetId"),
        (Method::PUT, "/v1/watchlist/%ff", "assetId"),
    ] {
        let answer = node
            .as_user(method, path, &viewer)
            .json(&json!({ "streamId": "film", "progress": 1 }))
            .send()
            .await
            .expect(path);
        assert_eq!(answer.status(), 400, "{path}");
        let body: Value = answer.json().await.expect("a problem");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(field) && detail.contains("UTF-8"),
            "{path}: {detail}"
        );
    }
    // And the trailers' `url` query parameter.
    let prefix = "https%3A%2F%2Fcontent.viaplay.se%2Fpc-se%2Ffilm%2F";
    let answer = node.get(&format!("/v1/trailers?url={prefix}%ff")).await;
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.expect("a problem");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("UTF-8"),
        "{body}"
    );
}

/// Sends `bytes` on a fresh connection and reads until the node closes it (bounded).
async fn raw_exchange(addr: &str, bytes: &[u8]) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let _ = stream.write_all(bytes).await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
}

/// One of each malformed request a scanner sends, `rounds` times over, at once.
async fn malformed_burst(node: &TestNode, rounds: usize) {
    let addr = node.addr.trim_start_matches("http://").to_owned();
    let asset = uuid::Uuid::new_v4();
    let viewer = user();
    let requests = (0..rounds).map(|i| {
        let addr = addr.clone();
        let viewer = viewer.clone();
        async move {
            let garbage: [&[u8]; 3] = [
                b"GARBAGE \x01\x02\r\n\r\n",
                b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            ];
            raw_exchange(&addr, garbage[i % garbage.len()]).await;
            let progress = format!("/v1/progress/{asset}");
            let _ = node
                .as_user(Method::PUT, &progress, &viewer)
                .header("content-type", "application/json")
                .body("{not json")
                .send()
                .await;
            let _ = node
                .as_user(Method::PUT, &progress, &viewer)
                .body(vec![b'x'; 64 * 1024])
                .send()
                .await;
            let _ = node.get("/user/%ff/streams").await;
            let _ = node
                .client
                .get(node.url("/v1/streams"))
                .bearer_auth("not-a-token")
                .send()
                .await;
            let _ = node.get(&format!("/wp-login.php?{i}")).await;
        }
    });
    futures_util::future::join_all(requests).await;
}

#[tokio::test]
async fn malformed_requests_log_no_error_and_a_bounded_number_of_warnings() {
    let node = TestNode::spawn("").await;
    let before = log_lines(&node).len();
    let started = Instant::now();
    malformed_burst(&node, 60).await;
    // The first line after a full second tells how many were left out.
    let addr = node.addr.trim_start_matches("http://").to_owned();
    eventually("a warning that counts the lines left out", || async {
        raw_exchange(&addr, b"GARBAGE\r\n\r\n").await;
        log_lines(&node)
            .iter()
            .any(|l| l["level"] == "WARN" && l["suppressed"].as_u64().unwrap_or(0) > 0)
            .then_some(())
    })
    .await;
    // Windows are per kind and start at their first line: at most one more than seconds.
    let windows = started.elapsed().as_secs() + 2;
    let lines: Vec<Value> = log_lines(&node).into_iter().skip(before).collect();
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(
        errors.is_empty(),
        "client faults logged as errors: {errors:?}"
    );
    let warnings: Vec<&Value> = lines.iter().filter(|l| l["level"] == "WARN").collect();
    let kinds: std::collections::BTreeSet<&str> =
        warnings.iter().filter_map(|l| l["kind"].as_str()).collect();
    let bound = kinds.len().max(1) as u64 * 5 * windows;
    assert!(
        (warnings.len() as u64) <= bound,
        "{} warnings in {windows} windows for {} kinds: {warnings:?}",
        warnings.len(),
        kinds.len()
    );
    assert!(
        warnings
            .iter()
            .all(|l| l["message"] == "a client's connection failed"),
        "{warnings:?}"
    );
    // Each malformed request still has its access line, at info.
    let bad_json = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["status"] == 400 && l["level"] == "INFO")
        .count();
    assert!(bad_json >= 60, "{bad_json} access lines for 400s");
}

#[tokio::test]
async fn a_forwarded_request_carries_its_correlation_id_to_the_owner() {
    let aws = AwsFixture::new(&endpoint()).await;
    let config = super::cluster::FAST;
    let first = node_with(&aws, config, 1, None, &[]).await;
    ready(&first).await;
    let join = first.cluster_addr.clone();
    let second = node_with(&aws, config, 2, Some(&join), &[]).await;
    ready(&second).await;
    settled(&first, 2).await;
    let viewer = users_of(&first, 1, 1).await.remove(0);
    let asset = uuid::Uuid::new_v4();
    // A stream command (batched with others) and a library command (sent alone).
    let stream_id = format!("corr-stream-{}", uuid::Uuid::new_v4());
    let heartbeat = second
        .as_user(Method::PUT, "/v1/streams/s1", &viewer)
        .header("x-correlation-id", &stream_id)
        .json(&json!({ "streamId": "film" }))
        .send()
        .await
        .expect("heartbeat");
    assert_eq!(heartbeat.status(), 200);
    let library_id = format!("corr-library-{}", uuid::Uuid::new_v4());
    let progress = second
        .as_user(Method::PUT, &format!("/v1/progress/{asset}"), &viewer)
        .header("x-correlation-id", &library_id)
        .json(&json!({ "progress": 12 }))
        .send()
        .await
        .expect("progress");
    assert!(progress.status().is_success(), "{}", progress.status());
    for id in [&stream_id, &library_id] {
        let tagged = |node: &TestNode, message: &str| {
            log_lines(node)
                .into_iter()
                .find(|l| l["correlation_id"] == id.as_str() && l["message"] == message)
        };
        let entry = eventually("the entry node's access line", || async {
            tagged(&second, "request")
        })
        .await;
        assert_eq!(entry["user"], viewer.as_str());
        let owner = eventually("the owner's line for the forwarded command", || async {
            tagged(&first, "forwarded command")
        })
        .await;
        assert_eq!(owner["user"], viewer.as_str(), "{owner}");
        assert_eq!(owner["outcome"], "ok", "{owner}");
        assert!(
            !log_lines(&first)
                .iter()
                .any(|l| l["message"] == "request" && l["correlation_id"] == id.as_str()),
            "the owner served it as a forwarded command, not as a player request"
        );
    }
}
