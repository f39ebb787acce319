//! Operational endpoints: health, readiness, metrics, and the dev-only clock.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::body;
use super::error::{ApiError, Failure, FieldProblem, contract};
use super::{AppState, route};
use crate::domain::Millis;
use crate::error_chain::DisplayChain;

type Result<T> = std::result::Result<T, Failure<contract::Problem>>;

pub fn routes(cfg: &mut web::ServiceConfig, dev_endpoints: bool) {
    cfg.service(route("/health").route(web::get().to(health)))
        .service(route("/ready").route(web::get().to(ready)))
        .service(route("/metrics").route(web::get().to(metrics)));
    if dev_endpoints {
        cfg.service(route("/dev/clock/advance").route(web::post().to(advance_clock)));
    }
}

/// Streamy's health contract, kept as the node's liveness probe.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "OK" }))
}

/// 200 only when this node can serve player traffic: it is a member of a cluster with a
/// known leader, caught up with what was committed when it joined, and its store answers.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if let Err(reason) = state.cluster.readiness() {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "unavailable", "reason": reason.to_string() }));
    }
    let check = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.check()).await;
    match check {
        Ok(Ok(())) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Ok(Err(e)) => HttpResponse::ServiceUnavailable().json(
            serde_json::json!({ "status": "unavailable", "reason": DisplayChain(&e).to_string() }),
        ),
        Err(_) => HttpResponse::ServiceUnavailable().json(
            serde_json::json!({ "status": "unavailable", "reason": "store check timed out" }),
        ),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

#[derive(Deserialize, Default)]
struct AdvanceBy {
    millis: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Now {
    now: String,
}

/// Moves the manual clock (`dev.manual_clock = true` only).
async fn advance_clock(
    state: web::Data<AppState>,
    _req: HttpRequest,
    body: std::result::Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse> {
    let body = body::bytes(body, state.max_body_bytes)?;
    let parsed: AdvanceBy = body::object(&body)?;
    let millis = match parsed.millis {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .ok_or(ApiError::field("millis", FieldProblem::NotInteger))?,
        Some(_) => return Err(ApiError::field("millis", FieldProblem::NotInteger).into()),
        None => return Err(ApiError::field("millis", FieldProblem::Missing).into()),
    };
    let now = state
        .clock
        .advance(Millis(millis))
        .ok_or_else(|| ApiError::NotFound("the clock of this node is not manual".into()))?;
    Ok(HttpResponse::Ok().json(Now {
        now: now.to_rfc3339(),
    }))
}

/// Anything no route matched.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::NotFound(format!("no route for {} {}", req.method(), req.path()))
        .render(super::error::Dialect::Problem)
}
