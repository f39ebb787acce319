//! The OpenAPI document (docs/openapi.json): served at `GET /openapi.json` exactly as it is
//! in the repository, and true of the real binary: every operation it names reaches a
//! route, and every other method on its paths is refused with 405 naming the documented
//! ones in `Allow`. (That no route is missing from it is checked where the routes are
//! registered: src/api/openapi.rs.)

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use super::helpers::{TestNode, unsigned_token, user};

fn in_repository() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let text = std::fs::read_to_string(path).expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

#[tokio::test]
async fn the_document_is_served_as_openapi_3_1() {
    let node = TestNode::spawn("").await;
    let response = node.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert_eq!(content_type, "application/json");
    let served: Value = response.json().await.expect("JSON");
    let version = served["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi: {version:?}");
    assert_eq!(served, in_repository(), "served ≠ docs/openapi.json");
}

/// The methods a path can have that reqwest sends as plain requests.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];

#[tokio::test]
async fn every_documented_operation_reaches_a_route_and_other_methods_get_405() {
    let node = TestNode::spawn("").await;
    let token = format!("Bearer {}", unsigned_token(&user()));
    let document = in_repository();
    for (template, item) in document["paths"].as_object().expect("paths") {
        // Any one segment matches a `{param}`; invalid values are refused by the handler,
        // which is still the route answering.
        let path: String = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let documented: BTreeSet<&str> = METHODS
            .iter()
            .map(Method::as_str)
            .filter(|m| item.get(m.to_lowercase()).is_some())
            .collect();
        for method in METHODS {
            let response = node
                .client
                .request(method.clone(), node.url(&path))
                .header("authorization", &token)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let status = response.status().as_u16();
            let allow = response
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let body = response.text().await.unwrap_or_default();
            if documented.contains(method.as_str()) {
                let unrouted = status == 405 || (status == 404 && body.contains("no route for"));
                assert!(!unrouted, "{method} {template}: {status} {body}");
            } else {
                assert_eq!(status, 405, "{method} {template} is not documented: {body}");
                let allow =
                    allow.unwrap_or_else(|| panic!("{method} {template}: 405 without Allow"));
                let allowed: BTreeSet<&str> = allow.split(',').map(str::trim).collect();
                assert_eq!(allowed, documented, "Allow of {method} {template}");
            }
        }
    }
}
