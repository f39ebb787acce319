//! Trailers: the Trailer Service's routes (seed 001) and the native `/v1/trailers`, both
//! answered from the trailer cache, plus the non-production publish utility.

use std::sync::Arc;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use aws_sdk_sqs::error::DisplayErrorContext;
use serde::{Deserialize, Serialize};

use super::body::{self, Field};
use super::error::{ApiError, Failure, FieldProblem, contract};
use super::{AppState, route};
use crate::domain::{ContentUrl, TrailerEntry};
use crate::trailers::TrailerCache;

/// What the trailer routes need.
pub struct TrailersApi {
    pub cache: Arc<dyn TrailerCache>,
    pub prefix: String,
    /// The new-content queue, for the publish utility.
    pub publisher: Option<(aws_sdk_sqs::Client, String)>,
}

pub fn routes(cfg: &mut web::ServiceConfig, publish: bool) {
    cfg.service(route("/api/v1/health").route(web::get().to(health)))
        .service(route("/api/v1/trailer/").route(web::get().to(trailer_links)))
        .service(route("/api/v1/trailer").route(web::get().to(trailer_links)))
        .service(route("/v1/trailers").route(web::get().to(trailers_v1)));
    if publish {
        cfg.service(
            route("/non-production/utils/publish").route(web::post().to(publish_new_content)),
        );
    }
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "timestamp": state.clock.now().to_rfc3339(),
    }))
}

/// The cached entry for the `url` query parameter, with trailers in it.
fn lookup(state: &AppState, req: &HttpRequest) -> Result<Arc<TrailerEntry>, ApiError> {
    let metrics = &state.metrics;
    let query = super::params::query_text(req, "url")?;
    let raw = query
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or(ApiError::field("url", FieldProblem::Missing))?;
    let Some(url) = ContentUrl::parse(raw, &state.trailers.prefix) else {
        metrics.trailer_lookups("invalid").inc();
        return Err(ApiError::field("url", FieldProblem::Invalid));
    };
    match state.trailers.cache.get(&url.key()) {
        Some(entry) if !entry.trailers.is_empty() => {
            metrics.trailer_lookups("hit").inc();
            Ok(entry)
        }
        _ => {
            metrics.trailer_lookups("miss").inc();
            Err(ApiError::NotFound("No trailers found".into()))
        }
    }
}

async fn trailer_links(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Failure<contract::Trailers>> {
    let entry = lookup(&state, &req)?;
    Ok(HttpResponse::Ok().json(&entry.trailers))
}

async fn trailers_v1(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Failure<contract::Problem>> {
    let entry = lookup(&state, &req)?;
    Ok(HttpResponse::Ok().json(&*entry))
}

#[derive(Deserialize, Default)]
struct PublishBody<'a> {
    #[serde(borrow, default)]
    url: Field<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Published {
    message: &'static str,
    message_id: String,
}

/// Puts a new-content message on the queue, as the content service would.
async fn publish_new_content(
    state: web::Data<AppState>,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, Failure<contract::TrailerPublish>> {
    let body = body::bytes(body, state.max_body_bytes)?;
    let parsed: PublishBody = body::object(&body)?;
    let url = parsed.url.text("url")?;
    let Some((sqs, queue_url)) = &state.trailers.publisher else {
        return Err(ApiError::Unavailable("no new-content queue is configured".into()).into());
    };
    let message = serde_json::json!({ "url": url }).to_string();
    let sent = sqs
        .send_message()
        .queue_url(queue_url)
        .message_body(message)
        .send()
        .await
        .map_err(|e| ApiError::Unavailable(DisplayErrorContext(e).to_string()))?;
    Ok(HttpResponse::Ok().json(Published {
        message: "Content published successfully.",
        message_id: sent.message_id.unwrap_or_default(),
    }))
}
