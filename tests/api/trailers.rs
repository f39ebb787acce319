//! Trailers (CONTRACTS.md section 6): onboarding from the new-content queue (SQS on moto)
//! through a fake content API and TMDB (wiremock), reads from memory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::aws::{AwsFixture, endpoint};
use super::helpers::{TestNode, eventually};

const IMDB: &str = "tt2543164";
const TMDB_ID: u64 = 329_865;

/// The fake content API and TMDB, on one server.
struct FakeUpstreams {
    server: MockServer,
}

impl FakeUpstreams {
    async fn start() -> FakeUpstreams {
        FakeUpstreams {
            server: MockServer::start().await,
        }
    }

    fn prefix(&self) -> String {
        format!("{}/pc-se/film/", self.server.uri())
    }

    fn content_url(&self, slug: &str) -> String {
        format!("{}{slug}", self.prefix())
    }

    async fn content(&self, slug: &str, imdb: Option<&str>) {
        let product = match imdb {
            Some(id) => json!({ "content": { "imdb": { "id": id } } }),
            None => json!({ "content": { "title": "no imdb here" } }),
        };
        let body = json!({ "_embedded": { "viaplay:blocks": [ { "_embedded": { "viaplay:product": product } } ] } });
        Mock::given(method("GET"))
            .and(path(format!("/pc-se/film/{slug}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&self.server)
            .await;
    }

    fn find(&self) -> wiremock::MockBuilder {
        Mock::given(method("GET"))
            .and(path(format!("/3/find/{IMDB}")))
            .and(query_param("external_source", "imdb_id"))
            .and(header("authorization", "Bearer test-token"))
    }

    async fn tmdb_match(&self) {
        self.find()
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "movie_results": [ { "id": TMDB_ID } ] })),
            )
            .mount(&self.server)
            .await;
    }

    async fn videos(&self, keys: &[&str]) {
        let mut results: Vec<Value> = keys
            .iter()
            .map(|k| json!({ "key": k, "site": "YouTube", "type": "Trailer" }))
            .collect();
        results.push(json!({ "key": "teaser", "site": "YouTube", "type": "Teaser" }));
        results.push(json!({ "key": "vimeo", "site": "Vimeo", "type": "Trailer" }));
        Mock::given(method("GET"))
            .and(path(format!("/3/movie/{TMDB_ID}/videos")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "id": TMDB_ID, "results": results })),
            )
            .mount(&self.server)
            .await;
    }

    async fn calls_to(&self, wanted: &str) -> usize {
        let requests = self.server.received_requests().await.unwrap_or_default();
        requests.iter().filter(|r| r.url.path() == wanted).count()
    }
}

fn node_config(aws: &AwsFixture, upstreams: &FakeUpstreams, extra: &str) -> String {
    format!(
        r#"
[trailers]
tmdb_token = "test-token"
tmdb_base_url = "{tmdb}"
content_url_prefix = "{prefix}"
poll_wait = "1s"
request_timeout = "2s"
[trailers.queue]
queue_name = "{queue}"
create_queue = true
[aws]
endpoint = "{endpoint}"
access_key_id = "test"
secret_access_key = "test"
[dev]
endpoints = true
{extra}
"#,
        tmdb = upstreams.server.uri(),
        prefix = upstreams.prefix(),
        queue = aws.queue,
        endpoint = aws.endpoint,
    )
}

fn links(keys: &[&str]) -> Value {
    json!(
        keys.iter()
            .map(|k| format!("https://www.youtube.com/watch?v={k}"))
            .collect::<Vec<_>>()
    )
}

async fn trailers_of(node: &TestNode, url: &str) -> reqwest::Response {
    node.client
        .get(node.url("/api/v1/trailer/"))
        .query(&[("url", url)])
        .send()
        .await
        .unwrap()
}

async fn wait_for_trailers(node: &TestNode, url: &str) -> Value {
    eventually(&format!("trailers of {url}"), || async {
        let response = trailers_of(node, url).await;
        if response.status() == 200 {
            response.json::<Value>().await.ok()
        } else {
            None
        }
    })
    .await
}

