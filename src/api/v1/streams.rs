//! `/v1/streams`: heartbeat-based stream slots of the authenticated user.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::slot_view::SlotView;
use crate::api::auth::Caller;
use crate::api::body::{self, Field};
use crate::api::error::{Failure, contract};
use crate::api::{AppState, params, route};
use crate::domain::{Origin, SessionId, StreamId};
use crate::users::StreamClaim;

type Result<T> = std::result::Result<T, Failure<contract::Problem>>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(route("/v1/streams").route(web::get().to(list)))
        .service(
            route("/v1/streams/{sessionId}")
                .route(web::put().to(heartbeat))
                .route(web::delete().to(end)),
        );
}

#[derive(Deserialize, Default)]
struct HeartbeatBody<'a> {
    #[serde(borrow, default, rename = "streamId")]
    stream_id: Field<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HeartbeatAccepted<'a> {
    session_id: &'a str,
    stream_id: &'a str,
    active_streams: usize,
    limit: u32,
    lease_expires_at: String,
}

fn session_in_path(req: &HttpRequest) -> Result<SessionId> {
    Ok(params::path_id(req, "sessionId")?)
}

async fn heartbeat(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: std::result::Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse> {
    let session = session_in_path(&req)?;
    let body = body::bytes(body, state.max_body_bytes)?;
    let parsed: HeartbeatBody = body::object(&body)?;
    let stream: StreamId = parsed.stream_id.id("streamId")?;
    let limit = state.users.limit_for(caller.plan.as_deref());
    let claim = StreamClaim {
        origin: Origin::V1,
        session: session.clone(),
        stream: stream.clone(),
        plan: caller.plan.as_deref(),
    };
    let accepted = state.users.heartbeat(&caller.user, claim).await?;
    Ok(HttpResponse::Ok().json(HeartbeatAccepted {
        session_id: session.as_str(),
        stream_id: stream.as_str(),
        active_streams: accepted.active,
        limit,
        lease_expires_at: accepted.expires_at.to_rfc3339(),
    }))
}

async fn end(state: web::Data<AppState>, caller: Caller, req: HttpRequest) -> Result<HttpResponse> {
    let session = session_in_path(&req)?;
    state
        .users
        .end_stream(&caller.user, Origin::V1, session)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse> {
    let slots = state.users.streams(&caller.user).await?;
    let views: Vec<SlotView> = slots.iter().map(SlotView::from).collect();
    Ok(HttpResponse::Ok().json(views))
}
