//! The heartbeat service (seed 003): `POST /heartbeat` every 20 s per (stream, session).

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::api::body::{self, Field};
use crate::api::error::{Failure, contract};
use crate::api::{AppState, middleware, route};
use crate::domain::{Origin, UserId};
use crate::users::StreamClaim;

type Result<T> = std::result::Result<T, Failure<contract::Heartbeat>>;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(route("/heartbeat").route(web::post().to(heartbeat)));
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct HeartbeatBody<'a> {
    #[serde(borrow, default)]
    user_id: Field<'a>,
    #[serde(borrow, default)]
    stream_id: Field<'a>,
    #[serde(borrow, default)]
    session_id: Field<'a>,
}

async fn heartbeat(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: std::result::Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse> {
    let body = body::bytes(body, state.max_body_bytes)?;
    let parsed: HeartbeatBody = body::object(&body)?;
    // Checked in this order: the contract names the first bad field.
    let user: UserId = parsed.user_id.id("userId")?;
    middleware::note_user(&req, &user);
    let claim = StreamClaim {
        origin: Origin::Heartbeat,
        stream: parsed.stream_id.id("streamId")?,
        session: parsed.session_id.id("sessionId")?,
        plan: state.trusted_plan(&req),
    };
    state.users.heartbeat(&user, claim).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("OK"))
}
