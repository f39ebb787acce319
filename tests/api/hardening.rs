//! What a node does with clients that are slow, greedy or odd: trickled heads and stalled
//! bodies are cut off, connections beyond `server.max_connections` are refused without
//! hurting the served ones, and the HTTP/1 corners (oversized heads, unknown methods,
//! pipelining, HTTP/1.0) get their standard answers. Spoken over raw TCP, since an HTTP
//! client library would not misbehave on request.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::helpers::{TestNode, eventually, unsigned_token, user};

/// No exchange in these tests may take longer than this; each is bounded by it.
const BOUND: Duration = Duration::from_secs(20);

async fn connect(node: &TestNode) -> TcpStream {
    let addr = node.addr.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Everything the node sends until it closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut received))
        .await
        .expect("the node closes the connection in time")
        .ok();
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends `request` on a fresh connection and returns all the node answered until it closed.
async fn exchange(node: &TestNode, request: &[u8]) -> String {
    let mut stream = connect(node).await;
    stream.write_all(request).await.expect("send");
    read_to_close(&mut stream).await
}

/// Reads one response (head and a `content-length` body) from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = find(&received, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if received.len() >= end + 4 + length {
                    return;
                }
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed mid-response after {received:?}");
            received.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("a response in time");
    String::from_utf8_lossy(&received).into_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn status_of(response: &str) -> &str {
    response.get(9..12).unwrap_or("")
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test]
async fn a_head_trickled_a_byte_a_second_is_cut_off_after_the_header_timeout() {
    let node = TestNode::spawn("[server]\nheader_timeout = \"1s\"\n").await;
    let mut stream = connect(&node).await;
    let (mut reader, mut writer) = stream.split();
    let head = b"POST /heartbeat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n";
    let started = Instant::now();
    let trickle = async {
        for byte in head {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let mut received = Vec::new();
    let answer = reader.read_to_end(&mut received);
    tokio::select! {
        _ = trickle => panic!("the whole head trickled in without the node cutting it off"),
        read = tokio::time::timeout(BOUND, answer) => { read.expect("cut off in time").ok(); }
    }
    let response = String::from_utf8_lossy(&received);
    assert_eq!(status_of(&response), "408", "{response}");
    // The configured timeout, not actix's default of 5 s, nor the end of the head.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off after {:?}",
        started.elapsed()
    );
    drop(stream);
    assert!(exchange(&node, HEALTH).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_and_its_connection_is_closed() {
    const STALLED: usize = 1_100;
    let node = TestNode::spawn("[server]\nbody_timeout = \"1s\"\n").await;
    let u = user();
    let mut stalled = Vec::new();
    // As many as exhausted a node's 1,024 file descriptors before bodies had a deadline.
    for _ in 0..STALLED {
        let mut stream = connect(&node).await;
        let head = format!(
            "POST /heartbeat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"userId\":\"{u}\","
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    // While they stall, others are served.
    assert!(exchange(&node, HEALTH).await.starts_with("HTTP/1.1 200"));
    for stream in &mut stalled {
        let response = read_to_close(stream).await;
        assert_eq!(status_of(&response), "408", "{response}");
        assert!(
            response.contains("did not arrive in time"),
            "says why: {response}"
        );
    }
    assert_eq!(
        node.metric("playstate_http_body_timeouts_total").await,
        STALLED as f64
    );
    // Nothing was taken: the half-sent heartbeats changed nothing.
    let streams = node.get_json(&format!("/user/{u}/streams"), &u).await;
    assert_eq!(streams, serde_json::json!({ "streams": [] }), "{streams}");
    // The stalled connections are gone, not just answered.
    eventually("the stalled connections to close", || async {
        (node.metric("playstate_http_connections_open").await <= 2.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_slow_but_steady_body_within_the_timeout_is_served() {
    let node = TestNode::spawn("[server]\nbody_timeout = \"3s\"\n").await;
    let u = user();
    let body = format!(r#"{{"userId":"{u}","streamId":"m","sessionId":"s"}}"#);
    let mut stream = connect(&node).await;
    let head = format!(
        "POST /heartbeat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(status_of(&response), "200", "{response}");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_and_the_served_ones_keep_working() {
    const CAP: usize = 8;
    let node = TestNode::spawn(&format!("[server]\nmax_connections = {CAP}\n")).await;
    // The test client may hold a pooled connection of its own, so count what is admitted.
    let mut served = Vec::new();
    let mut refused = 0;
    while refused == 0 {
        assert!(
            served.len() <= CAP,
            "more than {CAP} connections were served"
        );
        let mut stream = connect(&node).await;
        stream.write_all(HEALTH).await.unwrap();
        let response = read_response(&mut stream).await;
        match status_of(&response) {
            "200" => served.push(stream),
            "503" => {
                assert!(response.contains("retry-after: 1"), "{response}");
                assert!(response.contains("max_connections"), "says why: {response}");
                refused += 1;
                // Closed at once, not kept for more requests.
                assert_eq!(read_to_close(&mut stream).await, "");
            }
            other => panic!("unexpected status {other}: {response}"),
        }
    }
    assert!(served.len() >= CAP - 1, "only {} served", served.len());
    // A flood of further connections is refused while the served ones are open...
    for _ in 0..20 {
        let response = exchange(&node, HEALTH).await;
        assert_eq!(status_of(&response), "503", "{response}");
    }
    // ...and every served connection still works.
    for stream in &mut served {
        stream.write_all(HEALTH).await.unwrap();
        let response = read_response(stream).await;
        assert_eq!(status_of(&response), "200", "{response}");
    }
    drop(served);
    eventually("room for a new connection", || async {
        let response = exchange(
            &node,
            b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        (status_of(&response) == "200").then_some(())
    })
    .await;
    assert!(
        node.metric("playstate_http_connections_refused_total")
            .await
            >= 21.0
    );
    // Shedding load is no fault of the node's: nothing for an alert on ERROR lines.
    assert!(
        !node.logs().contains(r#""level":"ERROR""#),
        "the refusals were logged as errors"
    );
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let node = TestNode::spawn("").await;
    // Too many header fields.
    let mut many = String::from("GET /health HTTP/1.1\r\nhost: x\r\n");
    for i in 0..120 {
        many.push_str(&format!("x-field-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let response = exchange(&node, many.as_bytes()).await;
    assert_eq!(status_of(&response), "431", "{response}");
    // One field larger than a head may be (sent without its end, so nothing is left unread).
    let mut large = String::from("GET /health HTTP/1.1\r\nhost: x\r\nx-large: ");
    large.push_str(&"a".repeat(140 * 1024));
    let response = exchange(&node, large.as_bytes()).await;
    assert_eq!(status_of(&response), "431", "{response}");
    assert!(exchange(&node, HEALTH).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn unknown_methods_on_known_routes_get_405_with_allow() {
    let node = TestNode::spawn("").await;
    let asset = uuid::Uuid::new_v4();
    let token = unsigned_token(&user());
    let cases: [(&str, String, &[&str]); 4] = [
        (
            "PATCH",
            format!("/v1/progress/{asset}"),
            &["GET", "PUT", "DELETE"],
        ),
        ("POST", "/v1/watchlist".to_owned(), &["GET"]),
        ("GET", "/heartbeat".to_owned(), &["POST"]),
        (
            "BREW",
            "/video-streams/subscription".to_owned(),
            &["POST", "DELETE"],
        ),
    ];
    for (method, path, allowed) in cases {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let response = exchange(&node, request.as_bytes()).await;
        assert_eq!(status_of(&response), "405", "{method} {path}: {response}");
        let allow = response
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("allow:")
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header in {response}"));
        for expected in allowed {
            assert!(
                allow.to_ascii_uppercase().contains(expected),
                "{method} {path}: Allow {allow} lacks {expected}"
            );
        }
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let node = TestNode::spawn("").await;
    let u = user();
    let body = format!(r#"{{"userId":"{u}","streamId":"film-1","sessionId":"s1"}}"#);
    let pipelined = format!(
        "POST /heartbeat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n{body}\
         GET /user/{u}/streams HTTP/1.1\r\nhost: x\r\n\r\n\
         GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n\
         GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        len = body.len()
    );
    let responses = exchange(&node, pipelined.as_bytes()).await;
    let statuses: Vec<&str> = responses
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &responses[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "404", "200"], "{responses}");
    // The second saw the first's slot.
    assert!(
        responses.contains(r#"{"streams":["film-1"]}"#),
        "{responses}"
    );
}

#[tokio::test]
async fn http_1_0_clients_are_served() {
    let node = TestNode::spawn("").await;
    let response = exchange(&node, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.ends_with(r#"{"status":"OK"}"#), "{response}");
    let u = user();
    let body = format!(r#"{{"userId":"{u}","streamId":"m","sessionId":"s"}}"#);
    let request = format!(
        "POST /heartbeat HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = exchange(&node, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    let streams = node.get_json(&format!("/user/{u}/streams"), &u).await;
    assert_eq!(
        streams["streams"].as_array().map(Vec::len),
        Some(1),
        "{streams}"
    );
}
