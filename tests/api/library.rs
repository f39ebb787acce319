//! Progress and watchlist (CONTRACTS.md section 1) on the embedded store, with the file
//! event sink: every row, the catalog, token verification, and write-behind bounds.

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::helpers::{TestNode, asset, eventually, unsigned_token, user};

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

#[tokio::test]
async fn progress_rows_of_the_contract() {
    let node = TestNode::spawn("").await;
    let (u, a) = (user(), asset());
    let progress = |m: Method, p: &str| node.as_user(m, p, &u);

    let empty = progress(Method::GET, "/v1/progress").send().await.unwrap();
    assert_eq!(empty.status(), 200);
    assert_eq!(json_of(empty).await, json!([]));

    let missing = progress(Method::GET, &format!("/v1/progress/{a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );

    let put = progress(Method::PUT, &format!("/v1/progress/{a}"))
        .json(&json!({ "progress": 1135 }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(json_of(put).await, json!({ "asset": a, "progress": 1135 }));

    let one = progress(Method::GET, &format!("/v1/progress/{a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(json_of(one).await, json!({ "asset": a, "progress": 1135 }));

    // Last writer wins, and the asset id is case-insensitive.
    let upper = a.to_uppercase();
    let again = progress(Method::PUT, &format!("/v1/progress/{upper}"))
        .json(&json!({ "progress": 7 }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let all = progress(Method::GET, "/v1/progress").send().await.unwrap();
    assert_eq!(json_of(all).await, json!([{ "asset": a, "progress": 7 }]));

    let deleted = progress(Method::DELETE, &format!("/v1/progress/{a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let gone = progress(Method::GET, &format!("/v1/progress/{a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let deleted_again = progress(Method::DELETE, &format!("/v1/progress/{a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted_again.status(), 200);
}

#[tokio::test]
async fn bad_progress_input_is_refused_and_changes_nothing() {
    let node = TestNode::spawn("[progress]\nmax_seconds = 1000\n").await;
    let (u, a) = (user(), asset());
    let put = |target: String, body: &'static str| {
        node.as_user(Method::PUT, &target, &u)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let target = format!("/v1/progress/{a}");
    let cases: &[(&str, &'static str, u16)] = &[
        ("/v1/progress/not-a-uuid", r#"{"progress":1}"#, 400),
        ("/v1/progress/12345", r#"{"progress":1}"#, 400),
        (&target, r#"{"progress":"10"}"#, 400),
        (&target, r#"{"progress":1.5}"#, 400),
        (&target, r#"{"progress":null}"#, 400),
        (&target, r#"{}"#, 400),
        (&target, "", 400),
        (&target, "[1]", 400),
        (&target, "{", 400),
        (&target, "\u{1}", 400),
        (&target, r#"{"progress":-1}"#, 416),
        (&target, r#"{"progress":1001}"#, 416),
        // An integer, as JSON Schema and the OpenAPI document count, beyond any maximum.
        (&target, r#"{"progress":99999999999999999999}"#, 416),
        (&target, r#"{"progress":1.5}"#, 400),
    ];
    for (target, body, status) in cases {
        let response = put(target.to_string(), body).await.unwrap();
        assert_eq!(response.status().as_u16(), *status, "PUT {target} {body}");
        let problem = json_of(response).await;
        assert_eq!(problem["status"], *status);
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let boundary = put(target.clone(), r#"{"progress":1000}"#).await.unwrap();
    assert_eq!(boundary.status(), 200);
    let all = node
        .as_user(Method::GET, "/v1/progress", &u)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(all).await,
        json!([{ "asset": a, "progress": 1000 }])
    );
}

#[tokio::test]
async fn watchlist_rows_of_the_contract() {
    let node = TestNode::spawn("").await;
    let (u, first, second) = (user(), asset(), asset());
    let call = |m: Method, p: String| node.as_user(m, &p, &u).send();

    let empty = call(Method::GET, "/v1/watchlist".into()).await.unwrap();
    assert_eq!(json_of(empty).await, json!([]));
    for a in [&first, &first, &second] {
        let put = call(Method::PUT, format!("/v1/watchlist/{a}"))
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
    }
    let list = json_of(call(Method::GET, "/v1/watchlist".into()).await.unwrap()).await;
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["asset"], first.as_str());
    assert_eq!(items[1]["asset"], second.as_str());
    for item in items {
        let added = item["addedAt"].as_str().unwrap();
        assert!(time_is_rfc3339(added), "{added}");
    }
    for _ in 0..2 {
        let removed = call(Method::DELETE, format!("/v1/watchlist/{first}"))
            .await
            .unwrap();
        assert_eq!(removed.status(), 200);
    }
    let list = json_of(call(Method::GET, "/v1/watchlist".into()).await.unwrap()).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let bad = call(Method::PUT, "/v1/watchlist/xyz".into()).await.unwrap();
    assert_eq!(bad.status(), 400);
}

fn time_is_rfc3339(text: &str) -> bool {
    text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn library_routes_need_a_bearer_token() {
    let node = TestNode::spawn("").await;
    let a = asset();
    for (m, p) in [
        (Method::GET, "/v1/progress".to_string()),
        (Method::GET, format!("/v1/progress/{a}")),
        (Method::PUT, format!("/v1/progress/{a}")),
        (Method::DELETE, format!("/v1/progress/{a}")),
        (Method::GET, "/v1/watchlist".to_string()),
        (Method::PUT, format!("/v1/watchlist/{a}")),
        (Method::DELETE, format!("/v1/watchlist/{a}")),
    ] {
        let none = node
            .client
            .request(m.clone(), node.url(&p))
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), 401, "{m} {p} without a token");
        let garbage = node
            .client
            .request(m.clone(), node.url(&p))
            .header("authorization", "Bearer not.a-jwt")
            .send()
            .await
            .unwrap();
        assert_eq!(garbage.status(), 401, "{m} {p} with garbage");
    }
}

#[tokio::test]
async fn verified_tokens_when_a_secret_is_configured() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let node = TestNode::spawn("[auth]\njwt_hs256_secret = \"s3cret\"\n").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |secret: &str, exp: u64| {
        encode(
            &Header::default(),
            &json!({ "sub": "verified-user", "exp": exp }),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let get = |token: String| {
        node.client
            .get(node.url("/v1/progress"))
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    assert_eq!(get(sign("s3cret", now + 600)).await.unwrap().status(), 200);
    assert_eq!(get(sign("wrong", now + 600)).await.unwrap().status(), 401);
    assert_eq!(get(sign("s3cret", now - 600)).await.unwrap().status(), 401);
    assert_eq!(
        get(unsigned_token("verified-user")).await.unwrap().status(),
        401
    );
}

#[tokio::test]
async fn an_http_catalog_validates_assets_and_durations() {
    let catalog = MockServer::start().await;
    let (known, short, unknown) = (asset(), asset(), asset());
    Mock::given(method("GET"))
        .and(path(format!("/assets/{known}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "title": "x" })))
        .mount(&catalog)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/assets/{short}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "durationSeconds": 100 })))
        // Cached: asked once however often the asset is used.
        .expect(1)
        .mount(&catalog)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/assets/{unknown}")))
        .respond_with(ResponseTemplate::new(404))
        .mount(&catalog)
        .await;
    let node = TestNode::spawn(&format!(
        "[catalog]\nkind = \"http\"\nbase_url = \"{}\"\n",
        catalog.uri()
    ))
    .await;
    let u = user();
    let put = |a: &str, seconds: i64| {
        node.as_user(Method::PUT, &format!("/v1/progress/{a}"), &u)
            .json(&json!({ "progress": seconds }))
            .send()
    };
    assert_eq!(put(&known, 5000).await.unwrap().status(), 200);
    assert_eq!(put(&short, 100).await.unwrap().status(), 200);
    assert_eq!(put(&short, 101).await.unwrap().status(), 416);
    assert_eq!(put(&unknown, 1).await.unwrap().status(), 404);
    let watch = |m: Method, a: &str| node.as_user(m, &format!("/v1/watchlist/{a}"), &u).send();
    assert_eq!(watch(Method::PUT, &unknown).await.unwrap().status(), 404);
    assert_eq!(watch(Method::PUT, &known).await.unwrap().status(), 200);
    // DELETEs never check the catalog: they only make sure something is not there.
    let never_asked = asset();
    assert_eq!(
        watch(Method::DELETE, &never_asked).await.unwrap().status(),
        200
    );
    let cleared = node
        .as_user(Method::DELETE, &format!("/v1/progress/{never_asked}"), &u)
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 200);
    let progress = node.get_json("/v1/progress", &u).await;
    assert_eq!(progress.as_array().unwrap().len(), 2, "{progress}");
    let asked: Vec<String> = catalog
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert!(!asked.iter().any(|p| p.contains(&never_asked)), "{asked:?}");
}

#[tokio::test]
async fn too_much_unflushed_progress_is_refused_not_dropped() {
    let node =
        TestNode::spawn("[progress]\nmax_dirty_entries = 2\nflush_interval = \"1h\"\n").await;
    let u = user();
    let (a, b, c) = (asset(), asset(), asset());
    let put = |asset: &str, s: u32| {
        node.as_user(Method::PUT, &format!("/v1/progress/{asset}"), &u)
            .json(&json!({ "progress": s }))
            .send()
    };
    assert_eq!(put(&a, 1).await.unwrap().status(), 200);
    assert_eq!(put(&b, 1).await.unwrap().status(), 200);
    let refused = put(&c, 1).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    // Entries already dirty still take updates: the bound is on entries, not updates.
    assert_eq!(put(&a, 2).await.unwrap().status(), 200);
    let missing = node
        .as_user(Method::GET, &format!("/v1/progress/{c}"), &u)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(node.metric("playstate_progress_dirty_entries").await, 2.0);
    assert_eq!(node.metric("playstate_progress_refused_total").await, 1.0);
}

#[tokio::test]
async fn progress_and_watchlist_survive_a_graceful_restart_on_the_embedded_store() {
    // A flush interval far longer than the test: only the shutdown flush can store it.
    let node = TestNode::spawn("[progress]\nflush_interval = \"1h\"\n").await;
    let u = user();
    let assets: Vec<String> = (0..5).map(|_| asset()).collect();
    for (i, a) in assets.iter().enumerate() {
        let put = node
            .as_user(Method::PUT, &format!("/v1/progress/{a}"), &u)
            .json(&json!({ "progress": 100 + i }))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
        let watch = node
            .as_user(Method::PUT, &format!("/v1/watchlist/{a}"), &u)
            .send()
            .await
            .unwrap();
        assert_eq!(watch.status(), 200);
    }
    let node = node.restart().await;
    let progress = node.get_json("/v1/progress", &u).await;
    let mut expected: Vec<Value> = assets
        .iter()
        .enumerate()
        .map(|(i, a)| json!({ "asset": a, "progress": 100 + i }))
        .collect();
    expected.sort_by_key(|v| v["asset"].as_str().unwrap().to_owned());
    assert_eq!(progress, Value::Array(expected));
    let watchlist = node.get_json("/v1/watchlist", &u).await;
    assert_eq!(watchlist.as_array().unwrap().len(), 5);
    assert_eq!(node.metric("playstate_progress_lost_total").await, 0.0);
}

#[tokio::test]
async fn events_go_to_the_file_sink_by_default() {
    let node = TestNode::spawn("").await;
    let (u, a) = (user(), asset());
    let call = |m: Method| node.as_user(m, &format!("/v1/watchlist/{a}"), &u).send();
    for m in [Method::PUT, Method::PUT, Method::DELETE, Method::DELETE] {
        assert_eq!(call(m).await.unwrap().status(), 200);
    }
    let file = node.store_dir().join("events.jsonl");
    // Delivery is in order, so once the removal is there, so is anything before it.
    let events = eventually("the removal in the events file", || {
        let file = file.clone();
        async move {
            let text = std::fs::read_to_string(&file).ok()?;
            let events: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            events
                .iter()
                .any(|e| e["event"] == "removed-from-watchlist")
                .then_some(events)
        }
    })
    .await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["added-to-watchlist", "removed-from-watchlist"]);
    for event in &events {
        assert_eq!(event["assetId"], a.as_str());
        assert_eq!(event["userId"], u.as_str());
    }
    assert_ne!(events[0]["eventId"], events[1]["eventId"]);
}
