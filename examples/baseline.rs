//! The ceiling for the heartbeat hot path: a bare actix-web server that does what a
//! heartbeat minimally must (decode the bearer token's `sub`, parse the JSON body, update
//! a concurrent map) and nothing else: no actors, no leases, no metrics, no logs.
//!
//! `cargo run --release --example baseline -- 127.0.0.1:8090`, then point the load test at
//! it exactly as at playstate. The gap between the two is what playstate's design costs.

use std::sync::Arc;

use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use serde::Deserialize;

type Slots = Arc<DashMap<String, Vec<(String, u64)>>>;

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1Body<'a> {
    stream_id: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeartbeatBody<'a> {
    user_id: &'a str,
    stream_id: &'a str,
    session_id: &'a str,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Take or renew `session` under the same limit-of-3 rule, in the map.
fn touch(slots: &Slots, user: &str, session: &str) -> bool {
    let now = now_ms();
    let mut held = slots.entry(user.to_owned()).or_default();
    held.retain(|(_, expires)| *expires > now);
    if let Some(slot) = held.iter_mut().find(|(s, _)| s == session) {
        slot.1 = now + 40_000;
        return true;
    }
    if held.len() >= 3 {
        return false;
    }
    held.push((session.to_owned(), now + 40_000));
    true
}

fn user_of(req: &HttpRequest) -> Option<String> {
    let token = req
        .headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let payload = token.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    Some(serde_json::from_slice::<Claims>(&json).ok()?.sub)
}

async fn v1_heartbeat(req: HttpRequest, body: Bytes, slots: web::Data<Slots>) -> HttpResponse {
    let Some(user) = user_of(&req) else {
        return HttpResponse::Unauthorized().finish();
    };
    let Ok(parsed) = serde_json::from_slice::<V1Body>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let session = req.match_info().query("sessionId");
    if touch(&slots, &user, session) {
        HttpResponse::Ok()
            .json(serde_json::json!({ "sessionId": session, "streamId": parsed.stream_id }))
    } else {
        HttpResponse::TooManyRequests().finish()
    }
}

async fn heartbeat(body: Bytes, slots: web::Data<Slots>) -> HttpResponse {
    let Ok(parsed) = serde_json::from_slice::<HeartbeatBody>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let pair = format!("{}:{}", parsed.stream_id, parsed.session_id);
    if touch(&slots, parsed.user_id, &pair) {
        HttpResponse::Ok().body("OK")
    } else {
        HttpResponse::BadRequest().body("limit")
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let slots: Slots = Arc::new(DashMap::new());
    println!("baseline listening on {addr}");
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(slots.clone()))
            .route("/v1/streams/{sessionId}", web::put().to(v1_heartbeat))
            .route("/heartbeat", web::post().to(heartbeat))
    })
    .bind(addr)?
    .run()
    .await
}
