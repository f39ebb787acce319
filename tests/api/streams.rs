//! Stream slots through every contract (CONTRACTS.md sections 2–5): every row, leases,
//! races, plans and cross-contract counting.

use reqwest::Method;
use serde_json::{Value, json};

use super::helpers::{TestNode, advance_clock, raw, sessions, unsigned_token, user};

const MANUAL_CLOCK: &str = "[dev]\nmanual_clock = true\n";

async fn heartbeat_v1(
    node: &TestNode,
    user: &str,
    session: &str,
    stream: &str,
) -> reqwest::Response {
    node.as_user(Method::PUT, &format!("/v1/streams/{session}"), user)
        .json(&json!({ "streamId": stream }))
        .send()
        .await
        .unwrap()
}

async fn streamy(node: &TestNode, method: Method, body: Value) -> reqwest::Response {
    node.client
        .request(method, node.url("/video-streams/subscription"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn heartbeat(node: &TestNode, body: Value) -> reqwest::Response {
    node.client
        .post(node.url("/heartbeat"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn watch(node: &TestNode, user: &str, video: &str) -> reqwest::Response {
    node.client
        .post(node.url(&format!("/user/{user}/stream")))
        .json(&json!({ "video_id": video }))
        .send()
        .await
        .unwrap()
}

async fn expect(response: reqwest::Response, status: u16, content_type: &str, body: &str) {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["content-type"], content_type);
    assert_eq!(response.text().await.unwrap(), body);
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

#[tokio::test]
async fn v1_streams_rows_of_the_contract() {
    let node = TestNode::spawn(MANUAL_CLOCK).await;
    let u = user();
    for (i, session) in ["s1", "s2", "s3"].into_iter().enumerate() {
        let taken = heartbeat_v1(&node, &u, session, "movie").await;
        assert_eq!(taken.status(), 200);
        let body: Value = taken.json().await.unwrap();
        assert_eq!(body["sessionId"], session);
        assert_eq!(body["streamId"], "movie");
        assert_eq!(body["activeStreams"], i + 1);
        assert_eq!(body["limit"], 3);
        assert!(
            body["leaseExpiresAt"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
    let refused = heartbeat_v1(&node, &u, "s4", "movie").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["limit"], 3);
    let listed: Vec<&str> = problem["activeStreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["s1", "s2", "s3"]);

    // Renewing a held slot at the limit always works.
    let renewed = heartbeat_v1(&node, &u, "s2", "other-movie").await;
    assert_eq!(renewed.status(), 200);
    assert_eq!(renewed.json::<Value>().await.unwrap()["activeStreams"], 3);

    let slots: Value = node.get_json("/v1/streams", &u).await;
    assert_eq!(slots.as_array().unwrap().len(), 3);
    assert_eq!(slots[1]["streamId"], "other-movie");
    assert_eq!(slots[1]["origin"], "v1");

    for _ in 0..2 {
        let ended = node
            .as_user(Method::DELETE, "/v1/streams/s1", &u)
            .send()
            .await
            .unwrap();
        assert_eq!(ended.status(), 204);
        assert_eq!(ended.text().await.unwrap(), "");
    }
    assert_eq!(sessions(&node, &u).await, ["s2", "s3"]);
    assert_eq!(heartbeat_v1(&node, &u, "s4", "movie").await.status(), 200);
}

#[tokio::test]
async fn streamy_rows_of_the_contract() {
    let node = TestNode::spawn("").await;
    expect(node.get("/health").await, 200, JSON, r#"{"status":"OK"}"#).await;
    let ok = streamy(
        &node,
        Method::POST,
        json!({ "userId": "123", "videoStreamId": "234" }),
    )
    .await;
    expect(
        ok,
        200,
        JSON,
        r#"{"status":200,"data":{"userId":"123","videoStreamId":"234"}}"#,
    )
    .await;
    for video in ["235", "236"] {
        let ok = streamy(
            &node,
            Method::POST,
            json!({ "userId": "123", "videoStreamId": video }),
        )
        .await;
        assert_eq!(ok.status(), 200);
    }
    let full = streamy(
        &node,
        Method::POST,
        json!({ "userId": "123", "videoStreamId": "237" }),
    )
    .await;
    expect(
        full,
        429,
        JSON,
        r#"{"status":429,"error":"You've reached the maximum number of concurrent video streams"}"#,
    )
    .await;
    // The same subscription again at the limit is a renewal.
    let again = streamy(
        &node,
        Method::POST,
        json!({ "userId": "123", "videoStreamId": "234" }),
    )
    .await;
    assert_eq!(again.status(), 200);

    let bad: &[(Value, &str)] = &[
        (
            json!({ "videoStreamId": "1" }),
            r#"{"status":400,"error":"\"userId\" is required"}"#,
        ),
        (
            json!({ "userId": {}, "videoStreamId": "1" }),
            r#"{"status":400,"error":"\"userId\" must be a string"}"#,
        ),
        (
            json!({ "userId": 1, "videoStreamId": "1" }),
            r#"{"status":400,"error":"\"userId\" must be a string"}"#,
        ),
        (
            json!({ "userId": "1" }),
            r#"{"status":400,"error":"\"videoStreamId\" is required"}"#,
        ),
        (
            json!({ "userId": "1", "videoStreamId": 5 }),
            r#"{"status":400,"error":"\"videoStreamId\" must be a string"}"#,
        ),
        (
            json!({ "userId": "x".repeat(37), "videoStreamId": "1" }),
            r#"{"status":400,"error":"\"userId\" length must be less than or equal to 36 characters long"}"#,
        ),
        (
            json!({ "userId": "1", "videoStreamId": "v".repeat(37) }),
            r#"{"status":400,"error":"\"videoStreamId\" length must be less than or equal to 36 characters long"}"#,
        ),
    ];
    for method in [Method::POST, Method::DELETE] {
        for (body, expected) in bad {
            expect(
                streamy(&node, method.clone(), body.clone()).await,
                400,
                JSON,
                expected,
            )
            .await;
        }
    }
    let exactly_36 = streamy(
        &node,
        Method::POST,
        json!({ "userId": "u".repeat(36), "videoStreamId": "1" }),
    )
    .await;
    assert_eq!(exactly_36.status(), 200);

    for _ in 0..2 {
        let gone = streamy(
            &node,
            Method::DELETE,
            json!({ "userId": "123", "videoStreamId": "234" }),
        )
        .await;
        assert_eq!(gone.status(), 204);
        assert_eq!(gone.text().await.unwrap(), "");
    }
    let never = streamy(
        &node,
        Method::DELETE,
        json!({ "userId": "nobody", "videoStreamId": "1" }),
    )
    .await;
    assert_eq!(never.status(), 204);
    let freed = streamy(
        &node,
        Method::POST,
        json!({ "userId": "123", "videoStreamId": "237" }),
    )
    .await;
    assert_eq!(freed.status(), 200);
}

#[tokio::test]
async fn heartbeat_rows_of_the_contract() {
    let node = TestNode::spawn("").await;
    let pair = |stream: &str, session: &str| json!({ "userId": "hb-user", "streamId": stream, "sessionId": session });
    expect(heartbeat(&node, pair("a", "1")).await, 200, TEXT, "OK").await;
    for (body, message) in [
        (
            json!({ "streamId": "a", "sessionId": "1" }),
            "userId is missing",
        ),
        (json!({}), "userId is missing"),
        (
            json!({ "userId": "u", "sessionId": "1" }),
            "streamId is missing",
        ),
        (
            json!({ "userId": "u", "streamId": "a" }),
            "sessionId is missing",
        ),
        (
            json!({ "userId": "", "streamId": "a", "sessionId": "1" }),
            "userId is missing",
        ),
    ] {
        expect(heartbeat(&node, body).await, 400, TEXT, message).await;
    }
    // Two pairs differing only in the stream are two slots.
    expect(heartbeat(&node, pair("b", "1")).await, 200, TEXT, "OK").await;
    expect(heartbeat(&node, pair("a", "2")).await, 200, TEXT, "OK").await;
    expect(
        heartbeat(&node, pair("c", "3")).await,
        400,
        TEXT,
        "user hb-user has reached concurrency limit 3",
    )
    .await;
    // The same pair heart-beating again at the limit is allowed.
    expect(heartbeat(&node, pair("b", "1")).await, 200, TEXT, "OK").await;

    let five = TestNode::spawn("[streams]\nlimit = 5\n").await;
    for session in 0..5 {
        let body = json!({ "userId": "u5", "streamId": "s", "sessionId": session.to_string() });
        assert_eq!(heartbeat(&five, body).await.status(), 200);
    }
    let sixth = heartbeat(
        &five,
        json!({ "userId": "u5", "streamId": "s", "sessionId": "6" }),
    )
    .await;
    expect(sixth, 400, TEXT, "user u5 has reached concurrency limit 5").await;
}

#[tokio::test]
async fn video_streams_rows_of_the_contract() {
    let node = TestNode::spawn("").await;
    expect(
        watch(&node, "vs", "1").await,
        200,
        JSON,
        r#"{"video_id":"1"}"#,
    )
    .await;
    for video in ["2", "3"] {
        assert_eq!(watch(&node, "vs", video).await.status(), 200);
    }
    // Requesting the same video again is fine; a fourth is not.
    assert_eq!(watch(&node, "vs", "2").await.status(), 200);
    expect(
        watch(&node, "vs", "4").await,
        403,
        JSON,
        r#"{"message":"User watching too many video streams."}"#,
    )
    .await;
    let listed = node.get("/user/vs/streams").await;
    expect(listed, 200, JSON, r#"{"streams":["1","2","3"]}"#).await;
    let nobody = node.get("/user/nobody/streams").await;
    expect(nobody, 200, JSON, r#"{"streams":[]}"#).await;
    let missing = node
        .client
        .post(node.url("/user/vs/stream"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect(missing, 400, JSON, r#"{"message":"video_id is required"}"#).await;
    let number = node
        .client
        .post(node.url("/user/vs/stream"))
        .json(&json!({ "video_id": 1 }))
        .send()
        .await
        .unwrap();
    expect(
        number,
        400,
        JSON,
        r#"{"message":"video_id must be a string"}"#,
    )
    .await;
}

#[tokio::test]
async fn every_contract_counts_against_the_same_limit() {
    let node = TestNode::spawn("").await;
    let u = "cross-user";
    for video in ["v1", "v2"] {
        let ok = streamy(
            &node,
            Method::POST,
            json!({ "userId": u, "videoStreamId": video }),
        )
        .await;
        assert_eq!(ok.status(), 200);
    }
    let hb = heartbeat(
        &node,
        json!({ "userId": u, "streamId": "live", "sessionId": "tv" }),
    )
    .await;
    assert_eq!(hb.status(), 200);
    assert_eq!(watch(&node, u, "film").await.status(), 403);
    assert_eq!(heartbeat_v1(&node, u, "phone", "film").await.status(), 429);
    let listed: Value = node
        .get(&format!("/user/{u}/streams"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!({ "streams": ["v1", "v2", "live"] }));
    let slots: Value = node.get_json("/v1/streams", u).await;
    let origins: Vec<&str> = slots
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["origin"].as_str().unwrap())
        .collect();
    assert_eq!(origins, ["streamy", "streamy", "heartbeat"]);

    let ended = streamy(
        &node,
        Method::DELETE,
        json!({ "userId": u, "videoStreamId": "v1" }),
    )
    .await;
    assert_eq!(ended.status(), 204);
    assert_eq!(watch(&node, u, "film").await.status(), 200);
}

#[tokio::test]
async fn fifty_racing_sessions_get_exactly_three_slots() {
    let node = TestNode::spawn("").await;
    let u = user();
    let racers = (0..50).map(|i| {
        let request = node
            .as_user(Method::PUT, &format!("/v1/streams/race-{i}"), &u)
            .json(&json!({ "streamId": "film" }));
        async move { (i, request.send().await.unwrap().status().as_u16()) }
    });
    let results = futures_util::future::join_all(racers).await;
    let mut winners: Vec<String> = results
        .iter()
        .filter(|(_, status)| *status == 200)
        .map(|(i, _)| format!("race-{i}"))
        .collect();
    let refused = results.iter().filter(|(_, status)| *status == 429).count();
    assert_eq!((winners.len(), refused), (3, 47), "{results:?}");
    let mut held = sessions(&node, &u).await;
    winners.sort();
    held.sort();
    assert_eq!(held, winners);
}

#[tokio::test]
async fn a_slot_lives_for_two_intervals_after_its_last_heartbeat() {
    let node = TestNode::spawn(MANUAL_CLOCK).await;
    let u = user();
    for session in ["a", "b", "c"] {
        assert_eq!(heartbeat_v1(&node, &u, session, "m").await.status(), 200);
    }
    advance_clock(&node, 39_999).await;
    assert_eq!(sessions(&node, &u).await, ["a", "b", "c"]);
    assert_eq!(heartbeat_v1(&node, &u, "d", "m").await.status(), 429);
    advance_clock(&node, 1).await;
    assert_eq!(sessions(&node, &u).await, Vec::<String>::new());
    assert_eq!(heartbeat_v1(&node, &u, "d", "m").await.status(), 200);
}

#[tokio::test]
async fn a_renewed_slot_outlives_its_first_lease() {
    let node = TestNode::spawn(MANUAL_CLOCK).await;
    let u = user();
    assert_eq!(heartbeat_v1(&node, &u, "a", "m").await.status(), 200);
    advance_clock(&node, 30_000).await;
    assert_eq!(heartbeat_v1(&node, &u, "a", "m").await.status(), 200);
    advance_clock(&node, 30_000).await;
    assert_eq!(sessions(&node, &u).await, ["a"]);
    advance_clock(&node, 10_000).await;
    assert_eq!(sessions(&node, &u).await, Vec::<String>::new());
}

#[tokio::test]
async fn heartbeat_pairs_expire_and_subscriptions_get_the_long_lease() {
    let node = TestNode::spawn(MANUAL_CLOCK).await;
    let u = "lease-user";
    assert_eq!(
        heartbeat(
            &node,
            json!({ "userId": u, "streamId": "s", "sessionId": "1" })
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        streamy(
            &node,
            Method::POST,
            json!({ "userId": u, "videoStreamId": "sub" })
        )
        .await
        .status(),
        200
    );
    assert_eq!(watch(&node, u, "video").await.status(), 200);
    advance_clock(&node, 40_000).await;
    let listed: Value = node
        .get(&format!("/user/{u}/streams"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!({ "streams": ["sub", "video"] }));
    advance_clock(&node, 4 * 3_600_000 - 40_000 - 1).await;
    assert_eq!(sessions(&node, u).await.len(), 2);
    advance_clock(&node, 1).await;
    assert_eq!(sessions(&node, u).await.len(), 0);
}

#[tokio::test]
async fn plans_choose_the_limit() {
    let node = TestNode::spawn("[streams.plans]\nfamily = 5\nsolo = 1\n").await;
    let token = |user: &str, plan: &str| {
        use base64::Engine;
        let claims = json!({ "sub": user, "plan": plan }).to_string();
        format!(
            "e30.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims)
        )
    };
    let put = |user: &str, plan: &str, session: usize| {
        node.client
            .put(node.url(&format!("/v1/streams/s{session}")))
            .header("authorization", format!("Bearer {}", token(user, plan)))
            .json(&json!({ "streamId": "m" }))
            .send()
    };
    for session in 0..5 {
        assert_eq!(put("fam", "family", session).await.unwrap().status(), 200);
    }
    let sixth = put("fam", "family", 5).await.unwrap();
    assert_eq!(sixth.status(), 429);
    assert_eq!(sixth.json::<Value>().await.unwrap()["limit"], 5);
    assert_eq!(put("solo", "solo", 0).await.unwrap().status(), 200);
    assert_eq!(put("solo", "solo", 1).await.unwrap().status(), 429);
    for session in 0..3 {
        assert_eq!(put("odd", "platinum", session).await.unwrap().status(), 200);
    }
    assert_eq!(put("odd", "platinum", 3).await.unwrap().status(), 429);

    // The plan header is ignored unless trusted...
    let header = |node: &TestNode, session: usize| {
        node.client
            .post(node.url("/heartbeat"))
            .header("x-playstate-plan", "family")
            .json(&json!({ "userId": "hdr", "streamId": "s", "sessionId": session.to_string() }))
            .send()
    };
    for session in 0..3 {
        assert_eq!(header(&node, session).await.unwrap().status(), 200);
    }
    assert_eq!(header(&node, 3).await.unwrap().status(), 400);
    // ...and honoured on compat routes when it is.
    let trusted =
        TestNode::spawn("[streams]\ntrust_plan_header = true\n[streams.plans]\nfamily = 5\n").await;
    for session in 0..5 {
        assert_eq!(header(&trusted, session).await.unwrap().status(), 200);
    }
    assert_eq!(
        header(&trusted, 5).await.unwrap().text().await.unwrap(),
        "user hdr has reached concurrency limit 5"
    );
    let unsigned = unsigned_token("x");
    assert!(!unsigned.is_empty());
}

#[tokio::test]
async fn bad_stream_input_gets_a_4xx_and_changes_nothing() {
    let node = TestNode::spawn("[server]\nmax_body_bytes = 1024\n").await;
    let u = user();
    assert_eq!(heartbeat_v1(&node, &u, "held", "m").await.status(), 200);
    let long = "x".repeat(129);
    let big: &'static str =
        Box::leak(format!(r#"{{"streamId":"{}"}}"#, "y".repeat(2048)).into_boxed_str());
    let put = |path: String, body: &'static str| {
        node.client
            .put(node.url(&path))
            .header("authorization", format!("Bearer {}", unsigned_token(&u)))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(String, &'static str, u16)> = vec![
        ("/v1/streams/s".into(), "{", 400),
        ("/v1/streams/s".into(), "[]", 400),
        ("/v1/streams/s".into(), r#""text""#, 400),
        ("/v1/streams/s".into(), "", 400),
        ("/v1/streams/s".into(), r#"{"streamId":1}"#, 400),
        ("/v1/streams/s".into(), r#"{"streamId":null}"#, 400),
        ("/v1/streams/s".into(), r#"{"streamId":["a"]}"#, 400),
        ("/v1/streams/s".into(), r#"{"streamId":"a\u0001b"}"#, 400),
        (format!("/v1/streams/{long}"), r#"{"streamId":"m"}"#, 400),
        ("/v1/streams/s".into(), big, 413),
    ];
    for (path, body, status) in cases {
        let response = put(path.clone(), body).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "PUT {path} {body:.40}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let invalid_utf8 = node
        .client
        .put(node.url("/v1/streams/s"))
        .header("authorization", format!("Bearer {}", unsigned_token(&u)))
        .body(vec![b'{', b'"', 0xff, b'"', b':', b'1', b'}'])
        .send()
        .await
        .unwrap();
    assert_eq!(invalid_utf8.status(), 400);
    let exactly_128 = heartbeat_v1(&node, &u, &"s".repeat(128), "m").await;
    assert_eq!(exactly_128.status(), 200);
    assert_eq!(
        sessions(&node, &u).await.len(),
        2,
        "only the valid requests took slots"
    );

    for (path, body, status, text) in [
        ("/heartbeat", "{", 400, None),
        ("/heartbeat", big, 413, None),
        (
            "/heartbeat",
            r#"{"userId":1,"streamId":"a","sessionId":"b"}"#,
            400,
            Some("userId must be a string"),
        ),
        (
            "/video-streams/subscription",
            "[1]",
            400,
            Some(r#"{"status":400,"error":"\"value\" must be of type object"}"#),
        ),
        ("/video-streams/subscription", big, 413, None),
        ("/user/u/stream", "nope", 400, None),
    ] {
        let response = raw(&node, Method::POST, path, body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "POST {path} {body:.40}");
        if let Some(text) = text {
            assert_eq!(response.text().await.unwrap(), text);
        }
    }
    let long_user = node
        .client
        .post(node.url(&format!("/user/{long}/stream")))
        .json(&json!({ "video_id": "1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(long_user.status(), 400);

    for auth in [
        None,
        Some("Bearer"),
        Some("Bearer abc"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer e30.e30.sig"),
    ] {
        let mut request = node.client.get(node.url("/v1/streams"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let unknown = node.get("/no/such/route").await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(sessions(&node, &u).await.len(), 2);
    let server_errors: Vec<String> = node
        .metrics()
        .await
        .into_keys()
        .filter(|series| {
            series.starts_with("playstate_http_requests_total") && series.contains(r#"status="5"#)
        })
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
    assert!(
        node.metrics()
            .await
            .keys()
            .any(|s| s.contains(r#"status="413""#)),
        "requests are counted by status"
    );
}