async fn publish(node: &TestNode, url: &str) -> reqwest::Response {
    node.client
        .post(node.url("/non-production/utils/publish"))
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn published_content_is_onboarded_and_served_from_memory() {
    let (aws, upstreams) = (
        AwsFixture::new(&endpoint()).await,
        FakeUpstreams::start().await,
    );
    upstreams.content("arrival-2016", Some(IMDB)).await;
    upstreams.content("arrival-directors-cut", Some(IMDB)).await;
    upstreams.tmdb_match().await;
    upstreams.videos(&["KEY1", "KEY2"]).await;
    let node = TestNode::spawn(&node_config(&aws, &upstreams, "")).await;

    let url = upstreams.content_url("arrival-2016");
    let published = publish(&node, &url).await;
    assert_eq!(published.status(), 200);
    let body: Value = published.json().await.unwrap();
    assert_eq!(body["message"], "Content published successfully.");
    assert!(body["messageId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(
        wait_for_trailers(&node, &url).await,
        links(&["KEY1", "KEY2"])
    );

    // The same without the trailing slash, and the native route.
    let bare = node
        .client
        .get(node.url("/api/v1/trailer"))
        .query(&[("url", &url)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        bare.json::<Value>().await.unwrap(),
        links(&["KEY1", "KEY2"])
    );
    let native: Value = node
        .client
        .get(node.url("/v1/trailers"))
        .query(&[("url", &url)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(native["url"], url.as_str());
    assert_eq!(native["trailers"], links(&["KEY1", "KEY2"]));
    assert!(
        native["updatedAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // A message put on the queue directly, as the content service does.
    let direct = upstreams.content_url("arrival-directors-cut");
    aws.sqs
        .send_message()
        .queue_url(aws.queue_url().await)
        .message_body(json!({ "url": direct }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        wait_for_trailers(&node, &direct).await,
        links(&["KEY1", "KEY2"])
    );
    let m = node.metrics().await;
    assert_eq!(
        m[r#"playstate_trailer_messages_total{outcome="onboarded"}"#],
        2.0
    );
    assert_eq!(m["playstate_trailer_cache_entries"], 2.0);
    assert!(m[r#"playstate_trailer_lookups_total{result="hit"}"#] >= 4.0);

    // Onboarded trailers are served again after a graceful restart.
    let node = node.restart().await;
    assert_eq!(
        wait_for_trailers(&node, &url).await,
        links(&["KEY1", "KEY2"])
    );
}

#[tokio::test]
async fn trailer_service_rows_of_the_contract() {
    let node = TestNode::spawn("[dev]\nendpoints = true\n").await;
    let get = |query: &'static str| {
        node.client
            .get(node.url(&format!("/api/v1/trailer/{query}")))
            .send()
    };
    let expect_text = |response: reqwest::Response, status: u16, text: &'static str| async move {
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; charset=utf-8"
        );
        assert_eq!(response.text().await.unwrap(), text);
    };
    expect_text(get("").await.unwrap(), 400, "Missing 'url' parameter").await;
    expect_text(get("?url=").await.unwrap(), 400, "Missing 'url' parameter").await;
    expect_text(
        get("?url=https://example.com/pc-se/film/x").await.unwrap(),
        400,
        "Invalid 'url' parameter",
    )
    .await;
    expect_text(
        get("?url=https://content.viaplay.se/pc-se/film/never-onboarded")
            .await
            .unwrap(),
        404,
        "No trailers found",
    )
    .await;
    let native = node
        .get("/v1/trailers?url=https://content.viaplay.se/pc-se/film/never-onboarded")
        .await;
    assert_eq!(native.status(), 404);
    assert_eq!(native.headers()["content-type"], "application/problem+json");

    let health = node.get("/api/v1/health").await;
    assert_eq!(health.status(), 200);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert!(
        health["timestamp"]
            .as_str()
            .is_some_and(|t| t.len() == 24 && t.ends_with('Z'))
    );

    let no_url = node
        .client
        .post(node.url("/non-production/utils/publish"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_url.status(), 400);
    assert_eq!(
        no_url.json::<Value>().await.unwrap(),
        json!({ "error": "URL must be provided in the request body." })
    );
    // Without a token the node still serves, and says why onboarding is off.
    assert!(node.logs().contains("trailer onboarding is off"));
    eventually("the node is ready", || async {
        (node.get("/ready").await.status() == 200).then_some(())
    })
    .await;

    let production = TestNode::spawn("").await;
    let hidden = production
        .client
        .post(production.url("/non-production/utils/publish"))
        .json(&json!({ "url": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);
}

#[tokio::test]
async fn tmdb_errors_are_retried_until_it_answers() {
    let (aws, upstreams) = (
        AwsFixture::new(&endpoint()).await,
        FakeUpstreams::start().await,
    );
    upstreams.content("flaky", Some(IMDB)).await;
    upstreams
        .find()
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&upstreams.server)
        .await;
    upstreams.tmdb_match().await;
    upstreams.videos(&["K"]).await;
    let node = TestNode::spawn(&node_config(&aws, &upstreams, "")).await;
    let url = upstreams.content_url("flaky");
    assert_eq!(publish(&node, &url).await.status(), 200);
    assert_eq!(wait_for_trailers(&node, &url).await, links(&["K"]));
    assert_eq!(upstreams.calls_to(&format!("/3/find/{IMDB}")).await, 3);
    let m = node.metrics().await;
    assert_eq!(m[r#"playstate_tmdb_requests_total{status="500"}"#], 2.0);
    // Two successful TMDB calls: the third find, and the videos.
    assert_eq!(m[r#"playstate_tmdb_requests_total{status="200"}"#], 2.0);
}

/// Answers 429 with `Retry-After: 1` once, then matches; records when it was called.
struct RateLimitedOnce {
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl Respond for RateLimitedOnce {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut calls = self.calls.lock().unwrap();
        calls.push(Instant::now());
        if calls.len() == 1 {
            ResponseTemplate::new(429).insert_header("retry-after", "1")
        } else {
            ResponseTemplate::new(200)
                .set_body_json(json!({ "movie_results": [ { "id": TMDB_ID } ] }))
        }
    }
}

#[tokio::test]
async fn tmdb_rate_limits_are_honoured() {
    let (aws, upstreams) = (
        AwsFixture::new(&endpoint()).await,
        FakeUpstreams::start().await,
    );
    upstreams.content("popular", Some(IMDB)).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    upstreams
        .find()
        .respond_with(RateLimitedOnce {
            calls: calls.clone(),
        })
        .mount(&upstreams.server)
        .await;
    upstreams.videos(&["K"]).await;
    let node = TestNode::spawn(&node_config(&aws, &upstreams, "")).await;
    let url = upstreams.content_url("popular");
    assert_eq!(publish(&node, &url).await.status(), 200);
    assert_eq!(wait_for_trailers(&node, &url).await, links(&["K"]));
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    // A lower bound only: the retry may come later on a busy machine, never sooner.
    assert!(
        calls[1] - calls[0] >= Duration::from_millis(950),
        "{:?}",
        calls[1] - calls[0]
    );
    assert_eq!(
        node.metric(r#"playstate_tmdb_requests_total{status="429"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn messages_that_can_never_succeed_are_dropped_and_counted() {
    let (aws, upstreams) = (
        AwsFixture::new(&endpoint()).await,
        FakeUpstreams::start().await,
    );
    upstreams.content("no-imdb", None).await;
    upstreams.content("good", Some(IMDB)).await;
    upstreams.tmdb_match().await;
    upstreams.videos(&["GOOD"]).await;
    let node = TestNode::spawn(&node_config(&aws, &upstreams, "")).await;
    let queue = aws.queue_url().await;
    for body in [
        "this is not json".to_owned(),
        json!({ "link": "no url field" }).to_string(),
        json!({ "url": "https://elsewhere.example/pc-se/film/x" }).to_string(),
        json!({ "url": upstreams.content_url("no-imdb") }).to_string(),
    ] {
        aws.sqs
            .send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let good = upstreams.content_url("good");
    assert_eq!(publish(&node, &good).await.status(), 200);
    assert_eq!(wait_for_trailers(&node, &good).await, links(&["GOOD"]));
    eventually("every bad message counted", || async {
        (node
            .metric(r#"playstate_trailer_messages_total{outcome="rejected"}"#)
            .await
            == 4.0)
            .then_some(())
    })
    .await;
    // Deleted, not left for redelivery: nothing visible or in flight on the queue. (A
    // message is counted, then deleted: polled, as the last delete may still be on its
    // way; one never deleted stays in flight, or comes back, and the wait times out.)
    eventually("every message deleted from the queue", || async {
        let attributes = aws
            .sqs
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        [
            aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
            aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .all(|name| attributes.get(name).map(String::as_str) == Some("0"))
        .then_some(())
    })
    .await;
    assert_eq!(
        node.metric(r#"playstate_trailer_messages_total{outcome="rejected"}"#)
            .await,
        4.0,
        "each bad message counted once"
    );
    assert_eq!(
        trailers_of(&node, &upstreams.content_url("no-imdb"))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn stale_entries_are_refreshed_from_tmdb() {
    let (aws, upstreams) = (
        AwsFixture::new(&endpoint()).await,
        FakeUpstreams::start().await,
    );
    upstreams.content("changing", Some(IMDB)).await;
    upstreams.tmdb_match().await;
    upstreams.videos(&["OLD"]).await;
    let config = node_config(&aws, &upstreams, "").replace(
        "[trailers]\ntmdb_token",
        "[trailers]\nrefresh_after = \"1s\"\ntmdb_token",
    );
    let node = TestNode::spawn(&config).await;
    let url = upstreams.content_url("changing");
    assert_eq!(publish(&node, &url).await.status(), 200);
    assert_eq!(wait_for_trailers(&node, &url).await, links(&["OLD"]));

    upstreams.server.reset().await;
    upstreams.content("changing", Some(IMDB)).await;
    upstreams.tmdb_match().await;
    upstreams.videos(&["NEW1", "NEW2"]).await;
    eventually("the refreshed trailers", || async {
        let now: Value = trailers_of(&node, &url).await.json().await.ok()?;
        (now == links(&["NEW1", "NEW2"])).then_some(())
    })
    .await;
    assert!(
        node.metric(r#"playstate_trailer_refreshes_total{outcome="refreshed"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_trailer_onboarded_through_one_node_is_served_by_every_node() {
    let (aws, upstreams) = (
        AwsFixture::new(&endpoint()).await,
        FakeUpstreams::start().await,
    );
    upstreams.content("arrival-2016", Some(IMDB)).await;
    upstreams.tmdb_match().await;
    upstreams.videos(&["KEY1"]).await;
    let mut env = aws.store_env();
    env.push(("PLAYSTATE_CLUSTER__SECRET", "trailer-test"));
    let id = |n: u64| vec!["--node-id".to_owned(), n.to_string()];
    // Only node 1 consumes the queue; the others have no TMDB token. All share one
    // users' store, as members must.
    // Snapshots every 10 entries, the log purged behind them: the node joining last must
    // be sent a snapshot, as the log no longer holds the entry.
    let snapshots = "[cluster]\nsnapshot_every = 10\n";
    let onboarding =
        TestNode::spawn_with(&node_config(&aws, &upstreams, snapshots), &id(1), &env).await;
    eventually("node 1 ready", || async {
        (onboarding.get("/ready").await.status() == 200).then_some(())
    })
    .await;
    let join = |n: u64| {
        let mut args = id(n);
        args.extend(["--join".to_owned(), onboarding.cluster_addr.clone()]);
        args
    };
    let reading = format!(
        "[trailers]\ncontent_url_prefix = \"{}\"\n",
        upstreams.prefix()
    );
    let reader = TestNode::spawn_with(&reading, &join(2), &env).await;
    let url = upstreams.content_url("arrival-2016");
    assert_eq!(publish(&onboarding, &url).await.status(), 200);
    assert_eq!(wait_for_trailers(&reader, &url).await, links(&["KEY1"]));
    // A node that joins afterwards gets the entry from the log (or a snapshot).
    // Enough entries after it for a snapshot, and for the log to be purged past it: the
    // same content onboarded again, 12 times (each commits the entry once more).
    let admin_status = || async {
        onboarding
            .client
            .get(format!(
                "http://{}/cluster/admin/status",
                onboarding.cluster_addr
            ))
            .bearer_auth("trailer-test")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let entry_index = admin_status().await["last_applied"].as_u64().unwrap();
    for _ in 0..12 {
        assert_eq!(publish(&onboarding, &url).await.status(), 200);
    }
    eventually("13 onboardings", || async {
        let done = onboarding
            .metric("playstate_trailer_messages_total{outcome=\"onboarded\"}")
            .await;
        (done >= 13.0).then_some(())
    })
    .await;
    eventually("the leader's log purged past the entry", || async {
        let purged = admin_status().await["log_purged_upto"].as_u64().unwrap();
        (purged >= entry_index).then_some(())
    })
    .await;
    let late = TestNode::spawn_with(&reading, &join(3), &env).await;
    assert_eq!(wait_for_trailers(&late, &url).await, links(&["KEY1"]));
    assert!(
        late.logs().contains("Raft::begin_receiving_snapshot"),
        "the late node was not sent a snapshot"
    );
    for node in [&reader, &late] {
        assert_eq!(node.metric("playstate_trailer_cache_entries").await, 1.0);
        assert!(
            node.metric("playstate_trailer_lookups_total{result=\"hit\"}")
                .await
                >= 1.0
        );
        assert_eq!(node.metric("playstate_store_reads_total").await, 0.0);
    }
    assert_eq!(upstreams.calls_to(&format!("/3/find/{IMDB}")).await, 13);
}
